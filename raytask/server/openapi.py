"""The OpenAPI 3.1 document of an app's routes (``GET /openapi.json`` and ``/docs.json``).

It declares every route, parameter (with its pattern or range), header, status code and
body that the routes send, so a client generator or a fuzzer can trust it; the fuzz tier
(``tests/http/test_fuzz.py``) fails when a route answers something undeclared. The status
answer's schema is generated from :class:`~raytask.core.state.TaskState`, the error body's
from :class:`ErrorBody` and the submit options' from
:class:`~raytask.core.config.SubmitOptions`, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..core.config import AppConfig, SubmitOptions
from ..core.endpoint import MAX_BATCH, Endpoint
from ..core.errors import (
    EndpointNotFoundError,
    HeadersTooLargeError,
    HTTPError,
    InvalidInputError,
    MalformedRequestError,
    OriginRefusedError,
    PayloadTooLargeError,
    QueueFullError,
    ServiceUnavailableError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotFoundError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    URLTooLongError,
)
from ..core.state import TASK_ID_PATTERN, TaskState
from ..core.status import TaskStatus
from .auth import PUBLIC_ROUTES
from .bodies import (
    CancelManyAnswer,
    CancelManyRequest,
    StatusManyAnswer,
    StatusManyRequest,
    SubmitManyAnswer,
    TaskPage,
)
from .guard import STATE_CHANGING

_REF = "#/components/schemas/{model}"
RESULT_MEDIA_TYPES = ("application/json", "text/plain", "application/octet-stream", "image/png")


class ErrorBody(BaseModel):
    """The JSON body of every error answer."""

    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="What went wrong, for programs (e.g. task_not_found).")
    detail: Any = Field(None, description="More detail, e.g. pydantic's validation errors.")


def _schemas(*schemas: dict[str, Any]) -> dict[str, Any]:
    """Component schemas by title, with the models' nested ``$defs`` hoisted beside them."""
    components: dict[str, Any] = {}
    for schema in schemas:
        components.update(schema.pop("$defs", {}))
        components[schema["title"]] = schema
    return components


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "required": True,
    }
}

# Every error answer, by status code: what it means here, and its headers.
_ERRORS: dict[type[HTTPError], str] = {
    MalformedRequestError: "the body is not JSON or nests too deep, or a task id is missing or "
    "malformed; for get, the task is not completed yet",
    TaskNotFoundError: "no task has this id",
    TaskConflictError: "the task's state does not allow this (cancelled, finished, not finished)",
    TaskExpiredError: "the task's result outlived its TTL",
    PayloadTooLargeError: "the body is larger than max_request_bytes",
    URLTooLongError: "the path and query are longer than max_url_bytes",
    InvalidInputError: "the input or the options failed validation (detail lists why)",
    QueueFullError: "max_queue_size tasks are pending",
    HeadersTooLargeError: "the headers exceed max_header_bytes or max_headers",
    TaskFailedError: "the task or the call failed (the error says why)",
    ServiceUnavailableError: "the task manager cannot be reached now",
    EndpointNotFoundError: "no such route or endpoint",
    UnauthorizedError: "no API token, or not one of the app's (Authorization: Bearer <token>)",
    OriginRefusedError: "a state change from a web page of another origin, not listed in "
    "cors_allow_origins",
    UnsupportedMediaTypeError: "a body that is not Content-Type: application/json",
}


def _error(cls: type[HTTPError]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _ERRORS[cls], "content": _json("ErrorBody")}
    if cls in (QueueFullError, ServiceUnavailableError):
        response["headers"] = _RETRY_AFTER
    return response


def _responses(ok: dict[str, Any], *errors: type[HTTPError]) -> dict[str, Any]:
    # Every route checks the URL and header limits; every task route may find the
    # manager unreachable (503).
    common = (URLTooLongError, HeadersTooLargeError)
    responses = {"200": ok}
    for cls in (*errors, *common):
        responses[str(cls.status_code)] = _error(cls)
    return dict(sorted(responses.items()))


