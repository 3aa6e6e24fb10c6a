"""One task's record: everything the task manager knows of it, as plain data.

The table changes records; the journal stores :meth:`TaskRecord.to_dict` and reloads with
:meth:`TaskRecord.from_dict` (rows written by older versions stay readable: new fields
have defaults).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pickle
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .chunks import ChunkLog
from .config import TaskOptions
from .errors import InvalidTransitionError
from .queue import ANONYMOUS
from .state import Progress, TaskState
from .status import TaskStatus, can_transition
from .webhooks import WebhookLog


def new_task_id() -> str:
    """An unguessable task id: 32 lowercase hex digits (uuid4)."""
    return uuid.uuid4().hex


def _unjsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models by their fields
    if callable(dump):
        return dump(mode="json")
    return pickle.dumps(value, protocol=5).hex()


def input_digest(kwargs: dict[str, Any]) -> str:
    """A fingerprint of a task's inputs: equal for equal inputs in any key order (what an
    idempotency key compares)."""
    text = json.dumps(kwargs, sort_keys=True, default=_unjsonable, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def plain_size(
    value: Any,
    other: Callable[[Any], int | None] = lambda item: None,
    budget: int | None = None,
    max_nodes: int | None = None,
) -> int | None:
    """Roughly the bytes of ``value``, by a walk over its plain data (None, numbers,
    strings, bytes, lists, tuples, dicts); ``other(item)`` sizes anything else. None when
    ``other`` gives None, the size passes ``budget``, or the walk passes ``max_nodes``."""
    stack, size, nodes = [value], 0, 0
    while stack:
        item = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            return None
        if item is None or isinstance(item, bool | int | float):
            size += 9
        elif isinstance(item, str | bytes | bytearray):
            size += len(item) + 8
        elif isinstance(item, list | tuple):
            size += 8
            stack.extend(item)
        elif isinstance(item, dict):
            size += 8
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            extra = other(item)
            if extra is None:
                return None
            size += extra
        if budget is not None and size > budget:
            return None
    return size


def _pickled_size(item: Any) -> int:
    try:
        return len(pickle.dumps(item, protocol=5))
    except Exception:  # not picklable: it still takes some room
        return sys.getsizeof(item)


def approx_size(value: Any) -> int:
    """Roughly the bytes ``value`` holds: plain data by a walk over it, anything else by
    its pickle (what the journal and Ray would send anyway). For the app's byte limit
    (``max_task_bytes``), not for billing."""
    return plain_size(value, _pickled_size) or 0


@dataclass(frozen=True, slots=True)
class Result:
    """A success's result as the manager holds it.

    Attributes:
        value: the value itself, or (for a large one) the ``ObjectRef`` that holds it,
            never read by the manager.
        size: its bytes (:func:`approx_size`, or the object store's size), counted
            against ``max_task_bytes``.
        inline: True for a value held as it is (the journal may keep it); False for an
            ``ObjectRef``.
    """

    value: Any
    size: int
    inline: bool = True


@dataclass(slots=True)
class TaskRecord:
    """Everything the manager knows about one task; times are epoch seconds."""

    task_id: str
    endpoint: str
    kwargs: dict[str, Any]
    options: TaskOptions
    created_at: float
    status: TaskStatus = TaskStatus.PENDING
    executed_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    error: str | None = None
    retry_of: str | None = None
    seq: int = 0  # submission order, kept across restarts (pending tasks requeue in it)
    idempotency_key: str | None = None
    input_digest: str | None = None  # of the inputs, kept with an idempotency key
    progress: Progress | None = None
    webhook: WebhookLog | None = None
    owner: str | None = None  # a hash of the submitting API token, with token isolation
    input_bytes: int = 0  # approx_size of kwargs, counted against max_task_bytes
    result_bytes: int = 0  # of the result it keeps (0 until it succeeds)
    job: str | None = None  # a batch job's line: never journaled (the job's files are)
    tenant: str = ANONYMOUS  # the name of the submitting API token (raytask.core.tenants)
    gpus: float = 0.0  # its deployment's num_gpus: gpu_s = run_s * gpus
    queue_s: float = 0.0  # seconds pending, over all its waits (until changed_at)
    run_s: float = 0.0  # seconds in progress, over all its attempts (until changed_at)
    changed_at: float | None = None  # when its status last changed (None: rows of 0.x)
    # Not journaled with the row (see _RECORD_FIELDS): the result, whether the journal
    # holds the inputs already (they are written once per task), and a generator task's
    # chunks of its current attempt (None: not a generator; the journal writes them in
    # groups, and the row says their attempt and count).
    result: Result | None = dataclasses.field(default=None, compare=False)
    inputs_journaled: bool = dataclasses.field(default=False, compare=False)
    chunks: ChunkLog | None = dataclasses.field(default=None, compare=False)

    def spent(self, now: float) -> tuple[float, float]:
        """``(queue_s, run_s)`` as of ``now``: the time in the current status counts."""
        since = self.changed_at
        if since is None:  # a row of 0.x: its last change is as good as known
            since = self.executed_at if self.status is TaskStatus.IN_PROGRESS else self.created_at
        elapsed = 0.0 if since is None else max(0.0, now - since)
        if self.status is TaskStatus.PENDING:
            return self.queue_s + elapsed, self.run_s
        if self.status is TaskStatus.IN_PROGRESS:
            return self.queue_s, self.run_s + elapsed
        return self.queue_s, self.run_s

    def state(self, queue_position: int | None = None, now: float | None = None) -> TaskState:
        """The status answer of this task (the table knows its ``queue_position`` and
        the time ``now``, for the seconds of a task still pending or running)."""
        queue_s, run_s = self.spent(now if now is not None else (self.changed_at or 0.0))
        return TaskState.of(
            self.task_id,
            self.status,
            self.endpoint,
            self.created_at,
            self.executed_at,
            self.completed_at,
            self.expires_at,
            self.attempts,
            self.error,
            self.retry_of,
            self.options.priority,
            queue_position,
            self.progress,
            None if self.webhook is None else self.webhook.summary,
            None if self.chunks is None else len(self.chunks),
            round(queue_s, 6),
            round(run_s, 6),
            round(run_s * self.gpus, 6),
            self.owner,
        )

    def move(self, target: TaskStatus, now: float, recovering: bool = False) -> None:
        """The one place a status changes, with the times that go with it; moves the state
        machine forbids raise (``recovering``: by its recovery rules).

        Raises:
            InvalidTransitionError: ``status`` → ``target`` is not allowed.
        """
        if not can_transition(self.status, target, recovering):
            raise InvalidTransitionError(self.task_id, self.status.value, target.value)
        if self.changed_at is not None and now > self.changed_at:  # (0.x rows: spent())
            if self.status is TaskStatus.PENDING:
                self.queue_s += now - self.changed_at
            elif self.status is TaskStatus.IN_PROGRESS:
                self.run_s += now - self.changed_at
        elif self.changed_at is None:
            self.queue_s, self.run_s = self.spent(now)
        self.changed_at = now
        if target is TaskStatus.PENDING:
            self.completed_at = self.expires_at = None
        elif target is TaskStatus.IN_PROGRESS:
            self.executed_at = now
            self.attempts += 1
        else:
            self.completed_at = now
            self.expires_at = now + self.options.ttl_s
        self.status = target

    def held_bytes(self) -> int:
        """What this task holds against ``max_task_bytes``: its inputs, its result and its
        streamed chunks (a generator's result is its chunks, counted once: its size is 0)."""
        chunks = 0 if self.chunks is None else self.chunks.nbytes
        return self.input_bytes + self.result_bytes + chunks

    def queue_deadline(self) -> float | None:
        """When this task expires unless it has started (``max_queue_s`` after submit)."""
        max_queue_s = self.options.max_queue_s
        return None if max_queue_s is None else self.created_at + max_queue_s

    def to_dict(self) -> dict[str, Any]:
        """A snapshot of plain values (what the journal stores; old rows stay readable).

        Without ``kwargs`` (the journal writes a task's inputs once, apart) and the
        result (journaled apart too). The options' dump is cached per options object
        (tasks of one endpoint share one), because the journal calls this for every
        change of every task.
        """
        data = {name: getattr(self, name) for name in _RECORD_FIELDS}
        data["status"] = self.status.value
        data["options"] = _options_dict(self.options)
        if self.chunks is not None:  # the chunks themselves go in groups (ChunkLog.group)
            data["chunk_attempt"], data["chunk_count"] = self.chunks.attempt, len(self.chunks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], kwargs: dict[str, Any] | None = None) -> TaskRecord:
        """The inverse of :meth:`to_dict`, with the task's inputs (rows of older versions
        carry them inside)."""
        data = dict(data)
        if kwargs is not None or "kwargs" not in data:
            data["kwargs"] = kwargs or {}
        data["status"] = TaskStatus(data["status"])
        data["options"] = _options_of(data["options"])
        attempt, values = data.pop("chunk_attempt", 0), data.pop("chunks", None)
        data.pop("chunk_count", None), data.pop("chunk_bytes", None)
        record = cls(**data)
        if values is not None:  # a row of 0.x before chunk groups held the chunks
            record.chunks = ChunkLog.of(attempt, values)
        return record


_RECORD_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(TaskRecord)
    if f.name not in ("kwargs", "result", "inputs_journaled", "chunks", "job")
)


@functools.lru_cache(maxsize=1024)
def _options_dict(options: TaskOptions) -> dict[str, Any]:
    return options.model_dump()


def _options_of(fields: dict[str, Any]) -> TaskOptions:
    """The options of a journal row: rows of one endpoint share theirs, so each distinct
    set is validated once (validating every row was 40 % of a restarted manager's reload
    of 10,000 queued tasks). The model is frozen: sharing one is safe."""
    try:
        return _cached_options(tuple(fields.items()))
    except TypeError:  # an unhashable value (a row of some other version): no cache
        return TaskOptions(**fields)


@functools.lru_cache(maxsize=1024)
def _cached_options(items: tuple[tuple[str, Any], ...]) -> TaskOptions:
    return TaskOptions(**dict(items))
