"""The OpenAPI 3.1 document of an app's routes (``GET /openapi.json`` and ``/docs.json``).

It is made from the wire's one declaration (:mod:`raytask.core.wire`): every operation,
parameter (with its pattern or range), header, status code and body that the routes send,
so a client generator or a fuzzer can trust it; the fuzz tier (``tests/http/test_fuzz.py``)
fails when a route answers something undeclared. The schemas are generated from the models
(:class:`~raytask.core.state.TaskState`, :class:`ErrorBody`, the bodies of
:mod:`raytask.core.bodies`, :class:`~raytask.core.config.SubmitOptions`), so the document
cannot drift from the code.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel, Field

from ..core import errors as e
from ..core.config import AppConfig, SubmitOptions
from ..core.endpoint import MAX_BATCH, Endpoint
from ..core.errors import HTTPError
from ..core.wire import (
    APP_OPERATIONS,
    CALL,
    ENDPOINT,
    EVENTS,
    INPUTS,
    OPTIONS,
    RESULT,
    TASK_OPERATIONS,
    Operation,
    Param,
)
from .auth import PUBLIC_ROUTES
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
    e.MalformedRequestError: "the body is not JSON or nests too deep, or a task id is missing or "
    "malformed; for get, the task is not completed yet",
    e.TaskNotFoundError: "no task has this id",
    e.TaskConflictError: "the task's state does not allow this (cancelled, finished, not finished)",
    e.TaskExpiredError: "the task's result outlived its TTL",
    e.PayloadTooLargeError: "the body is larger than max_request_bytes",
    e.URLTooLongError: "the path and query are longer than max_url_bytes",
    e.InvalidInputError: "the input or the options failed validation (detail lists why)",
    e.QueueFullError: "max_queue_size tasks are pending, or the tenant's max_pending "
    "(code tenant_queue_full) or submits_per_s (code rate_limited) is used up",
    e.HeadersTooLargeError: "the headers exceed max_header_bytes or max_headers",
    e.TaskFailedError: "the task or the call failed (the error says why)",
    e.ServiceUnavailableError: "the task manager cannot be reached now",
    e.EndpointNotFoundError: "no such route or endpoint",
    e.UnauthorizedError: "no API token, or not one of the app's (Authorization: Bearer <token>)",
    e.OriginRefusedError: "a state change from a web page of another origin, not listed in "
    "cors_allow_origins",
    e.ForbiddenError: "with token_isolation, another tenant's usage (admin_tokens only)",
    e.UnsupportedMediaTypeError: "a body that is not Content-Type: application/json",
}


def _error(cls: type[HTTPError]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _ERRORS[cls], "content": _json("ErrorBody")}
    if cls in (e.QueueFullError, e.ServiceUnavailableError):
        response["headers"] = _RETRY_AFTER
    return response


def _responses(ok: dict[str, Any], *errors: type[HTTPError]) -> dict[str, Any]:
    # Every route checks the URL and header limits.
    responses = {"200": ok}
    for cls in (*errors, e.URLTooLongError, e.HeadersTooLargeError):
        responses[str(cls.status_code)] = _error(cls)
    return dict(sorted(responses.items()))


def _option_parameters(config: AppConfig) -> list[dict[str, Any]]:
    """The per-submit options as query parameters, with their ranges (the app's caps
    included)."""
    parameters = []
    for name, schema in SubmitOptions.model_json_schema()["properties"].items():
        value = next(s for s in schema["anyOf"] if s.get("type") != "null")
        if name == "ttl_s":
            value = {**value, "maximum": min(value["maximum"], config.max_ttl_s)}
        parameters.append(Param(name, value, schema["description"]).openapi())
    return parameters


def _task_links(name: str) -> dict[str, Any]:
    """What a client can do next with the id in a submit's answer (OpenAPI links)."""
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


