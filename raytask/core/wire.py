"""The HTTP wire of a raytask app, declared once (SPEC §2 and §7).

Each :class:`Operation` is one route: its path, methods, query parameters and headers
(with their bounds), body, answer, the errors it may send, and the backend command it
runs. Everything else is made from this table or checked against it:

- the Starlette routes (:meth:`raytask.server.routes.Routes.asgi_app` mounts one route per
  operation, by its ``handler``);
- the OpenAPI document (:mod:`raytask.server.openapi` walks the table);
- ``/schema.json`` (each endpoint's ``route``, the prefix of its operations);
- the sans-I/O client protocol (:mod:`raytask.client.protocol` builds requests from the
  operations' paths, methods and parameter names);
- the backend interface (:class:`raytask.server.backend.Backend` has one method per
  ``command``, with the task service's own signature).

``tests/unit/test_wire.py`` fails when any of them drifts from the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .bodies import (
    CancelManyAnswer,
    CancelManyRequest,
    DeleteManyAnswer,
    DeleteManyRequest,
    StatusManyAnswer,
    StatusManyRequest,
    SubmitManyAnswer,
    TaskPage,
    UsageAnswer,
)
from .endpoint import MAX_BATCH
from .errors import (
    EndpointNotFoundError,
    ForbiddenError,
    HTTPError,
    InvalidInputError,
    MalformedRequestError,
    PayloadTooLargeError,
    QueueFullError,
    ServiceUnavailableError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotFoundError,
)
from .state import ANY_CASE_TASK_ID_PATTERN, TaskState
from .status import TaskStatus

MAX_WAIT_S = 60.0
"""The longest a long-poll (``wait_s``) holds a request."""

DEFAULT_LIST_LIMIT = 100
"""Tasks in a listing page when ``limit`` is not given."""

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
"""1-255 visible ASCII characters."""

DIGITS = re.compile(r"[0-9]{1,19}")
"""An integer parameter (a cursor, a limit): ASCII digits only (``str.isdigit`` takes
``²`` and ``٣`` too, which ``int`` then refuses)."""


@dataclass(frozen=True)
class Param:
    """A query parameter or header of an operation, with its JSON schema."""

    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False
    where: str = "query"

    def openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required,
            "description": self.description,
            "schema": self.schema,
        }


TASK_ID = Param(
    "task_id",
    {"type": "string", "pattern": ANY_CASE_TASK_ID_PATTERN},
    "The task's id (32 hex digits, in any letter case).",
    required=True,
)
WAIT_S = Param(
    "wait_s",
    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
    "Long-poll: hold the request until the task has finished or this many seconds have "
    "passed, then answer as without it.",
)
STATUS = Param(
    "status",
    {"type": "array", "items": {"type": "string", "enum": sorted(s.value for s in TaskStatus)}},
    "Only tasks in these states (repeat it, or separate states with commas).",
)
LIMIT = Param(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": DEFAULT_LIST_LIMIT},
    "Most tasks in the page.",
)
CURSOR = Param(
    "cursor",
    {"type": "string", "pattern": f"^{DIGITS.pattern}$"},
    "The next_cursor of the page before.",
)
ENDPOINT = Param("endpoint", {"type": "string"}, "Only this endpoint's tasks.")
USAGE_GROUPS = ("tenant", "endpoint", "hour")
_TIME = {"type": "string", "format": "date-time"}
USAGE_PARAMS = (
    Param("tenant", {"type": "string"}, "Only this tenant's usage."),
    Param("endpoint", {"type": "string"}, "Only this endpoint's usage."),
    Param("since", _TIME, "Only hours that end after this time (ISO-8601)."),
    Param("until", _TIME, "Only hours that start before this time (ISO-8601)."),
    Param(
        "group_by",
        {"type": "array", "items": {"type": "string", "enum": list(USAGE_GROUPS)}},
        "Sum over the keys not listed (repeat it, or separate keys with commas); "
        "default: tenant,endpoint,hour.",
    ),
)
IDEMPOTENCY = Param(
    IDEMPOTENCY_KEY,
    {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN.pattern},
    "1-255 visible ASCII characters: a later submit to this endpoint with the same key and "
    "input answers the same task and queues nothing (until it expires); the same key with "
    "another input is 409.",
    where="header",
)
OPTIONS = "options"
"""In ``params``: the per-submit options (:class:`~raytask.core.config.SubmitOptions`), each
a query parameter."""

INPUT, INPUTS, RESULT, EVENTS = "input", "inputs", "result", "events"
"""Bodies and answers that depend on the endpoint: its arguments as one JSON object, a
JSON array of them, and its result; ``events``: a ``text/event-stream`` (SPEC 10)."""

FROM = Param(
    "from",
    {"type": "integer", "minimum": 0, "maximum": 999_999_999},
    "Resume: the index of the first chunk to send (Last-Event-ID N is from=N+1).",
)
ATTEMPT = Param(
    "attempt",
    {"type": "integer", "minimum": 1, "maximum": 999_999_999},
    "Resume within this attempt (the Raytask-Attempt header of the stream it resumes): if "
    "the task runs another by now, the stream starts with a reset.",
)
ATTEMPT_HEADER = "Raytask-Attempt"
"""The stream answer's header: the attempt whose chunks it starts with (0: none yet)."""
LAST_EVENT_ID = Param(
    "Last-Event-ID",
    {"type": "string", "pattern": "^[0-9]{1,9}$"},
    "Resume after this chunk (what an EventSource sends when it reconnects).",
    where="header",
)

