"""The task table: records, the pending queues, attempts and TTL bookkeeping.

Plain Python with an injectable clock and no Ray or HTTP import, so every rule here is
unit-tested in milliseconds. :class:`~raytask.server.service.TaskService` runs the
commands over it.

Its records are :class:`~raytask.core.record.TaskRecord` (plain data, journaled and
reloaded as they are).
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .config import TaskOptions
from .errors import (
    QueueFullError,
    TaskCancelledError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotCompletedError,
    TaskNotFoundError,
)
from .queue import PendingQueue
from .record import Result, TaskRecord, approx_size, input_digest, new_task_id
from .state import Progress, TaskState
from .status import TaskStatus

__all__ = ["Clock", "TaskRecord", "TaskTable", "input_digest", "new_task_id"]

Clock = Callable[[], float]


def _ignore(_: Any) -> None:
    pass


LIST_SCAN = 10_000
"""Tasks one listing page looks at beyond its ``limit`` before it answers with what it
found and a cursor (so a filter that matches little cannot make a page scan everything)."""


class TaskTable:
    """Tasks by id, priority queues per endpoint, queue deadlines, keys and expiry.

    Args:
        max_queue_size: pending tasks allowed across all endpoints before
            :meth:`submit` raises :class:`QueueFullError`.
        retry_after_s: the wait a :class:`QueueFullError` suggests.
        clock: returns the current time in seconds (``time.time`` by default).
        max_tombstones: how many expired ids are remembered (to answer 410, not 404).
        max_tasks: tasks held in any state (finished ones until their TTL) before
            :meth:`submit` raises :class:`QueueFullError`.
        max_task_bytes: bytes of inputs and kept results held before :meth:`submit`
            raises :class:`QueueFullError` (sizes as :func:`approx_size` estimates them).
    """

    def __init__(
        self,
        max_queue_size: int = 100_000,
        retry_after_s: float = 1.0,
        clock: Clock = time.time,
        max_tombstones: int = 1_000_000,
        max_tasks: int = 1_000_000,
        max_task_bytes: int = 8 * 1024**3,
    ) -> None:
        self.max_queue_size = max_queue_size
        self.retry_after_s = retry_after_s
        self.max_tasks = max_tasks
        self.max_task_bytes = max_task_bytes
        self.held_bytes = 0  # inputs and kept results of every task held
        self.clock = clock
        self.max_tombstones = max_tombstones
        self._records: dict[str, TaskRecord] = {}
        self._queues: dict[str, PendingQueue] = {}
        self._pending = 0
        self._counts: dict[str, Counter[TaskStatus]] = {}
        self._tombstones: OrderedDict[str, str | None] = OrderedDict()  # id -> owner
        self._expiries: list[tuple[float, str]] = []  # a heap of (expires_at, task_id)
        self._deadlines: list[tuple[float, str]] = []  # a heap of (queue deadline, task_id)
        # (endpoint, owner, idempotency key) -> id: tenants never share a key
        self._keys: dict[tuple[str, str | None, str], str] = {}
        self._order: list[tuple[int, str]] = []  # (seq, id) ascending: listings, newest first
        self._forgotten = 0  # entries of _order whose task is gone
        self._seq = 0
        # Called with each record that was created or changed, and each id forgotten:
        # the task manager journals them.
        self.on_change: Callable[[TaskRecord], None] = _ignore
        self.on_forget: Callable[[str], None] = _ignore

    # -- reading ---------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """The record of ``task_id`` (a queued task past its deadline expires first).

        Raises:
            TaskExpiredError: the task's result outlived its TTL.
            TaskNotFoundError: no task ever had this id (or it was forgotten).
        """
        record = self._records.get(task_id)
        if record is not None:
            if record.status is TaskStatus.PENDING and self._overdue(record, self.clock()):
                self._expire(record)
            return record
        if task_id in self._tombstones:
            raise TaskExpiredError(
                f"task {task_id} has expired: its result was deleted",
                owner=self._tombstones[task_id],
            )
        raise TaskNotFoundError(f"task {task_id} not found")

    def state(self, task_id: str) -> TaskState:
        """The status answer of ``task_id``, with its queue position (see :meth:`get`)."""
        record = self.get(task_id)
        return record.state(self.position(record))

    def owner_of(self, task_id: str) -> str | None:
        """The owner of a task the table holds, else None."""
        record = self._records.get(task_id)
        return None if record is None else record.owner

    def endpoint_of(self, task_id: str) -> str | None:
        """The endpoint of a task the table holds, else None."""
        record = self._records.get(task_id)
        return None if record is None else record.endpoint

    def position(self, record: TaskRecord) -> int | None:
        """How many tasks of its endpoint run before a pending task (0: next), else None."""
        if record.status is not TaskStatus.PENDING:
            return None
        queue = self._queues.get(record.endpoint)
        return None if queue is None else queue.position(record.task_id)

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
            reason = f": {record.error}" if record.error else ""
            raise TaskCancelledError(f"task {task_id} was cancelled{reason}")
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

    @property
    def results_held(self) -> int:
        """How many results the table keeps (a walk over every task: for stats only)."""
        return sum(1 for record in self._records.values() if record.result is not None)

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
        if wanted == {TaskStatus.PENDING}:  # the queues know them without a scan
            queues = [self._queues.get(endpoint)] if endpoint else list(self._queues.values())
            return [task_id for queue in queues if queue for task_id in queue]
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
        """Whether ``endpoint`` has a task waiting."""
        return bool(self._queues.get(endpoint))

    def list(
        self,
        endpoint: str | None = None,
        statuses: Iterable[TaskStatus] | None = None,
        limit: int = 100,
        cursor: int | None = None,
        owner: str | None = None,
    ) -> tuple[list[TaskRecord], int | None]:
        """One page of tasks, newest first: those of ``endpoint`` (or every endpoint) in
        one of ``statuses`` (or any), submitted before ``cursor`` (by ``owner``, if given).
        Returns the page and the cursor of the next one (None at the end)."""
        wanted = None if statuses is None else frozenset(statuses)
        end = len(self._order) if cursor is None else bisect.bisect_left(self._order, (cursor,))
        page: list[TaskRecord] = []
        budget = LIST_SCAN + limit
        index = end - 1
        while index >= 0 and len(page) < limit and budget > 0:
            _, task_id = self._order[index]
            index -= 1
            budget -= 1
            record = self._records.get(task_id)
            if (
                record is not None
                and (endpoint is None or record.endpoint == endpoint)
                and (wanted is None or record.status in wanted)
                and (owner is None or record.owner == owner)
            ):
                page.append(record)
        return page, (self._order[index + 1][0] if index >= 0 else None)

    # -- changing --------------------------------------------------------------

    def _move(self, record: TaskRecord, target: TaskStatus) -> None:
        """Every status change of a held task: :meth:`TaskRecord.move` (the state machine)
        and the table's counts, queues and expiries, then ``on_change``."""
        previous = record.status
        record.move(target, self.clock())
        counter = self._counts[record.endpoint]
        counter[previous] -= 1
        counter[target] += 1
        if previous is TaskStatus.PENDING:
            self._pending -= 1
            self._queues[record.endpoint].remove(record.task_id)
        if target is TaskStatus.PENDING:
            self._pending += 1
        elif target.finished:
            heapq.heappush(self._expiries, (record.expires_at or 0.0, record.task_id))
        self.on_change(record)

    def _queue(self, record: TaskRecord, front: bool = False) -> None:
        queue = self._queues.get(record.endpoint)
        if queue is None:
            queue = self._queues[record.endpoint] = PendingQueue()
        queue.push(record.task_id, record.options.priority, front)

    def _check_room(self, count: int, size: int) -> None:
        """Refuse ``count`` more tasks of ``size`` input bytes past any of the limits."""
        if self._pending + count > self.max_queue_size:
            room = max(0, self.max_queue_size - self._pending)
            self._full(
                f"the task queue is full ({self.max_queue_size} tasks may wait, room for "
                f"{room}, {count} submitted); retry later"
            )
        if len(self._records) + count > self.max_tasks:
            self._full(
                f"the app holds its max_tasks={self.max_tasks} tasks (finished ones count "
                "until their TTL ends); retry later"
            )
        if self.held_bytes + size > self.max_task_bytes:
            self._full(
                f"the app holds its max_task_bytes={self.max_task_bytes} bytes of task inputs "
                "and results (finished ones count until their TTL ends); retry later"
            )

    def _full(self, message: str) -> None:
        raise QueueFullError(message, retry_after_s=self.retry_after_s)

    def submit(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: TaskOptions,
        retry_of: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> TaskRecord:
        """Queue a new task behind the pending ones of its priority (``owner``: who may
        see it, with token isolation).

        With an ``idempotency_key`` already used at ``endpoint`` by a task the table still
        holds, nothing is queued: that task comes back if its inputs are these.

        Raises:
            QueueFullError: ``max_queue_size`` tasks are already pending.
            TaskConflictError: the key was used with other inputs.
        """
        digest = None
        if idempotency_key is not None:
            digest = input_digest(kwargs)
            earlier = self._records.get(self._keys.get((endpoint, owner, idempotency_key), ""))
            if earlier is not None:
                if earlier.input_digest != digest:
                    raise TaskConflictError(
                        f"Idempotency-Key {idempotency_key!r} was used for task "
                        f"{earlier.task_id} with other inputs; use a new key"
                    )
                return earlier
        size = approx_size(kwargs)
        self._check_room(1, size)
        return self._add(endpoint, kwargs, options, retry_of, idempotency_key, digest, owner, size)

    def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: TaskOptions,
        owner: str | None = None,
    ) -> list[TaskRecord]:
        """Queue one task per input, all or none (in order, behind their equals).

        Raises:
            QueueFullError: they do not all fit.
        """
        sizes = [approx_size(kwargs) for kwargs in inputs]
        self._check_room(len(inputs), sum(sizes))
        return [
            self._add(endpoint, kwargs, options, None, None, None, owner, size)
            for kwargs, size in zip(inputs, sizes, strict=True)
        ]

    def _add(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: TaskOptions,
        retry_of: str | None,
        idempotency_key: str | None,
        digest: str | None,
        owner: str | None,
        size: int,
    ) -> TaskRecord:
        self._seq += 1
        record = TaskRecord(
            task_id=new_task_id(),
            endpoint=endpoint,
            kwargs=kwargs,
            options=options,
            created_at=self.clock(),
            retry_of=retry_of,
            seq=self._seq,
            idempotency_key=idempotency_key,
            input_digest=digest,
            owner=owner,
            input_bytes=size,
        )
        self._index(record)
        self._pending += 1
        self._counts.setdefault(endpoint, Counter())[TaskStatus.PENDING] += 1
        self._queue(record)
        self.on_change(record)
        return record

    def _index(self, record: TaskRecord) -> None:
        """Enter a record in the lookups every task is in (ids, keys, listing, deadline)."""
        self._records[record.task_id] = record
        self.held_bytes += record.input_bytes + record.result_bytes
        self._order.append((record.seq, record.task_id))
        if record.idempotency_key is not None:
            self._keys[(record.endpoint, record.owner, record.idempotency_key)] = record.task_id
        deadline = record.queue_deadline()
        if deadline is not None and record.status is TaskStatus.PENDING and not record.attempts:
            heapq.heappush(self._deadlines, (deadline, record.task_id))

    def restore(self, records: Iterable[TaskRecord]) -> None:
        """Load records as they are (a journal's, after recovery decided their states):
        pending ones queue in submission order, finished ones expire at their time."""
        for record in sorted(records, key=lambda r: r.seq):
            record.progress = None  # it described an attempt that is over
            self._index(record)
            self._counts.setdefault(record.endpoint, Counter())[record.status] += 1
            self._seq = max(self._seq, record.seq)
            if record.status is TaskStatus.PENDING:
                self._queue(record, front=record.attempts > 0)
                self._pending += 1
            elif record.status.finished and record.expires_at is not None:
                heapq.heappush(self._expiries, (record.expires_at, record.task_id))
        self._order.sort()

    def pop_next(self, endpoint: str) -> TaskRecord | None:
        """Start the next pending task of ``endpoint`` (now ``in_progress``), if any;
        a task past its queue deadline expires instead of starting."""
        queue = self._queues.get(endpoint)
        now = self.clock()
        while queue:
            record = self._records[queue.peek() or ""]  # _move takes it out of the queue
            if self._overdue(record, now):
                self._expire(record)
                continue
            self._move(record, TaskStatus.IN_PROGRESS)
            return record
        return None

    def succeed(self, task_id: str, result: Result | None = None) -> TaskRecord:
        """Record a successful run and the result it keeps: both are set before the change
        is told, so the journal writes a success with its result, in one row."""
        record = self.get(task_id)
        if record.status is TaskStatus.IN_PROGRESS:
            record.error = None  # before the change is told (journal, webhooks)
            if result is not None:
                self.held_bytes += result.size - record.result_bytes
                record.result, record.result_bytes = result, result.size
        self._move(record, TaskStatus.SUCCESS)
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
            self._queue(record, front=True)
            self._move(record, TaskStatus.PENDING)
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
        return self.submit(
            original.endpoint, original.kwargs, original.options, task_id, owner=original.owner
        )

    def report_progress(
        self, task_id: str, attempt_no: int, fraction: float | None, message: str | None
    ) -> bool:
        """Record a running attempt's progress report; False if it was dropped (the
        attempt is over). Runners send at most one report per ``PROGRESS_INTERVAL_S``
        (see :mod:`raytask.core.progress`), so the manager sees no flood."""
        record = self._records.get(task_id)
        if (
            record is None
            or record.status is not TaskStatus.IN_PROGRESS
            or record.attempts != attempt_no
        ):
            return False
        record.progress = Progress(fraction=fraction, message=message, updated_at=self.clock())
        return True

    def _overdue(self, record: TaskRecord, now: float) -> bool:
        deadline = record.queue_deadline()
        return deadline is not None and record.attempts == 0 and now >= deadline

    def _expire(self, record: TaskRecord) -> None:
        record.error = (
            f"expired: not started within max_queue_s={record.options.max_queue_s:g} s "
            "of its submit"
        )
        self._move(record, TaskStatus.CANCELLED)

    def expire_queued(self) -> list[str]:
        """Expire the pending tasks past their queue deadline; return their ids."""
        now = self.clock()
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, task_id = heapq.heappop(self._deadlines)
            record = self._records.get(task_id)
            if record is not None and record.status is TaskStatus.PENDING:
                if self._overdue(record, now):
                    self._expire(record)
                    expired.append(task_id)
        return expired

    def sweep(self) -> list[str]:
        """Expire overdue queued tasks, and forget finished tasks past their TTL; return
        the ids forgotten.

        Their ids become tombstones, so :meth:`get` answers "expired" rather than
        "not found"; the oldest tombstones go once there are ``max_tombstones``.
        """
        self.expire_queued()
        now = self.clock()
        expired = []
        while self._expiries and self._expiries[0][0] <= now:
            _, task_id = heapq.heappop(self._expiries)
            record = self._records.pop(task_id, None)
            if record is not None:
                self.held_bytes -= record.input_bytes + record.result_bytes
                self._counts[record.endpoint][record.status] -= 1
                self._tombstones[task_id] = record.owner
                key = (record.endpoint, record.owner, record.idempotency_key or "")
                if self._keys.get(key) == task_id:
                    del self._keys[key]
                self._forgotten += 1
                expired.append(task_id)
                self.on_forget(task_id)
        while len(self._tombstones) > self.max_tombstones:
            self._tombstones.popitem(last=False)
        if self._forgotten > 1024 and 2 * self._forgotten > len(self._order):
            self._order = [entry for entry in self._order if entry[1] in self._records]
            self._forgotten = 0
        return expired

    def oldest_pending_age(self, endpoint: str) -> float | None:
        """Seconds the longest-waiting pending task of ``endpoint`` has waited, if any."""
        queue = self._queues.get(endpoint)
        if not queue:
            return None
        oldest = min(self._records[task_id].created_at for task_id in queue.firsts())
        return self.clock() - oldest
