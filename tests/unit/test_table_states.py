"""Property-based tests of the task table: no sequence of operations breaks it.

A hypothesis state machine submits, starts, finishes, fails, cancels, retries and expires
tasks in any order, on a fake clock, and after every step checks the table against a
plain model of what each task's state must be, and the table's own counters against a
recount of its records.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raytask.core.config import TaskOptions
from raytask.core.errors import (
    InvalidTransitionError,
    QueueFullError,
    TaskConflictError,
    TaskExpiredError,
    TaskNotFoundError,
)
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable

from ..support import FakeClock

ENDPOINTS = ("a", "b")
MAX_QUEUE = 5
FINISHED = {TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED}


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.table = TaskTable(MAX_QUEUE, clock=self.clock)
        self.status: dict[str, TaskStatus] = {}  # the model: what each live task must be
        self.queues: dict[str, list[str]] = {e: [] for e in ENDPOINTS}  # pending, in order
        self.expires: dict[str, float] = {}
        self.expired: dict[str, None] = {}  # an ordered set
        self.attempts: Counter[str] = Counter()
        self.max_attempts: dict[str, int] = {}

    def _ids(self, *statuses: TaskStatus) -> list[str]:
        # In submission order: task ids are random, so sorting them would make hypothesis'
        # draws (by position) pick other tasks on a replay.
        return [t for t, s in self.status.items() if s in statuses]

    def _finish(self, task_id: str, status: TaskStatus) -> None:
        self.status[task_id] = status
        record = self.table.get(task_id)
        self.expires[task_id] = self.clock() + record.options.ttl_s

    # -- rules -------------------------------------------------------------------

    @rule(
        endpoint=st.sampled_from(ENDPOINTS),
        ttl=st.sampled_from([1.0, 5.0, 60.0]),
        attempts=st.integers(1, 3),
    )
    def submit(self, endpoint: str, ttl: float, attempts: int) -> None:
        options = TaskOptions(ttl_s=ttl, max_attempts=attempts)
        pending = len(self._ids(TaskStatus.PENDING))
        if pending >= MAX_QUEUE:
            with pytest.raises(QueueFullError):
                self.table.submit(endpoint, {}, options)
            return
        task_id = self.table.submit(endpoint, {}, options).task_id
        assert task_id not in self.status and task_id not in self.expired
        self.status[task_id] = TaskStatus.PENDING
        self.queues[endpoint].append(task_id)
        self.max_attempts[task_id] = attempts

    @rule(endpoint=st.sampled_from(ENDPOINTS))
    def pop_next(self, endpoint: str) -> None:
        record = self.table.pop_next(endpoint)
        queue = self.queues[endpoint]
        if not queue:
            assert record is None
            return
        assert record is not None and record.task_id == queue.pop(0)  # FIFO
        self.status[record.task_id] = TaskStatus.IN_PROGRESS
        self.attempts[record.task_id] += 1

    @precondition(lambda self: self._ids(TaskStatus.IN_PROGRESS))
    @rule(data=st.data())
    def succeed(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._ids(TaskStatus.IN_PROGRESS)))
        self.table.succeed(task_id)
        self._finish(task_id, TaskStatus.SUCCESS)

    @precondition(lambda self: self._ids(TaskStatus.IN_PROGRESS))
    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data: st.DataObject, retryable: bool) -> None:
        task_id = data.draw(st.sampled_from(self._ids(TaskStatus.IN_PROGRESS)))
        record = self.table.fail(task_id, "boom \ud800", retryable=retryable)
        assert record.error is not None and record.error.encode()  # always encodable
        if retryable and self.attempts[task_id] < self.max_attempts[task_id]:
            self.status[task_id] = TaskStatus.PENDING
            self.queues[record.endpoint].insert(0, task_id)  # back at the front
        else:
            self._finish(task_id, TaskStatus.FAILURE)

    @precondition(lambda self: self.status or self.expired)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from([*self.status, *self.expired]))
        if task_id in self.expired:
            with pytest.raises(TaskExpiredError):
                self.table.cancel(task_id)
        elif self.status[task_id] in FINISHED:
            with pytest.raises(TaskConflictError):
                self.table.cancel(task_id)
        else:
            previous = self.table.cancel(task_id)
            assert previous is self.status[task_id]
            if previous is TaskStatus.PENDING:
                endpoint = self.table.get(task_id).endpoint
                self.queues[endpoint].remove(task_id)
            self._finish(task_id, TaskStatus.CANCELLED)

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(list(self.status)))
        if self.status[task_id] not in FINISHED:
            with pytest.raises(TaskConflictError):
                self.table.retry(task_id)
            return
        if len(self._ids(TaskStatus.PENDING)) >= MAX_QUEUE:
            with pytest.raises(QueueFullError):
                self.table.retry(task_id)
            return
        original = self.table.get(task_id)
        record = self.table.retry(task_id)
        assert record.retry_of == task_id and record.kwargs == original.kwargs
        self.status[record.task_id] = TaskStatus.PENDING
        self.queues[record.endpoint].append(record.task_id)
        self.max_attempts[record.task_id] = record.options.max_attempts

    @precondition(lambda self: self._ids(TaskStatus.PENDING))
    @rule(data=st.data())
    def illegal_moves_are_refused(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._ids(TaskStatus.PENDING)))
        with pytest.raises(InvalidTransitionError):
            self.table.succeed(task_id)  # a pending task never ran

    @rule(seconds=st.sampled_from([0.5, 2.0, 30.0, 120.0]))
    def time_passes_and_the_sweep_runs(self, seconds: float) -> None:
        self.clock.advance(seconds)
        swept = set(self.table.sweep())
        due = [t for t, at in self.expires.items() if at <= self.clock()]
        assert swept == set(due)
        for task_id in due:
            del self.status[task_id], self.expires[task_id]
        self.expired.update(dict.fromkeys(due))

    # -- invariants --------------------------------------------------------------

    @invariant()
    def every_task_is_what_the_model_says(self) -> None:
        assert len(self.table) == len(self.status)
        for task_id, status in self.status.items():
            record = self.table.get(task_id)
            assert record.status is status
            assert record.attempts <= record.options.max_attempts
            assert (record.executed_at is None) == (record.attempts == 0)
            if status in FINISHED:
                assert record.expires_at == record.completed_at + record.options.ttl_s
                assert record.state().model_dump_json()  # every time field formats
        for task_id in self.expired:
            with pytest.raises(TaskExpiredError):
                self.table.get(task_id)
        with pytest.raises(TaskNotFoundError):
            self.table.get("f" * 32)

    @invariant()
    def the_counters_match_a_recount(self) -> None:
        pending = self._ids(TaskStatus.PENDING)
        assert self.table.pending_count == len(pending)
        counts = self.table.counts()
        for endpoint in ENDPOINTS:
            recount = Counter(
                s for t, s in self.status.items() if self.table.get(t).endpoint == endpoint
            )
            for status in TaskStatus:
                assert counts.get(endpoint, {}).get(status.value, 0) == recount[status]
            assert self.table.pending_by_endpoint(endpoint) == len(self.queues[endpoint])
            assert self.table.has_pending(endpoint) == bool(self.queues[endpoint])


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(
    max_examples=200,
    stateful_step_count=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