def _query(name: str, schema: dict[str, Any], description: str, required: bool) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _option_parameters(config: AppConfig) -> list[dict[str, Any]]:
    """The per-submit options as query parameters, with their ranges (the app's caps
    included)."""
    parameters = []
    for name, schema in SubmitOptions.model_json_schema()["properties"].items():
        value = next(s for s in schema["anyOf"] if s.get("type") != "null")
        if name == "ttl_s":
            value = {**value, "maximum": min(value["maximum"], config.max_ttl_s)}
        parameters.append(_query(name, value, schema["description"], required=False))
    return parameters


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-255 visible ASCII characters: a later submit to this endpoint with the "
    "same key and input answers the same task and queues nothing (until it expires); the "
    "same key with another input is 409.",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
}


def _list_parameters() -> list[dict[str, Any]]:
    statuses = sorted(s.value for s in TaskStatus)
    return [
        _query(
            "status",
            {"type": "array", "items": {"type": "string", "enum": statuses}},
            "Only tasks in these states (repeat it, or separate states with commas).",
            required=False,
        ),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 100},
            "Most tasks in the page.",
            required=False,
        ),
        _query(
            "cursor",
            {"type": "string", "pattern": "^[0-9]{1,19}$"},
            "The next_cursor of the page before.",
            required=False,
        ),
    ]


