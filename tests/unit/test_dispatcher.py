"""The dispatcher: fairness, limits, in-flight counts and deadlines on a fake clock."""

from __future__ import annotations

import pytest

from raytask.core.config import TaskOptions
from raytask.core.dispatcher import Dispatcher, EndpointRoute
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable

from ..support import FakeClock


def route(name: str, deployment: str = "Model", per_replica: int = 2, **options: object):
    return EndpointRoute(name, name, deployment, TaskOptions(**options), per_replica)


@pytest.fixture
def table(clock: FakeClock) -> TaskTable:
    return TaskTable(clock=clock)


def dispatcher(table: TaskTable, clock: FakeClock, *routes: EndpointRoute) -> Dispatcher:
    d = Dispatcher(table, clock=clock)
    d.configure(list(routes), max_in_flight=None)
    return d


def queue(table: TaskTable, endpoint: EndpointRoute | str, n: int) -> list[str]:
    """Submit ``n`` tasks to an endpoint (with a route's options, as the manager does)."""
    name, options = (
        (endpoint, TaskOptions())
        if isinstance(endpoint, str)
        else (endpoint.name, endpoint.options)
    )
    return [table.submit(name, {"i": i}, options).task_id for i in range(n)]


def test_endpoints_sharing_a_deployment_take_turns(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=4), route("b", per_replica=4))
    a = queue(table, "a", 10)
    b = queue(table, "b", 2)
    started = [record.task_id for _, record, _ in d.take()]
    # one each in turn while both have work, within the deployment's limit of 4
    assert started == [a[0], b[0], a[1], b[1]]
    assert d.in_flight("Model") == 4 and d.take() == []


def test_each_deployment_has_its_own_limit(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", "A", per_replica=1), route("b", "B", per_replica=3))
    queue(table, "a", 5)
    queue(table, "b", 5)
    started = d.take()
    assert sum(1 for attempt, _, _ in started if attempt.deployment == "A") == 1
    assert sum(1 for attempt, _, _ in started if attempt.deployment == "B") == 3
    assert all(record.status is TaskStatus.IN_PROGRESS for _, record, _ in started)


def test_running_replicas_scale_the_limit(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=2))
    assert d.limit("Model") == 2
    d.set_running_replicas("Model", 3)
    assert d.limit("Model") == 6
    d.set_running_replicas("Model", 0)  # scaled to zero: one replica's worth still goes
    assert d.limit("Model") == 2
    d.set_running_replicas("Unknown", 5)  # not one of ours: ignored
    assert d.deployments == ["Model"]


def test_max_in_flight_overrides_the_capacity(table: TaskTable, clock: FakeClock) -> None:
    d = Dispatcher(table, clock=clock)
    d.configure([route("a", per_replica=8)], max_in_flight=1)
    queue(table, "a", 3)
    assert len(d.take()) == 1 and d.limit("Model") == 1


def test_an_ended_attempt_frees_its_slot_once(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=1))
    first, second = queue(table, "a", 2)
    ((attempt, _, _),) = d.take()
    assert d.take() == []
    assert d.succeed(attempt) is True
    assert d.succeed(attempt) is False  # ending twice changes nothing
    assert d.in_flight("Model") == 0
    assert table.get(first).status is TaskStatus.SUCCESS
    ((attempt, record, _),) = d.take()
    assert record.task_id == second and d.current(second) is attempt


def test_a_superseded_attempt_cannot_change_its_task(table: TaskTable, clock: FakeClock) -> None:
    retried = route("a", per_replica=1, max_attempts=3)
    d = dispatcher(table, clock, retried)
    (task_id,) = queue(table, retried, 1)
    ((first, _, _),) = d.take()
    d.lost(first, "replica died")  # back in the queue, attempt 2 takes it
    ((second, _, _),) = d.take()
    assert d.succeed(first) is False  # a late result of attempt 1
    assert table.get(task_id).status is TaskStatus.IN_PROGRESS
    assert d.succeed(second) is True


