"""The status answer of one task, as one typed model for every runtime.

The manager builds a :class:`TaskState` from its table, the routes send it as JSON (the
body of ``status``, ``submit``, ``cancel`` and ``retry``), the clients parse it back, and
the OpenAPI document's ``TaskState`` schema is generated from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from .status import BENTOML_SPELLING, TaskStatus

_FROM_WIRE = {v: k for k, v in BENTOML_SPELLING.items()} | {s.value: s for s in TaskStatus}

# Sent as Python's isoformat() ("...+00:00"), which every ISO-8601 parser reads.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda t: t.isoformat(), return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]

TIME_FIELDS = ("created_at", "executed_at", "completed_at", "expires_at")


def from_epoch(seconds: float | None) -> datetime | None:
    """An aware UTC datetime for epoch ``seconds`` (clamped to what a datetime can hold)."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


class TaskState(BaseModel):
    """What the server knows of one task (the JSON of a status answer).

    Attributes:
        task_id: 32 lowercase hex digits.
        status: the task's :class:`TaskStatus`.
        endpoint: the endpoint the task was submitted to.
        created_at, executed_at, completed_at, expires_at: UTC times, ``None`` where not yet.
        attempts: attempts started so far.
        error: why the last attempt failed (``None`` after a success).
        retry_of: the task this one retries, if any.
    """

    # Every field is always sent: the serialization schema lists them all as required.
    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_serialization_defaults_required=True
    )

    task_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    status: TaskStatus
    endpoint: str | None = None
    created_at: Timestamp | None = None
    executed_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    attempts: int = 0
    error: str | None = None
    retry_of: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _any_spelling(cls, value: Any) -> Any:
        # Accept BentoML's spellings too ("completed", "failed", "canceled").
        return _FROM_WIRE.get(value, value) if isinstance(value, str) else value

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Status answers cross Ray processes by the thousand: pickle the values only
        # (about 10x cheaper than pydantic's default state dict).
        values = [getattr(self, name) for name in _FIELDS]
        values[_STATUS] = self.status.value
        for i in _TIMES:
            values[i] = values[i] and values[i].timestamp()
        return _restore, tuple(values)

    def wire(self, bentoml: bool = False) -> dict[str, Any]:
        """The JSON-able status answer; ``bentoml`` uses BentoML 1.4's status spellings."""
        body = self.model_dump(mode="json")
        if bentoml:
            body["status"] = BENTOML_SPELLING[self.status]
        return body


_FIELDS = tuple(TaskState.model_fields)
_STATUS = _FIELDS.index("status")
_TIMES = tuple(_FIELDS.index(name) for name in TIME_FIELDS)


def _restore(*values: Any) -> TaskState:
    fields = dict(zip(_FIELDS, values, strict=True))
    fields["status"] = TaskStatus(fields["status"])
    for name in TIME_FIELDS:
        fields[name] = from_epoch(fields[name])
    return TaskState.model_construct(**fields)