def _model_body(ref: str, description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": _json(ref)}


def _task_links(name: str) -> dict[str, Any]:
    task_id = {"task_id": "$response.body#/task_id"}
    return {
        verb: {"operationId": operation, "parameters": task_id}
        for verb, operation in (
            ("status", f"status_{name}"),
            ("get", f"get_{name}"),
            ("cancel", f"cancel_{name}_post"),
            ("retry", f"retry_{name}_put"),
        )
    }


def _result_content(output: dict[str, Any]) -> dict[str, Any]:
    if not output:  # no return annotation: any kind of body may come back
        return {media: {"schema": {}} for media in RESULT_MEDIA_TYPES}
    media = output.get("contentMediaType") or (
        "text/plain" if output.get("type") == "string" else "application/json"
    )
    return {media: {"schema": output}}


def openapi_document(
    endpoints: list[Endpoint],
    prefix: str = "",
    config: AppConfig | None = None,
    secured: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app's routes; ``secured``: the app requires API
    tokens (the routes know it from the tokens they loaded once)."""
    config = config or AppConfig()
    task_id = [
        _query(
            "task_id",
            {"type": "string", "pattern": TASK_ID_PATTERN},
            "The task's id (32 lowercase hex digits).",
            required=True,
        )
    ]
    waiting = [
        *task_id,
        _query(
            "wait_s",
            {"type": "number", "minimum": 0, "maximum": 60},
            "Long-poll: hold the request until the task has finished or this many seconds "
            "have passed, then answer as without it.",
            required=False,
        ),
    ]
    task_state = {"description": "the task's state", "content": _json("TaskState")}
    any_result = {
        "description": "the task's result, as the synchronous call would answer it (task ids "
        "are not tied to an endpoint, so any endpoint's result may come back)",
        "content": _result_content({}),
    }
    paths: dict[str, Any] = {}
    # Nested models of inputs and results live beside TaskState, where their refs point.
    nested: dict[str, Any] = {}
    for e in endpoints:
        input_schema = e.input_schema(ref_template=_REF)
        output_schema = e.output_schema(ref_template=_REF)
        for schema in (input_schema, output_schema):
            nested.update(schema.pop("$defs", {}))
        body = {
            # An empty body means no arguments: it is a valid request when none is required.
            "required": bool(input_schema.get("required")),
            "description": f"the arguments of {e.name}, as a JSON object (at most "
            f"{config.max_request_bytes} bytes; an empty body means no arguments)",
            "content": {"application/json": {"schema": input_schema}},
        }
        result = {"description": "the result", "content": _result_content(output_schema)}
        base = f"{prefix}/{e.name}"
        body_errors = (MalformedRequestError, PayloadTooLargeError, InvalidInputError)
        paths[base] = {
            "post": {
                "summary": f"call {e.name} and wait for its result",
                "operationId": f"call_{e.name}",
                "requestBody": body,
                "responses": _responses(
                    result, *body_errors, TaskFailedError, ServiceUnavailableError
                ),
            }
        }
        if not e.is_task:
            continue
        # What a client can do next with the id in the answer (OpenAPI links).
        queued = task_state | {"links": _task_links(e.name)}
        paths[f"{base}/submit"] = {
            "post": {
                "summary": f"queue a {e.name} task",
                "operationId": f"submit_{e.name}",
                "parameters": [*_option_parameters(config), _IDEMPOTENCY_KEY],
                "requestBody": body,
                "responses": _responses(
                    queued,
                    *body_errors,
                    TaskConflictError,
                    QueueFullError,
                    ServiceUnavailableError,
                ),
            }
        }
        paths[f"{base}/submit_many"] = {
            "post": {
                "summary": f"queue one {e.name} task per input, all or none",
                "operationId": f"submit_many_{e.name}",
                "parameters": _option_parameters(config),
                "requestBody": {
                    "required": True,
                    "description": f"a JSON array of at most {MAX_BATCH} argument objects",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "items": input_schema,
                                "maxItems": MAX_BATCH,
                            }
                        }
                    },
                },
                "responses": _responses(
                    {
                        "description": "the new tasks, in order",
                        "content": _json("SubmitManyAnswer"),
                    },
                    *body_errors,
                    QueueFullError,
                    ServiceUnavailableError,
                ),
            }
        }
        paths[f"{base}/tasks"] = {
            "get": {
                "summary": f"list {e.name} tasks, newest first",
                "operationId": f"list_{e.name}",
                "parameters": _list_parameters(),
                "responses": _responses(
                    {"description": "a page of tasks", "content": _json("TaskPage")},
                    InvalidInputError,
                    ServiceUnavailableError,
                ),
            }
        }
        paths[f"{base}/cancel_many"] = {
            "post": {
                "summary": f"cancel several {e.name} tasks, or purge its queue",
                "operationId": f"cancel_many_{e.name}",
                "requestBody": _model_body("CancelManyRequest", "task ids, or a status"),
                "responses": _responses(
                    {
                        "description": "how many were cancelled",
                        "content": _json("CancelManyAnswer"),
                    },
                    MalformedRequestError,
                    PayloadTooLargeError,
                    InvalidInputError,
                    ServiceUnavailableError,
                ),
            }
        }
        id_errors = (MalformedRequestError, TaskNotFoundError, ServiceUnavailableError)
        paths[f"{base}/status"] = {
            "get": {
                "summary": "a task's state (wait_s: once it has finished)",
                "operationId": f"status_{e.name}",
                "parameters": waiting,
                "responses": _responses(
                    task_state, *id_errors, TaskExpiredError, InvalidInputError
                ),
            }
        }
        paths[f"{base}/get"] = {
            "get": {
                "summary": "a task's result",
                "operationId": f"get_{e.name}",
                "parameters": waiting,
                "responses": _responses(
                    any_result,
                    *id_errors,
                    TaskConflictError,
                    TaskExpiredError,
                    TaskFailedError,
                    InvalidInputError,
                ),
            }
        }
        for verb, errors in (
            ("cancel", (TaskConflictError,)),
            ("retry", (TaskConflictError, TaskExpiredError, QueueFullError)),
        ):
            paths[f"{base}/{verb}"] = {
                method: {
                    "summary": f"{verb} a task",
                    "operationId": f"{verb}_{e.name}_{method}",
                    "parameters": task_id,
                    "responses": _responses(
                        queued if verb == "retry" else task_state, *id_errors, *errors
                    ),
                }
                for method in ("post", "put")
            }
    paths.update(_service_paths(prefix))
    paths[f"{prefix}/tasks"] = {
        "get": {
            "summary": "list every endpoint's tasks, newest first",
            "operationId": "list_tasks",
            "parameters": [
                _query(
                    "endpoint",
                    {"type": "string", "enum": [e.name for e in endpoints if e.is_task]},
                    "Only this endpoint's tasks.",
                    required=False,
                ),
                *_list_parameters(),
            ],
            "responses": _responses(
                {"description": "a page of tasks", "content": _json("TaskPage")},
                EndpointNotFoundError,
                InvalidInputError,
                ServiceUnavailableError,
            ),
        }
    }
    paths[f"{prefix}/status_many"] = {
        "post": {
            "summary": "the status of several tasks, in order",
            "operationId": "status_many",
            "requestBody": _model_body("StatusManyRequest", f"at most {MAX_BATCH} task ids"),
            "responses": _responses(
                {"description": "one entry per id", "content": _json("StatusManyAnswer")},
                MalformedRequestError,
                PayloadTooLargeError,
                InvalidInputError,
                ServiceUnavailableError,
            ),
        }
    }
    _guard_state_changes(paths)
    if secured:
        _require_tokens(paths, prefix)
    return {
        "openapi": "3.1.0",
        "info": {"title": "raytask", "version": "1"},
        "paths": paths,
        "components": {
            **(
                {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
                if secured
                else {}
            ),
            "schemas": nested
            | _schemas(
                ErrorBody.model_json_schema(ref_template=_REF),
                TaskState.model_json_schema(mode="serialization", ref_template=_REF),
                *(
                    model.model_json_schema(mode=mode, ref_template=_REF)
                    for model, mode in (
                        (SubmitManyAnswer, "serialization"),
                        (StatusManyAnswer, "serialization"),
                        (TaskPage, "serialization"),
                        (CancelManyAnswer, "serialization"),
                        (StatusManyRequest, "validation"),
                        (CancelManyRequest, "validation"),
                    )
                ),
            ),
        },
    }


def _guard_state_changes(paths: dict[str, Any]) -> None:
    """Every POST and PUT may answer 403 (a foreign Origin) and 415 (a body that is not
    JSON): see :mod:`raytask.server.guard`."""
    for operations in paths.values():
        for method, operation in operations.items():
            if method.upper() in STATE_CHANGING:
                for cls in (OriginRefusedError, UnsupportedMediaTypeError):
                    operation["responses"][str(cls.status_code)] = _error(cls)
                operation["responses"] = dict(sorted(operation["responses"].items()))


def _require_tokens(paths: dict[str, Any], prefix: str) -> None:
    """Every route but the public ones needs a bearer token and may answer 401."""
    public = {f"{prefix}/{name}" for name in PUBLIC_ROUTES} | {f"{prefix}/dashboard/{{asset}}"}
    for path, operations in paths.items():
        if path in public:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation["responses"]["401"] = _error(UnauthorizedError)
            operation["responses"] = dict(sorted(operation["responses"].items()))


def _service_paths(prefix: str) -> dict[str, Any]:
    def get(summary: str, ok: dict[str, Any], *errors: type[HTTPError]) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": _responses(ok, *errors)}}

    def json_ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": schema or {"type": "object"}}},
        }

    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    text = {"description": "Prometheus text format", "content": {"text/plain": {"schema": {}}}}
    unavailable = ServiceUnavailableError
    index = {
        "description": "the app's endpoints and links (HTML when the client accepts it)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/html": {"schema": {}},
        },
    }
    return {
        f"{prefix}/": get("this app's endpoints and where to read more", index),
        f"{prefix}/schema.json": get("the routes, as BentoML's client reads them", json_ok("")),
        f"{prefix}/openapi.json": get("this document", json_ok("OpenAPI 3.1")),
        f"{prefix}/docs.json": get("this document", json_ok("OpenAPI 3.1")),
        f"{prefix}/readyz": get("ready to take tasks", json_ok("ready", status), unavailable),
        f"{prefix}/livez": get("the ingress is up", json_ok("alive", status)),
        f"{prefix}/healthz": get("the ingress is up", json_ok("alive", status)),
        f"{prefix}/queue": get("counts per endpoint and deployment", json_ok(""), unavailable),
        f"{prefix}/metrics": get("the queue's metrics", text, unavailable),
        f"{prefix}/dashboard": get(
            "the live task dashboard (a web page; its data routes need the token)",
            {"description": "the page", "content": {"text/html": {"schema": {}}}},
        ),
        f"{prefix}/dashboard/{{asset}}": {
            "get": {
                "summary": "a file of the dashboard page",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["app.js", "style.css"]},
                    }
                ],
                "responses": _responses(
                    {
                        "description": "the file",
                        "content": {"text/javascript": {"schema": {}}, "text/css": {"schema": {}}},
                    },
                    EndpointNotFoundError,
                ),
            }
        },
    }
