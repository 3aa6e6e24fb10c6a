"""The dispatcher: which queued tasks go to the replicas now, and how attempts end.

Plain Python over the :class:`~raytask.core.table.TaskTable`, with an injectable clock, so
fairness, per-deployment limits, in-flight counts and attempt deadlines are unit-tested
without Ray. The task manager actor sends what :meth:`Dispatcher.take_batches` returns to
Serve and reports back how each :class:`Attempt` ended.

Every attempt ends exactly once (:meth:`~Dispatcher.succeed`, :meth:`~Dispatcher.raised`,
:meth:`~Dispatcher.lost` or a deadline in
:meth:`~Dispatcher.expired`), which frees its slot. An attempt changes its task only while
it still owns it: a task cancelled, or re-queued after a timeout, ignores the late
outcome of the attempt it left behind.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .config import TaskOptions
from .errors import HTTPError
from .record import Result
from .status import TaskStatus
from .table import Clock, TaskRecord, TaskTable


@dataclass(frozen=True)
class EndpointRoute:
    """What the dispatcher needs to know of a task endpoint (plain, picklable data)."""

    name: str
    method: str
    deployment: str
    options: TaskOptions
    max_ongoing_requests: int
    streams: bool = False  # a generator method: its attempts stream chunks
    gpus: float = 0.0  # its deployment's num_gpus (usage: gpu_s = run_s * gpus)


@dataclass(eq=False, slots=True)
class Attempt:
    """One dispatched run of a task; ``attempt_no`` is the task's attempt count at start."""

    task_id: str
    attempt_no: int
    deployment: str
    deadline: float = float("inf")
    ended: bool = field(default=False)