_BODY_ERRORS = (MalformedRequestError, PayloadTooLargeError, InvalidInputError)
_ID_ERRORS = (MalformedRequestError, TaskNotFoundError, ServiceUnavailableError)


@dataclass(frozen=True)
class Operation:
    """One route of the wire.

    Attributes:
        name: its name (and the start of its OpenAPI ``operationId``).
        path: its path below the app's prefix; ``{name}`` stands for a task endpoint.
        methods: its HTTP methods.
        summary: what it does, for people.
        handler: the :class:`~raytask.server.routes.Routes` method that answers it.
        command: the backend method it runs (None: none, or several).
        params: its query parameters and headers (:data:`OPTIONS` for the submit options).
        body: a request model, :data:`INPUT`, :data:`INPUTS`, or None.
        answer: the answer's model, or :data:`RESULT`.
        errors: the errors it answers beside the ones every route may (URL and header
            limits; 401, 403, 415 where they apply).
    """

    name: str
    path: str
    methods: tuple[str, ...]
    summary: str
    handler: str
    command: str | None
    params: tuple[Param | str, ...] = ()
    body: type[BaseModel] | str | None = None
    answer: type[BaseModel] | str = TaskState
    errors: tuple[type[HTTPError], ...] = ()

    @property
    def per_endpoint(self) -> bool:
        """Whether there is one route per task endpoint (a ``{name}`` in the path)."""
        return "{name}" in self.path

    def path_for(self, endpoint: str | None = None, prefix: str = "") -> str:
        """The concrete path (of ``endpoint``'s route, under ``prefix``)."""
        return prefix + (self.path.replace("{name}", endpoint) if endpoint else self.path)

    def param_names(self) -> set[str]:
        return {p.name for p in self.params if isinstance(p, Param)}


