"""The task table's records and the lookups over them, and the queries they answer.

:class:`TaskIndex` holds every task by id with the indexes kept beside them (the pending
queues, the listing order, idempotency keys, tombstones of expired ids, counts per state);
:class:`~raytask.core.table.TaskTable` adds every change on top. Plain Python, no Ray.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .errors import (
    TaskCancelledError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotCompletedError,
    TaskNotFoundError,
)
from .queue import PendingQueue
from .record import TaskRecord
from .state import TaskState
from .status import TaskStatus
from .tenants import Quotas
from .usage import OUTCOMES, Usage
from .wire import DEFAULT_LIST_LIMIT

Clock = Callable[[], float]


def _ignore(_: Any) -> None:
    pass


LIST_SCAN = 10_000
"""Tasks one listing page looks at beyond its ``limit`` before it answers with what it
found and a cursor (so a filter that matches little cannot make a page scan everything)."""


class TaskIndex:
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
        on_change: called with each record created or changed (the task service
            journals it, fires its webhook, wakes its waiters).
        on_forget: called with each id forgotten at its TTL (the journal drops its row).
    """

    def __init__(
        self,
        max_queue_size: int = 100_000,
        retry_after_s: float = 1.0,
        clock: Clock = time.time,
        max_tombstones: int = 1_000_000,
        max_tasks: int = 1_000_000,
        max_task_bytes: int = 8 * 1024**3,
        on_change: Callable[[TaskRecord], None] = _ignore,
        on_forget: Callable[[str], None] = _ignore,
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
        self._results_held = 0  # records with a result
        self._counts: dict[str, Counter[TaskStatus]] = {}
        self._tombstones: OrderedDict[str, str | None] = OrderedDict()  # id -> owner
        self._expiries: list[tuple[float, str]] = []  # a heap of (expires_at, task_id)
        self._deadlines: list[tuple[float, str]] = []  # a heap of (queue deadline, task_id)
        # (endpoint, owner, idempotency key) -> id: tenants never share a key
        self._keys: dict[tuple[str, str | None, str], str] = {}
        self._order: list[tuple[int, str]] = []  # (seq, id) ascending: listings, newest first
        self._forgotten = 0  # entries of _order whose task is gone
        self._seq = 0
        self.quotas = Quotas(clock)  # per tenant: queued and running counts, buckets
        self.usage = Usage()  # per tenant, endpoint and hour: what finished tasks cost
        self.gpus: dict[str, float] = {}  # endpoint -> its deployment's num_gpus
        self.on_change = on_change
        self.on_forget = on_forget

    # -- reading ---------------------------------------------------------------

    def find(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id`` as it is, if the table holds it."""
        return self._records.get(task_id)

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
        return self.answer(self.get(task_id))

    def answer(self, record: TaskRecord) -> TaskState:
        """The status answer of a record the table holds, as of now."""
        return record.state(self.position(record), self.clock())

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
            f"task {task_id} is not completed yet (status: {record.status.value})"
        )  # each caller's tier adds how to wait for it (a query parameter, a method)

    @property
    def pending_count(self) -> int:
        """Tasks waiting in the queues."""
        return self._pending

    def __len__(self) -> int:
        return len(self._records)

    @property
    def results_held(self) -> int:
        """How many results the table keeps."""
        return self._results_held

    def _overdue(self, record: TaskRecord, now: float) -> bool:
        deadline = record.queue_deadline()
        return deadline is not None and record.attempts == 0 and now >= deadline

    def _expire(self, record: TaskRecord) -> None:
        """Cancel a queued task past its deadline: :meth:`get` does on reading it, and
        :class:`~raytask.core.table.TaskTable` makes the change."""
        raise NotImplementedError

    def oldest_pending_age(self, endpoint: str) -> float | None:
        """Seconds the longest-waiting pending task of ``endpoint`` has waited, if any."""
        queue = self._queues.get(endpoint)
        if not queue:
            return None
        oldest = min(self._records[task_id].created_at for task_id in queue.firsts())
        return self.clock() - oldest

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

    def tenant_stats(self) -> dict[str, dict[str, Any]]:
        """Per tenant with tasks queued, running or finished: ``pending`` and ``running``
        now, and per endpoint the finished tasks by state, ``run_s`` and ``gpu_s`` (the
        ``raytask_tenant_*`` counters)."""
        quotas, usage = self.quotas, self.usage
        stats: dict[str, dict[str, Any]] = {}
        for tenant in {*quotas.pending, *quotas.running, *(k[0] for k in usage.run_total)}:
            stats[tenant] = {
                "pending": quotas.pending[tenant],
                "running": quotas.running[tenant],
                "endpoints": {},
            }
        for (tenant, endpoint), run_s in usage.run_total.items():
            stats[tenant]["endpoints"][endpoint] = {
                **{
                    status.value: usage.tasks_total[(tenant, endpoint, outcome)]
                    for status, outcome in OUTCOMES.items()
                },
                "run_s": round(run_s, 6),
                "gpu_s": round(usage.gpu_total[(tenant, endpoint)], 6),
            }
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
        limit: int = DEFAULT_LIST_LIMIT,
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