class _Builder:
    """The document's paths, one operation at a time."""

    def __init__(self, config: AppConfig, prefix: str, task_endpoints: list[str]) -> None:
        self.config, self.prefix = config, prefix
        self.task_endpoints = task_endpoints
        self.nested: dict[str, Any] = {}  # nested models of inputs and results
        self.paths: dict[str, Any] = {}

    def _params(self, op: Operation) -> list[dict[str, Any]]:
        params: list[dict[str, Any]] = []
        for param in op.params:
            if param == OPTIONS:
                params += _option_parameters(self.config)
            elif param is ENDPOINT:
                enum = {"type": "string", "enum": self.task_endpoints}
                params.append(Param(ENDPOINT.name, enum, ENDPOINT.description).openapi())
            else:
                assert isinstance(param, Param)
                params.append(param.openapi())
        return params

    def _body(self, op: Operation, endpoint: Endpoint | None) -> dict[str, Any] | None:
        if op.body is None:
            return None
        if isinstance(op.body, type):
            return {"required": True, "description": op.summary, "content": _json(op.body.__name__)}
        assert endpoint is not None
        schema = endpoint.input_schema(ref_template=_REF)
        self.nested.update(schema.pop("$defs", {}))
        if op.body == INPUTS:
            return {
                "required": True,
                "description": f"a JSON array of at most {MAX_BATCH} argument objects",
                "content": {
                    "application/json": {
                        "schema": {"type": "array", "items": schema, "maxItems": MAX_BATCH}
                    }
                },
            }
        return {
            # An empty body means no arguments: it is a valid request when none is required.
            "required": bool(schema.get("required")),
            "description": f"the arguments of {endpoint.name}, as a JSON object (at most "
            f"{self.config.max_request_bytes} bytes; an empty body means no arguments)",
            "content": {"application/json": {"schema": schema}},
        }

    def _answer(self, op: Operation, endpoint: Endpoint | None) -> dict[str, Any]:
        if op.answer == EVENTS:
            return {
                "description": "events: `output` (id: the chunk's index, data: the chunk as "
                'JSON), `reset` (data: {"attempt": n}) when a lost attempt runs again, '
                "then one `done` (data: the final status answer); `: ping` while idle",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        if op.answer == RESULT:
            if op is CALL and endpoint is not None:
                output = endpoint.output_schema(ref_template=_REF)
                self.nested.update(output.pop("$defs", {}))
                content = _result_content(output)
                if endpoint.streams:  # Accept: text/event-stream: the chunks as they come
                    content["text/event-stream"] = {"schema": {"type": "string"}}
                return {"description": "the result", "content": content}
            return {
                "description": "the task's result, as the synchronous call would answer it",
                "content": _result_content({}),
            }
        assert isinstance(op.answer, type)
        answer = {"description": op.answer.__doc__ or "", "content": _json(op.answer.__name__)}
        if op.name in ("submit", "retry") and endpoint is not None:
            answer["links"] = _task_links(endpoint.name)
        return answer

    def add(self, op: Operation, endpoint: Endpoint | None = None) -> None:
        name = endpoint.name if endpoint else None
        operation: dict[str, Any] = {
            "summary": op.summary + (f" ({name})" if name else ""),
            "tags": [name or "tasks"],  # /docs groups the routes by them
            "responses": _responses(self._answer(op, endpoint), *op.errors),
        }
        doc = endpoint and inspect.getdoc(endpoint.func)
        if doc and op.name in ("call", "submit"):
            operation["description"] = doc
        params = self._params(op)
        if params:
            operation["parameters"] = params
        body = self._body(op, endpoint)
        if body is not None:
            operation["requestBody"] = body
        base_id = f"{op.name}_{name}" if name else op.name
        path = self.paths.setdefault(op.path_for(name, self.prefix), {})
        for method in op.methods:
            one = len(op.methods) == 1
            path[method.lower()] = {
                **operation,
                "operationId": base_id if one else f"{base_id}_{method.lower()}",
            }


def openapi_document(
    endpoints: list[Endpoint],
    prefix: str = "",
    config: AppConfig | None = None,
    secured: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app's routes; ``secured``: the app requires API
    tokens (the routes know it from the tokens they loaded once)."""
    config = config or AppConfig()
    builder = _Builder(config, prefix, [e.name for e in endpoints if e.is_task])
    for endpoint in endpoints:
        builder.add(CALL, endpoint)
        if endpoint.is_task:
            for op in TASK_OPERATIONS:
                builder.add(op, endpoint)
    for op in APP_OPERATIONS:
        builder.add(op)
    paths = builder.paths | _service_paths(prefix)
    _guard_state_changes(paths)
    if secured:
        _require_tokens(paths, prefix)
    models = {op.body for op in APP_OPERATIONS + TASK_OPERATIONS if isinstance(op.body, type)}
    answers = {op.answer for op in APP_OPERATIONS + TASK_OPERATIONS if isinstance(op.answer, type)}
    schemas = [ErrorBody.model_json_schema(ref_template=_REF)]
    schemas += [m.model_json_schema(mode="serialization", ref_template=_REF) for m in answers]
    schemas += [m.model_json_schema(mode="validation", ref_template=_REF) for m in models]
    security = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "raytask", "version": "1"},
        "paths": paths,
        "components": {
            **(security if secured else {}),
            "schemas": builder.nested | _schemas(*schemas),
        },
    }


def _guard_state_changes(paths: dict[str, Any]) -> None:
    """Every POST and PUT may answer 403 (a foreign Origin) and 415 (a body that is not
    JSON): see :mod:`raytask.server.guard`."""
    for operations in paths.values():
        for method, operation in operations.items():
            if method.upper() in STATE_CHANGING:
                responses = dict(operation["responses"])
                for cls in (e.OriginRefusedError, e.UnsupportedMediaTypeError):
                    responses[str(cls.status_code)] = _error(cls)
                operation["responses"] = dict(sorted(responses.items()))


def _require_tokens(paths: dict[str, Any], prefix: str) -> None:
    """Every route but the public ones needs a bearer token and may answer 401."""
    public = {f"{prefix}/{name}" for name in PUBLIC_ROUTES} | {f"{prefix}/dashboard/{{asset}}"}
    for path, operations in paths.items():
        if path in public:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            responses = {**operation["responses"], "401": _error(e.UnauthorizedError)}
            operation["responses"] = dict(sorted(responses.items()))


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
    unavailable = e.ServiceUnavailableError
    index = {
        "description": "the app's endpoints and links (HTML when the client accepts it)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/html": {"schema": {}},
        },
    }
    asset = {"type": "string", "enum": ["app.js", "style.css"]}
    return {
        f"{prefix}/": get("this app's endpoints and where to read more", index),
        f"{prefix}/schema.json": get("the routes, as BentoML's client reads them", json_ok("")),
        f"{prefix}/openapi.json": get("this document", json_ok("OpenAPI 3.1")),
        f"{prefix}/docs.json": get("this document", json_ok("OpenAPI 3.1")),
        f"{prefix}/docs": get(
            "this API as a web page", {"description": "the page", "content": {"text/html": {}}}
        ),
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
                "parameters": [{"name": "asset", "in": "path", "required": True, "schema": asset}],
                "responses": _responses(
                    {
                        "description": "the file",
                        "content": {"text/javascript": {"schema": {}}, "text/css": {"schema": {}}},
                    },
                    e.EndpointNotFoundError,
                ),
            }
        },
    }