TASK_OPERATIONS = (
    Operation(
        "submit",
        "/{name}/submit",
        ("POST",),
        "queue a task",
        "submit",
        "submit",
        (OPTIONS, IDEMPOTENCY),
        INPUT,
        TaskState,
        (*_BODY_ERRORS, TaskConflictError, QueueFullError, ServiceUnavailableError),
    ),
    Operation(
        "submit_many",
        "/{name}/submit_many",
        ("POST",),
        "queue one task per input, all or none",
        "submit_many",
        "submit_many",
        (OPTIONS,),
        INPUTS,
        SubmitManyAnswer,
        (*_BODY_ERRORS, QueueFullError, ServiceUnavailableError),
    ),
    Operation(
        "list",
        "/{name}/tasks",
        ("GET",),
        "list tasks, newest first",
        "list_tasks",
        "list_tasks",
        (STATUS, LIMIT, CURSOR),
        None,
        TaskPage,
        (InvalidInputError, ServiceUnavailableError),
    ),
    Operation(
        "cancel_many",
        "/{name}/cancel_many",
        ("POST",),
        "cancel several tasks, or purge the queue",
        "cancel_many",
        "cancel_many",
        (),
        CancelManyRequest,
        CancelManyAnswer,
        (*_BODY_ERRORS, ServiceUnavailableError),
    ),
    Operation(
        "delete_many",
        "/{name}/delete_many",
        ("POST",),
        "delete finished tasks and their results, by id or by state and age",
        "delete_many",
        "delete_many",
        (),
        DeleteManyRequest,
        DeleteManyAnswer,
        (*_BODY_ERRORS, ServiceUnavailableError),
    ),
    Operation(
        "status",
        "/{name}/status",
        ("GET",),
        "a task's state (wait_s: once it has finished)",
        "status",
        "status",
        (TASK_ID, WAIT_S),
        None,
        TaskState,
        (*_ID_ERRORS, TaskExpiredError, InvalidInputError),
    ),
    Operation(
        "stream",
        "/{name}/stream",
        ("GET",),
        "a task's output as Server-Sent Events while it runs, then its end",
        "stream",
        "stream",
        (TASK_ID, FROM, ATTEMPT, LAST_EVENT_ID),
        None,
        EVENTS,
        (*_ID_ERRORS, TaskExpiredError, InvalidInputError),
    ),
    Operation(
        "get",
        "/{name}/get",
        ("GET",),
        "a task's result",
        "get",
        "result",
        (TASK_ID, WAIT_S),
        None,
        RESULT,
        (*_ID_ERRORS, TaskConflictError, TaskExpiredError, TaskFailedError, InvalidInputError),
    ),
    Operation(
        "cancel",
        "/{name}/cancel",
        ("POST", "PUT"),
        "cancel a task",
        "cancel",
        "cancel",
        (TASK_ID,),
        None,
        TaskState,
        (*_ID_ERRORS, TaskConflictError),
    ),
    Operation(
        "retry",
        "/{name}/retry",
        ("POST", "PUT"),
        "retry a task",
        "retry",
        "retry",
        (TASK_ID,),
        None,
        TaskState,
        (*_ID_ERRORS, TaskConflictError, TaskExpiredError, QueueFullError),
    ),
)
"""The routes of each task endpoint."""

CALL = Operation(
    "call",
    "/{name}",
    ("POST",),
    "call the endpoint and wait for its result",
    "call",
    "call",
    (),
    INPUT,
    RESULT,
    (*_BODY_ERRORS, TaskFailedError, ServiceUnavailableError),
)
"""The synchronous call of any endpoint (task endpoints too)."""

APP_OPERATIONS = (
    Operation(
        "list_tasks",
        "/tasks",
        ("GET",),
        "list every endpoint's tasks, newest first",
        "list_tasks",
        "list_tasks",
        (ENDPOINT, STATUS, LIMIT, CURSOR),
        None,
        TaskPage,
        (EndpointNotFoundError, InvalidInputError, ServiceUnavailableError),
    ),
    Operation(
        "status_many",
        "/status_many",
        ("POST",),
        "the status of several tasks, in order",
        "status_many",
        "status_many",
        (),
        StatusManyRequest,
        StatusManyAnswer,
        (*_BODY_ERRORS, ServiceUnavailableError),
    ),
    Operation(
        "usage",
        "/usage",
        ("GET",),
        "what each tenant's finished tasks cost, by endpoint and hour (SPEC 12)",
        "usage",
        "usage",
        USAGE_PARAMS,
        None,
        UsageAnswer,
        (InvalidInputError, ForbiddenError, ServiceUnavailableError),
    ),
)
"""The app-wide task routes."""

OPERATIONS = {op.name: op for op in (*TASK_OPERATIONS, CALL, *APP_OPERATIONS)}
"""Every task operation by name (the service routes, ``/readyz`` and the like, are in
:mod:`raytask.server.openapi`: they run no task command)."""
