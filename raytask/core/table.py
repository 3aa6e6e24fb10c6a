"""The task table: records, the pending queues, attempts and TTL bookkeeping.

Plain Python with an injectable clock and no Ray or HTTP import, so every rule here is
unit-tested in milliseconds. :class:`~raytask.server.service.TaskService` runs the
commands over it.

Its records are :class:`~raytask.core.record.TaskRecord` (plain data, journaled and
reloaded as they are).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .chunks import ChunkLog
from .config import TaskOptions
from .errors import (
    QueueFullError,
    TaskConflictError,
)
from .index import LIST_SCAN, Clock, TaskIndex
from .queue import ANONYMOUS, PendingQueue
from .record import Result, TaskRecord, approx_size, input_digest, new_task_id
from .state import Progress
from .status import TaskStatus

__all__ = [
    "LIST_SCAN",
    "Clock",
    "TaskIndex",
    "TaskRecord",
    "TaskTable",
    "input_digest",
    "new_task_id",
]


class TaskTable(TaskIndex):
    """Tasks by id, priority queues per endpoint, queue deadlines, keys and expiry: the
    queries of :class:`TaskIndex` and every change (its arguments are the limits)."""

    # -- changing --------------------------------------------------------------

    def _move(self, record: TaskRecord, target: TaskStatus) -> None:
        """Every status change of a held task: :meth:`TaskRecord.move` (the state machine)
        and the table's counts, queues and expiries, then ``on_change``."""
        previous = record.status
        record.move(target, self.clock())
        counter = self._counts[record.endpoint]
        counter[previous] -= 1
        counter[target] += 1
        self.quotas.moved(record.tenant, previous, target)
        if previous is TaskStatus.PENDING:
            self._pending -= 1
            taken = target is TaskStatus.IN_PROGRESS
            self._queues[record.endpoint].remove(record.task_id, taken)
        if target is TaskStatus.PENDING:
            self._pending += 1
        elif target.finished:
            heapq.heappush(self._expiries, (record.expires_at or 0.0, record.task_id))
            self.usage.finished(record)
        self.on_change(record)

    def _queue(self, record: TaskRecord, front: bool = False) -> None:
        queue = self._queues.get(record.endpoint)
        if queue is None:
            queue = self._queues[record.endpoint] = PendingQueue()
        tenant = record.tenant
        queue.push(record.task_id, record.options.priority, front, tenant, self.quotas.step(tenant))

    def _check_room(self, count: int, size: int, tenant: str, job: str | None = None) -> None:
        """Refuse ``count`` more tasks of ``size`` input bytes past any of the limits:
        the app's, then ``tenant``'s quotas (a batch job's lines: not its submit rate)."""
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
                f"the app holds its max_task_bytes={self.max_task_bytes} bytes of task inputs, "
                "results and streamed chunks (finished tasks count until their TTL ends); "
                "retry later"
            )
        self.quotas.admit(tenant, count, self.retry_after_s, rate=job is None)

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
        job: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> TaskRecord:
        """Queue a new task behind the pending ones of its priority and tenant (``owner``:
        who may see it, with token isolation; ``job``: the batch job it is a line of).

        With an ``idempotency_key`` already used at ``endpoint`` by a task the table still
        holds, nothing is queued: that task comes back if its inputs are these.

        Raises:
            QueueFullError: ``max_queue_size`` tasks are already pending, or a quota of
                the tenant's is used up (its subclasses say which).
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
        self._check_room(1, size, tenant, job)
        return self._add(
            endpoint, kwargs, options, retry_of, idempotency_key, digest, owner, size, job, tenant
        )

    def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: TaskOptions,
        owner: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> list[TaskRecord]:
        """Queue one task per input, all or none (in order, behind their equals).

        Raises:
            QueueFullError: they do not all fit.
        """
        sizes = [approx_size(kwargs) for kwargs in inputs]
        self._check_room(len(inputs), sum(sizes), tenant)
        return [
            self._add(endpoint, kwargs, options, None, None, None, owner, size, None, tenant)
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
        job: str | None,
        tenant: str,
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
            job=job,
            tenant=tenant,
            gpus=self.gpus.get(endpoint, 0.0),
        )
        record.changed_at = record.created_at
        self._index(record)
        self._pending += 1
        self.quotas.moved(tenant, None, TaskStatus.PENDING)
        self._counts.setdefault(endpoint, Counter())[TaskStatus.PENDING] += 1
        self._queue(record)
        self.on_change(record)
        return record

    def _index(self, record: TaskRecord) -> None:
        """Enter a record in the lookups every task is in (ids, keys, listing, deadline)."""
        self._records[record.task_id] = record
        self.held_bytes += record.held_bytes()
        self._results_held += record.result is not None
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
            self.quotas.moved(record.tenant, None, record.status)
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
            task_id = queue.peek(self.quotas.capped)  # tenants at max_running wait
            if task_id is None:
                return None
            record = self._records[task_id]  # _move takes it out of the queue
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
                self._results_held += record.result is None
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
            original.endpoint,
            original.kwargs,
            original.options,
            task_id,
            owner=original.owner,
            tenant=original.tenant,
        )

    def _running(self, task_id: str, attempt_no: int) -> TaskRecord | None:
        """The task's record while ``attempt_no`` is its running attempt, else None (a
        report or chunks of an attempt that is over are dropped)."""
        record = self._records.get(task_id)
        if record is None or record.status is not TaskStatus.IN_PROGRESS:
            return None
        return record if record.attempts == attempt_no else None

    def report_progress(
        self, task_id: str, attempt_no: int, fraction: float | None, message: str | None
    ) -> bool:
        """Record a running attempt's progress report; False if it was dropped (the
        attempt is over). Runners send at most one report per ``PROGRESS_INTERVAL_S``
        (see :mod:`raytask.core.progress`), so the manager sees no flood."""
        record = self._running(task_id, attempt_no)
        if record is None:
            return False
        record.progress = Progress(fraction=fraction, message=message, updated_at=self.clock())
        return True

    def add_chunks(self, task_id: str, attempt_no: int, encoded: list[bytes]) -> bool:
        """Keep chunks (each one's JSON) a running generator attempt streamed (an empty
        list starts its stream); False if they were dropped (the attempt is over). The
        first chunks of a new attempt replace those of the lost one."""
        record = self._running(task_id, attempt_no)
        if record is None:
            return False
        if record.chunks is None or record.chunks.attempt != attempt_no:
            self.held_bytes -= record.chunks.nbytes if record.chunks is not None else 0
            record.chunks = ChunkLog(attempt_no)
        self.held_bytes += sum(map(len, encoded))  # chunks count against max_task_bytes
        record.chunks.extend(encoded)
        self.on_change(record)
        return True

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

    def _drop(self, record: TaskRecord) -> None:
        """Forget a finished task: its record, result, counts and idempotency key, then
        ``on_forget`` (the journal drops its row)."""
        del self._records[record.task_id]
        self.held_bytes -= record.held_bytes()
        self._results_held -= record.result is not None
        self._counts[record.endpoint][record.status] -= 1
        key = (record.endpoint, record.owner, record.idempotency_key or "")
        if self._keys.get(key) == record.task_id:
            del self._keys[key]
        self._forgotten += 1
        if record.job is None:  # a batch job's lines were never journaled
            self.on_forget(record.task_id)

    def delete(self, task_ids: Iterable[str]) -> list[str]:
        """Forget the finished tasks among ``task_ids`` now, with no tombstone (their ids
        answer "not found" after); return the ids deleted. Unknown and unfinished ones are
        left as they are."""
        deleted = []
        for task_id in task_ids:
            record = self._records.get(task_id)
            if record is not None and record.status.finished:
                self._drop(record)
                deleted.append(task_id)
        if len(self._expiries) > 2 * len(self._records) + 1024:
            # A deleted task's expiry stays in the heap until its TTL: drop them all at
            # once when they are most of it (a batch job deletes every line it writes).
            self._expiries = [
                (at, task_id)
                for at, task_id in self._expiries
                if task_id in self._records and self._records[task_id].expires_at == at
            ]
            heapq.heapify(self._expiries)
        return deleted

    def finished_before(
        self, status: TaskStatus, before: float, endpoint: str | None = None
    ) -> list[str]:
        """Ids of the tasks in ``status`` (a finished one) that completed at or before
        ``before`` (of ``endpoint``, or of every endpoint)."""
        return [
            r.task_id
            for r in self._records.values()
            if r.status is status
            and (r.completed_at or 0.0) <= before
            and (endpoint is None or r.endpoint == endpoint)
        ]

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
            record = self._records.get(task_id)
            # (a record moved since: not finished, or finished again with a later expiry)
            if record is not None and record.status.finished and (record.expires_at or 0.0) <= now:
                self._drop(record)
                self._tombstones[task_id] = record.owner
                expired.append(task_id)
        while len(self._tombstones) > self.max_tombstones:
            self._tombstones.popitem(last=False)
        if self._forgotten > 1024 and 2 * self._forgotten > len(self._order):
            self._order = [entry for entry in self._order if entry[1] in self._records]
            self._forgotten = 0
        return expired