def test_a_cancelled_task_ignores_its_attempt(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a"))
    (task_id,) = queue(table, "a", 1)
    ((attempt, _, _),) = d.take()
    table.cancel(task_id)
    assert d.succeed(attempt) is False
    assert table.get(task_id).status is TaskStatus.CANCELLED and d.in_flight("Model") == 0


def test_exceptions_are_final_unless_the_task_retries_them(
    table: TaskTable, clock: FakeClock
) -> None:
    retrying = route("r", retry_exceptions=True)
    d = dispatcher(table, clock, route("a"), retrying)
    (final,) = queue(table, "a", 1)
    (retried,) = queue(table, retrying, 1)
    attempts = {record.task_id: attempt for attempt, record, _ in d.take()}
    d.raised(attempts[final], "ValueError: no")
    d.raised(attempts[retried], "ValueError: flaky")
    assert table.get(final).status is TaskStatus.FAILURE
    assert table.get(retried).status is TaskStatus.PENDING


def test_deadlines_expire_on_the_clock(table: TaskTable, clock: FakeClock) -> None:
    timed = route("a", per_replica=4, timeout_s=10, max_attempts=2)
    d = dispatcher(table, clock, timed)
    slow, fast = queue(table, timed, 2)
    attempts = {record.task_id: attempt for attempt, record, _ in d.take()}
    d.arm(attempts[slow], 10)
    clock.advance(5)
    d.arm(attempts[fast], 10)
    d.succeed(attempts[fast])
    clock.advance(5)
    assert d.expired() == [attempts[slow]]
    record = table.get(slow)
    assert record.status is TaskStatus.PENDING and record.error == "timed out after 10 s"
    clock.advance(100)
    assert d.expired() == []  # the finished one never expires
    ((again, _, _),) = d.take()
    d.arm(again, 10)
    clock.advance(10)
    assert d.expired() == [again]
    assert table.get(slow).status is TaskStatus.FAILURE  # attempts used up
    assert "gave up after 2 attempts" in (table.get(slow).error or "")


def test_an_unarmed_attempt_never_expires(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a"))
    queue(table, "a", 1)
    d.take()
    clock.advance(1e9)
    assert d.expired() == []


def test_depth_and_snapshot(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=1), route("b", per_replica=1))
    queue(table, "a", 3)
    queue(table, "b", 1)
    d.take()
    assert d.depth() == {"Model": {"pending": 3, "in_flight": 1}}
    snapshot = d.snapshot("app")
    assert snapshot["deployments"] == {"Model": {"in_flight": 1, "limit": 1}}
    assert snapshot["endpoints"]["a"]["pending"] + snapshot["endpoints"]["b"]["pending"] == 3


# -- batches --------------------------------------------------------------------------------


def ids(batches: list) -> list[list[str]]:
    return [[record.task_id for _, record, _ in batch] for batch in batches]


def test_batches_hold_one_deployment_each_up_to_the_size(
    table: TaskTable, clock: FakeClock
) -> None:
    d = dispatcher(table, clock, route("a", per_replica=8), route("b", "Other", per_replica=8))
    a = queue(table, "a", 7)
    b = queue(table, "b", 2)
    batches = d.take_batches(max_batch=3)
    assert sorted(ids(batches)) == sorted([a[0:3], a[3:6], a[6:7], b])


def test_a_batch_never_holds_more_than_one_replica_may_run(
    table: TaskTable, clock: FakeClock
) -> None:
    d = dispatcher(table, clock, route("a", per_replica=2))
    d.set_running_replicas("Model", 3)  # room for 6 in flight
    a = queue(table, "a", 6)
    assert ids(d.take_batches(max_batch=64)) == [a[0:2], a[2:4], a[4:6]]


def test_batches_spread_over_running_replicas(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=64))
    d.set_running_replicas("Model", 2)
    a = queue(table, "a", 10)
    assert ids(d.take_batches(max_batch=64)) == [a[0:5], a[5:10]]


def test_an_idle_dispatcher_sends_what_is_there(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=64))
    (only,) = queue(table, "a", 1)
    assert ids(d.take_batches(max_batch=64)) == [[only]]
    assert d.take_batches(max_batch=64) == []


def test_next_deadline_in_skips_ended_attempts(table: TaskTable, clock: FakeClock) -> None:
    d = dispatcher(table, clock, route("a", per_replica=4))
    queue(table, "a", 2)
    assert d.next_deadline_in() is None  # nothing runs
    (first, _, _), (second, _, _) = d.take()
    d.arm(first, 5)
    d.arm(second, 30)
    clock.advance(2)
    assert d.next_deadline_in() == 3
    d.succeed(first)
    assert d.next_deadline_in() == 28
    d.succeed(second)
    assert d.next_deadline_in() is None


def test_an_uneven_spread_rounds_up_so_no_replica_gets_a_third_batch(
    table: TaskTable, clock: FakeClock
) -> None:
    d = dispatcher(table, clock, route("a", per_replica=64))
    d.set_running_replicas("Model", 2)
    a = queue(table, "a", 5)
    assert ids(d.take_batches(max_batch=64)) == [a[0:3], a[3:5]]  # 3 + 2, not 2 + 2 + 1
