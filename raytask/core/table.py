"""The task table: records, the pending queues, attempts and TTL bookkeeping.

Plain Python with an injectable clock and no Ray or HTTP import, so every rule here is
unit-tested in milliseconds. The task manager actor adapts it to Ray; the in-process
test backend adapts it to a thread pool.

Records are plain data (:meth:`TaskRecord.to_dict` / :meth:`TaskRecord.from_dict`) so
that the table can be journaled to disk and reloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .config import TaskOptions
from .errors import (
    InvalidTransitionError,
    QueueFullError,
    TaskCancelledError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotCompletedError,
    TaskNotFoundError,
)
from .state import TaskState
from .status import TaskStatus, can_transition

Clock = Callable[[], float]


def _ignore(_: Any) -> None:
    pass


def new_task_id() -> str:
    """An unguessable task id: 32 lowercase hex digits (uuid4)."""
    return uuid.uuid4().hex


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

    def state(self) -> TaskState:
        """The status answer of this task."""
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
        )

    def to_dict(self) -> dict[str, Any]:
        """A snapshot of plain values (what the journal stores; old rows stay readable).

        Shallow: ``kwargs`` is shared (it never changes after submit), and the options'
        dump is cached per options object (tasks of one endpoint share one), because the
        journal calls this for every change of every task.
        """
        data = {name: getattr(self, name) for name in _RECORD_FIELDS}
        data["status"] = self.status.value
        data["options"] = _options_dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        """The inverse of :meth:`to_dict`."""
        data = dict(data)
        data["status"] = TaskStatus(data["status"])
        data["options"] = TaskOptions(**data["options"])
        return cls(**data)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))


@functools.lru_cache(maxsize=1024)
def _options_dict(options: TaskOptions) -> dict[str, Any]:
    return options.model_dump()


class TaskTable:
    """Tasks by id, FIFO pending queues per endpoint, and expiry.

    Args:
        max_queue_size: pending tasks allowed across all endpoints before
            :meth:`submit` raises :class:`QueueFullError`.
        retry_after_s: the wait a :class:`QueueFullError` suggests.
        clock: returns the current time in seconds (``time.time`` by default).
        max_tombstones: how many expired ids are remembered (to answer 410, not 404).
    """

    def __init__(
        self,
        max_queue_size: int = 100_000,
        retry_after_s: float = 1.0,
        clock: Clock = time.time,
        max_tombstones: int = 1_000_000,
    ) -> None:
        self.max_queue_size = max_queue_size
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.max_tombstones = max_tombstones
        self._records: dict[str, TaskRecord] = {}
        self._queues: dict[str, deque[str]] = {}
        self._pending = 0
        self._counts: dict[str, Counter[TaskStatus]] = {}
        self._tombstones: OrderedDict[str, float] = OrderedDict()
        self._expiries: list[tuple[float, str]] = []  # a heap of (expires_at, task_id)
        self._seq = 0
        # Called with each record that was created or changed, and each id forgotten:
        # the task manager journals them.
        self.on_change: Callable[[TaskRecord], None] = _ignore
        self.on_forget: Callable[[str], None] = _ignore

    # -- reading ---------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """The record of ``task_id``.

        Raises:
            TaskExpiredError: the task's result outlived its TTL.
            TaskNotFoundError: no task ever had this id (or it was forgotten).
        """
        record = self._records.get(task_id)
        if record is not None:
            return record
        if task_id in self._tombstones:
            raise TaskExpiredError(f"task {task_id} has expired: its result was deleted")
        raise TaskNotFoundError(f"task {task_id} not found")

    def check_result(self, task_id: str) -> TaskRecord:
        """The record of a task that has a result, or the error ``get`` should answer.

        Raises:
            TaskNotCompletedError: pending or in progress.
            TaskFailedError: the task failed (the message says why).
            TaskCancelledError: the task was cancelled.
        """
        record = self.get(task_id)
        if record.status is TaskStatus.SUCCESS:
            return record
        if record.status is TaskStatus.FAILURE:
            raise TaskFailedError(f"task {task_id} failed: {record.error}")
        if record.status is TaskStatus.CANCELLED:
            raise TaskCancelledError(f"task {task_id} was cancelled")
        raise TaskNotCompletedError(
            f"task {task_id} is not completed yet (status: {record.status.value}); wait for "
            "it with task.get(timeout=...) or task.wait(), or poll its status"
        )

    @property
    def pending_count(self) -> int:
        """Tasks waiting in the queues."""
        return self._pending

    def __len__(self) -> int:
        return len(self._records)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per endpoint, the number of tasks in each state (kept as they change)."""
        return {
            endpoint: {status.value: counter[status] for status in TaskStatus}
            for endpoint, counter in self._counts.items()
        }

    def endpoint_stats(self, endpoints: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Per endpoint: tasks in each state and ``oldest_pending_age_s`` (None if none)."""
        stats: dict[str, dict[str, Any]] = {}
        for name in endpoints:
            counter = self._counts.get(name, Counter())
            numbers: dict[str, Any] = {status.value: counter[status] for status in TaskStatus}
            numbers["oldest_pending_age_s"] = self.oldest_pending_age(name)
            stats[name] = numbers
        return stats

    def ids_in(self, statuses: Iterable[TaskStatus], endpoint: str | None = None) -> list[str]:
        """Ids of the tasks in one of ``statuses`` (of ``endpoint``, or of every endpoint)."""
        wanted = frozenset(statuses)
        return [
            r.task_id
            for r in self._records.values()
            if r.status in wanted and (endpoint is None or r.endpoint == endpoint)
        ]

    def pending_by_endpoint(self, endpoint: str) -> int:
        """Tasks of ``endpoint`` waiting in its queue."""
        counter = self._counts.get(endpoint)
        return counter[TaskStatus.PENDING] if counter else 0

    def has_pending(self, endpoint: str) -> bool:
        """Whether ``endpoint`` has a task waiting (cancelled leftovers are dropped)."""
        queue = self._queues.get(endpoint)
        while queue:
            if self._records.get(queue[0]) is not None and (
                self._records[queue[0]].status is TaskStatus.PENDING
            ):
                return True
            queue.popleft()
        return False

    # -- changing --------------------------------------------------------------

    def _move(self, record: TaskRecord, target: TaskStatus) -> None:
        """The one place a status changes; it rejects moves the table forbids."""
        if not can_transition(record.status, target):
            raise InvalidTransitionError(record.task_id, record.status.value, target.value)
        now = self.clock()
        counter = self._counts[record.endpoint]
        counter[record.status] -= 1
        counter[target] += 1
        if record.status is TaskStatus.PENDING:
            self._pending -= 1
        if target is TaskStatus.PENDING:
            self._pending += 1
        elif target is TaskStatus.IN_PROGRESS:
            record.executed_at = now
            record.attempts += 1
        elif target.finished:
            record.completed_at = now
            record.expires_at = now + record.options.ttl_s
            heapq.heappush(self._expiries, (record.expires_at, record.task_id))
        record.status = target
        self.on_change(record)

    def submit(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: TaskOptions,
        retry_of: str | None = None,
    ) -> TaskRecord:
        """Queue a new task at the back of its endpoint's queue.

        Raises:
            QueueFullError: ``max_queue_size`` tasks are already pending.
        """
        if self._pending >= self.max_queue_size:
            raise QueueFullError(
                f"the task queue is full ({self.max_queue_size} pending); retry later",
                retry_after_s=self.retry_after_s,
            )
        self._seq += 1
        record = TaskRecord(
            task_id=new_task_id(),
            endpoint=endpoint,
            kwargs=kwargs,
            options=options,
            created_at=self.clock(),
            retry_of=retry_of,
            seq=self._seq,
        )
        self._records[record.task_id] = record
        self._queues.setdefault(endpoint, deque()).append(record.task_id)
        self._pending += 1
        self._counts.setdefault(endpoint, Counter())[TaskStatus.PENDING] += 1
        self.on_change(record)
        return record

    def restore(self, records: Iterable[TaskRecord]) -> None:
        """Load records as they are (a journal's, after recovery decided their states):
        pending ones queue in submission order, finished ones expire at their time."""
        for record in sorted(records, key=lambda r: r.seq):
            self._records[record.task_id] = record
            self._counts.setdefault(record.endpoint, Counter())[record.status] += 1
            self._seq = max(self._seq, record.seq)
            if record.status is TaskStatus.PENDING:
                self._queues.setdefault(record.endpoint, deque()).append(record.task_id)
                self._pending += 1
            elif record.status.finished and record.expires_at is not None:
                heapq.heappush(self._expiries, (record.expires_at, record.task_id))

    def pop_next(self, endpoint: str) -> TaskRecord | None:
        """Start the oldest pending task of ``endpoint`` (now ``in_progress``), if any."""
        if not self.has_pending(endpoint):
            return None
        record = self._records[self._queues[endpoint].popleft()]
        self._move(record, TaskStatus.IN_PROGRESS)
        return record

    def succeed(self, task_id: str) -> TaskRecord:
        """Record a successful run."""
        record = self.get(task_id)
        self._move(record, TaskStatus.SUCCESS)
        record.error = None
        return record

    def fail(self, task_id: str, error: str, retryable: bool = False) -> TaskRecord:
        """Record a failed attempt.

        A ``retryable`` failure (a lost replica, a timeout, or an exception when the task
        allows it) puts the task back at the *front* of its queue while it has attempts
        left; otherwise, or when they are used up, the task ends in ``failure``.
        """
        record = self.get(task_id)
        # An exception's message may hold a lone surrogate: escape it, or no status
        # answer of this task could ever be encoded.
        record.error = error.encode("utf-8", "backslashreplace").decode("utf-8")
        if retryable and record.attempts < record.options.max_attempts:
            self._move(record, TaskStatus.PENDING)
            self._queues.setdefault(record.endpoint, deque()).appendleft(task_id)
        else:
            if retryable:
                record.error += f" (gave up after {record.attempts} attempts)"
            self._move(record, TaskStatus.FAILURE)
        return record

    def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a pending or running task; returns the status it had.

        Raises:
            TaskConflictError: the task already finished.
        """
        record = self.get(task_id)
        if record.status.finished:
            raise TaskConflictError(
                f"task {task_id} already finished (status: {record.status.value})"
            )
        previous = record.status
        self._move(record, TaskStatus.CANCELLED)
        return previous

    def retry(self, task_id: str) -> TaskRecord:
        """Queue a new task with the same endpoint, inputs and options.

        Raises:
            TaskConflictError: the original has not finished yet.
        """
        original = self.get(task_id)
        if not original.status.finished:
            raise TaskConflictError(
                f"task {task_id} has not finished yet (status: {original.status.value})"
            )
        return self.submit(original.endpoint, original.kwargs, original.options, retry_of=task_id)

    def sweep(self) -> list[str]:
        """Forget finished tasks past their TTL; return their ids.

        Their ids become tombstones, so :meth:`get` answers "expired" rather than
        "not found"; the oldest tombstones go once there are ``max_tombstones``.
        """
        now = self.clock()
        expired = []
        while self._expiries and self._expiries[0][0] <= now:
            _, task_id = heapq.heappop(self._expiries)
            record = self._records.pop(task_id, None)
            if record is not None:
                self._counts[record.endpoint][record.status] -= 1
                self._tombstones[task_id] = now
                expired.append(task_id)
                self.on_forget(task_id)
        while len(self._tombstones) > self.max_tombstones:
            self._tombstones.popitem(last=False)
        return expired

    def oldest_pending_age(self, endpoint: str) -> float | None:
        """Seconds the oldest pending task of ``endpoint`` has waited, if any."""
        if not self.has_pending(endpoint):
            return None
        return self.clock() - self._records[self._queues[endpoint][0]].created_at
