"""The status answer of one task, as one typed model for every runtime.

The manager builds a :class:`TaskState` from its table, the routes send it as JSON (the
body of ``status``, ``submit``, ``cancel`` and ``retry``), the clients parse it back, and
the OpenAPI document's ``TaskState`` schema is generated from it.

Status answers cross Ray processes by the thousand (a ``submit_many`` of 20,000 tasks is
20,000 of them), so the model is kept cheap: times are epoch seconds (floats) until they
are written as ISO-8601 text, and a state pickles as a tuple of plain values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from .status import BENTOML_SPELLING, TaskStatus

_FROM_WIRE = {v: k for k, v in BENTOML_SPELLING.items()} | {s.value: s for s in TaskStatus}


def iso(seconds: float) -> str:
    """Epoch ``seconds`` as ISO-8601 UTC text (``...+00:00``), clamped to what a datetime
    can hold, so that any stored time can be sent."""
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        moment = datetime.max.replace(tzinfo=UTC)
    return moment.isoformat()


def _epoch(value: Any) -> Any:
    # The wire carries ISO text; Python code may pass epoch seconds or a datetime.
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    if isinstance(value, datetime):
        return value.timestamp()
    return value


Timestamp = Annotated[
    float,
    BeforeValidator(_epoch),
    PlainSerializer(iso, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]
"""A UTC time: epoch seconds in Python, ISO-8601 text on the wire."""

TIME_FIELDS = ("created_at", "executed_at", "completed_at", "expires_at")
TASK_ID_PATTERN = r"^[0-9a-f]{32}$"
ANY_CASE_TASK_ID_PATTERN = r"^[0-9a-fA-F]{32}$"
"""What the routes accept: an id in any letter case (answered in lowercase)."""
"""What every task id looks like (uuid4 hex)."""


def _status(value: Any) -> Any:
    # Accept BentoML's spellings too ("completed", "failed", "canceled").
    return _FROM_WIRE.get(value, value) if isinstance(value, str) else value


class Progress(BaseModel):
    """What a running task last said of its progress (:func:`raytask.report_progress`).

    Attributes:
        fraction: how much is done, 0.0 to 1.0, or ``None`` if it did not say.
        message: a short note (at most 1,000 characters), or ``None``.
        updated_at: when the manager got the report (epoch seconds; ISO-8601 on the wire).
    """

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    fraction: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    message: str | None = Field(None, max_length=1000)
    updated_at: Timestamp


class WebhookState(BaseModel):
    """How the task's webhook deliveries stand (``null`` in a status answer without one).

    Attributes:
        state: ``pending`` while a delivery is on its way or waits to retry, then
            ``delivered`` or ``failed`` (of the latest event).
        attempts: attempts of the latest event's delivery.
        last_error: why its last attempt failed, or ``None``.
    """

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    state: Literal["pending", "delivered", "failed"]
    attempts: int = 0
    last_error: str | None = None


class TaskState(BaseModel):
    """What the server knows of one task (the JSON of a status answer).

    Attributes:
        task_id: 32 lowercase hex digits.
        status: the task's :class:`TaskStatus`.
        endpoint: the endpoint the task was submitted to.
        created_at, executed_at, completed_at, expires_at: epoch seconds (UTC; ISO-8601 text
            on the wire), ``None`` where not yet.
        attempts: attempts started so far.
        error: why the last attempt failed (``None`` after a success).
        retry_of: the task this one retries, if any.
        priority: -10..10; higher runs first within its endpoint.
        queue_position: while ``pending``, how many tasks of its endpoint run before it
            (0: it is next); otherwise ``None``.
        progress: what the running method last reported, or ``None``.
        webhook: how its webhook deliveries stand, or ``None`` without a webhook.
        chunks: for a generator task, the chunks its current attempt streamed so far
            (``None`` for tasks that are not generators).
        queue_s: seconds it waited in the queue, over all its waits (so far, while pending).
        run_s: wall seconds it ran, over all its attempts (so far, while in progress).
        gpu_s: ``run_s`` times its deployment's ``num_gpus``.
    """

    # Every field is always sent: the serialization schema lists them all as required.
    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_serialization_defaults_required=True
    )

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    status: Annotated[TaskStatus, BeforeValidator(_status)]
    endpoint: str | None = None
    created_at: Timestamp | None = None
    executed_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    attempts: int = 0
    error: str | None = None
    retry_of: str | None = None
    priority: int = 0
    queue_position: int | None = None
    progress: Progress | None = None
    webhook: WebhookState | None = None
    chunks: int | None = None
    queue_s: float = 0.0
    run_s: float = 0.0
    gpu_s: float = 0.0
    # A hash of the API token that submitted the task (token isolation): checked by the
    # routes, never sent.
    owner: str | None = Field(None, exclude=True)

    @classmethod
    def of(cls, *values: Any) -> TaskState:
        """A state from trusted values in field order (no validation: the table's own data)."""
        state = cls.__new__(cls)
        object.__setattr__(state, "__dict__", dict(zip(_FIELDS, values, strict=True)))
        object.__setattr__(state, "__pydantic_fields_set__", _ALL_FIELDS)
        object.__setattr__(state, "__pydantic_extra__", None)
        object.__setattr__(state, "__pydantic_private__", None)
        return state

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        values = [self.__dict__[name] for name in _FIELDS]
        values[_STATUS] = self.status.value
        return _restore, tuple(values)

    def wire(self, bentoml: bool = False) -> dict[str, Any]:
        """The JSON-able status answer; ``bentoml`` uses BentoML 1.4's status spellings."""
        body = self.model_dump(mode="json")
        if bentoml:
            body["status"] = BENTOML_SPELLING[self.status]
        return body


_FIELDS = tuple(TaskState.model_fields)
_ALL_FIELDS = frozenset(_FIELDS)
_STATUS = _FIELDS.index("status")
_BY_VALUE = {s.value: s for s in TaskStatus}


def _restore(*values: Any) -> TaskState:
    fields = list(values)
    fields[_STATUS] = _BY_VALUE[fields[_STATUS]]
    return TaskState.of(*fields)