class Dispatcher:
    """Round-robin dispatch across endpoints within each deployment's limit.

    Args:
        table: the task table whose queues it drains.
        clock: monotonic seconds, for attempt deadlines (``time.monotonic`` by default).
    """

    def __init__(self, table: TaskTable, clock: Clock = time.monotonic) -> None:
        self.table = table
        self.clock = clock
        self.routes: dict[str, EndpointRoute] = {}
        self.max_in_flight: int | None = None
        self._capacity: dict[str, int] = {}
        self._in_flight: Counter[str] = Counter()
        self._current: dict[str, Attempt] = {}
        self._deadlines: list[tuple[float, int, Attempt]] = []
        self._seq = itertools.count()

    def configure(self, routes: list[EndpointRoute], max_in_flight: int | None) -> None:
        """Take (new) endpoints and the app-wide in-flight cap."""
        self.routes = {r.name: r for r in routes}
        self.table.gpus = {r.name: r.gpus for r in routes}
        self.max_in_flight = max_in_flight
        for route in routes:
            self._capacity.setdefault(route.deployment, route.max_ongoing_requests)

    # -- limits ----------------------------------------------------------------

    @property
    def deployments(self) -> list[str]:
        """Every model deployment that has task endpoints."""
        return list(self._capacity)

    def set_running_replicas(self, deployment: str, running: int) -> None:
        """Serve reported ``running`` replicas: the limit becomes that many replicas' worth.

        With none running (starting, or scaled to zero) one replica's worth still goes
        out, so Serve sees the demand and brings one up.
        """
        per_replica = next(
            (r.max_ongoing_requests for r in self.routes.values() if r.deployment == deployment),
            None,
        )
        if per_replica is not None:
            self._capacity[deployment] = max(1, running) * per_replica

    def limit(self, deployment: str) -> int:
        """Most attempts that may run on ``deployment`` at once."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return self._capacity.get(deployment, 1)

    def in_flight(self, deployment: str) -> int:
        """Attempts running on ``deployment`` now."""
        return self._in_flight[deployment]

    def current(self, task_id: str) -> Attempt | None:
        """The attempt running ``task_id``, if one is."""
        return self._current.get(task_id)

    # -- starting ----------------------------------------------------------------

    def take(self) -> list[tuple[Attempt, TaskRecord, EndpointRoute]]:
        """Start every queued task that fits, one endpoint at a time in turn.

        Taking one task per endpoint per pass keeps one busy endpoint from starving the
        others that share its deployment. Each task returned is now ``in_progress``.
        """
        started = []
        progress = True
        while progress:
            progress = False
            for route in self.routes.values():
                deployment = route.deployment
                if self._in_flight[deployment] >= self.limit(deployment):
                    continue
                record = self.table.pop_next(route.name)
                if record is None:
                    continue
                attempt = Attempt(record.task_id, record.attempts, deployment)
                self._current[record.task_id] = attempt
                self._in_flight[deployment] += 1
                started.append((attempt, record, route))
                progress = True
        return started

    def take_batches(self, max_batch: int) -> list[list[tuple[Attempt, TaskRecord, EndpointRoute]]]:
        """:meth:`take`, as batches of one deployment each, never waiting to fill one.

        A batch holds at most ``max_batch`` tasks and one replica's ``max_ongoing_requests``;
        the tasks of a deployment are spread over as many batches as it has running
        replicas, so Serve can give each replica its share.
        """
        by_deployment: dict[str, list[tuple[Attempt, TaskRecord, EndpointRoute]]] = {}
        for started in self.take():
            by_deployment.setdefault(started[0].deployment, []).append(started)
        batches = []
        for deployment, started in by_deployment.items():
            per_replica = min(route.max_ongoing_requests for _, _, route in started)
            replicas = max(1, self._capacity.get(deployment, per_replica) // per_replica)
            spread = -(-len(started) // replicas)
            size = max(1, min(max_batch, per_replica, spread))
            batches.extend(started[i : i + size] for i in range(0, len(started), size))
        return batches

    def arm(self, attempt: Attempt, timeout_s: float) -> None:
        """Start ``attempt``'s clock: it times out ``timeout_s`` from now."""
        if attempt.ended:
            return
        attempt.deadline = self.clock() + timeout_s
        heapq.heappush(self._deadlines, (attempt.deadline, next(self._seq), attempt))

    # -- ending ----------------------------------------------------------------

    def owner(self, attempt: Attempt) -> TaskRecord | None:
        """The attempt's task if this attempt still owns it (not cancelled or re-queued)."""
        try:
            record = self.table.get(attempt.task_id)
        except HTTPError:
            return None
        if record.status is TaskStatus.IN_PROGRESS and record.attempts == attempt.attempt_no:
            return record
        return None

    def succeed(self, attempt: Attempt, result: Result | None = None) -> bool:
        """The attempt returned ``result``; True if the task took it (else it is dropped)."""
        if attempt.ended:
            return False
        took = self.owner(attempt) is not None
        if took:
            self.table.succeed(attempt.task_id, result)
        self._end(attempt)
        return took

    def raised(self, attempt: Attempt, error: str) -> None:
        """The method raised: final, unless the task's options retry exceptions."""
        record = self.owner(attempt)
        retry = record is not None and record.options.retry_exceptions
        self._fail(attempt, error, retryable=retry)

    def refused(self, attempt: Attempt, reason: str) -> None:
        """The attempt broke a limit of the app (a stream too large): final."""
        self._fail(attempt, reason, retryable=False)

    def lost(self, attempt: Attempt, reason: str) -> None:
        """The attempt was lost (replica died, request cancelled or failed): re-queue it
        while the task has attempts left."""
        self._fail(attempt, reason, retryable=True)

    def next_deadline_in(self) -> float | None:
        """Seconds until the earliest deadline of a running attempt (None: none runs)."""
        while self._deadlines and self._deadlines[0][2].ended:
            heapq.heappop(self._deadlines)
        if not self._deadlines:
            return None
        return max(0.0, self._deadlines[0][0] - self.clock())

    def expired(self) -> list[Attempt]:
        """End the attempts past their deadline as timed out (re-queued while attempts
        remain); returns them so the caller can stop them on their replicas."""
        now = self.clock()
        timed_out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, attempt = heapq.heappop(self._deadlines)
            if attempt.ended:
                continue
            record = self.owner(attempt)
            timeout_s = record.options.timeout_s if record else 0.0
            self.lost(attempt, f"timed out after {timeout_s:g} s")
            timed_out.append(attempt)
        return timed_out

    def _fail(self, attempt: Attempt, error: str, retryable: bool) -> None:
        if attempt.ended:
            return
        if self.owner(attempt) is not None:
            self.table.fail(attempt.task_id, error, retryable=retryable)
        self._end(attempt)

    def _end(self, attempt: Attempt) -> None:
        if attempt.ended:
            return
        attempt.ended = True
        if self._current.get(attempt.task_id) is attempt:
            del self._current[attempt.task_id]
        self._in_flight[attempt.deployment] -= 1

    # -- numbers ---------------------------------------------------------------

    def depth(self) -> dict[str, dict[str, int]]:
        """Per model deployment: tasks pending and in flight (for autoscaling)."""
        depths: dict[str, dict[str, int]] = {}
        for route in self.routes.values():
            numbers = depths.setdefault(
                route.deployment, {"pending": 0, "in_flight": self._in_flight[route.deployment]}
            )
            numbers["pending"] += self.table.pending_by_endpoint(route.name)
        return depths

    def snapshot(self, app_name: str) -> dict[str, Any]:
        """The ``GET /queue`` answer: per endpoint counts by state and the oldest pending
        age; per deployment tasks in flight and the dispatch limit."""
        return {
            "app": app_name,
            "endpoints": self.table.endpoint_stats(self.routes),
            "deployments": {
                d: {"in_flight": self._in_flight[d], "limit": self.limit(d)} for d in self._capacity
            },
        }
