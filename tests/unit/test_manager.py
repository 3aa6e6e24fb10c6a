"""The task manager shell, through its public methods, with Serve faked at its one seam.

``FakeCalls`` replaces :class:`ReplicaCalls`' I/O (sending, polling and fetching results,
reading replicas) but keeps its real ``assigned`` and ``cancel``, which go through the
Serve-compat module to Serve's real ``DeploymentResponse``: each response here is the real
class, built offline the way a router in the caller's loop builds it (the manager's
setting). Only the replica's side (``ReplicaResult``) is fake.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError
from ray.serve._private.common import RequestMetadata
from ray.serve.handle import DeploymentResponse

from raytask.core.config import AppConfig, SubmitOptions, TaskOptions
from raytask.core.dispatcher import EndpointRoute
from raytask.core.errors import HTTPError, TaskNotFoundError
from raytask.core.state import TaskState
from raytask.core.status import TaskStatus
from raytask.server.calls import ReplicaCalls
from raytask.server.manager import TaskManager
from raytask.server.runner import AttemptFailed

from ..support import FakeClock, settle

NO_OPTIONS = SubmitOptions()


class FakeRef:
    """A result ref: ``stored`` ones are too large to have been inlined."""

    def __init__(self) -> None:
        self.ready = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.stored = False
        self.fetched = 0

    def finish(self, value: Any = None, stored: bool = False, error: BaseException | None = None):
        self.ready, self.value, self.stored, self.error = True, value, stored, error


class FakeReplicaResult:
    """The replica's side of a request: Serve's ``ReplicaResult`` interface."""

    def __init__(self) -> None:
        self.cancels = 0
        self.ref = FakeRef()

    def cancel(self) -> None:
        self.cancels += 1

    async def to_object_ref_async(self) -> FakeRef:
        return self.ref


class FakeCalls(ReplicaCalls):
    def __init__(self) -> None:
        super().__init__("app")
        self.sent: list[tuple[DeploymentResponse, asyncio.Future[Any], FakeReplicaResult]] = []
        self.exported: list[Any] = []
        self.watching: set[Any] = set()

    def send(
        self, deployment: str, method: str, kwargs: dict[str, Any], attempt: tuple[str, int]
    ) -> DeploymentResponse:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        metadata = RequestMetadata(request_id=uuid.uuid4().hex, internal_request_id="x")
        response = DeploymentResponse(future, metadata, _is_router_running_in_separate_loop=False)
        self.sent.append((response, future, FakeReplicaResult()))
        return response

    def assign(self, index: int = -1) -> FakeReplicaResult:
        """Serve's router has chosen a replica for request ``index`` and sent it."""
        _, future, replica = self.sent[index]
        future.set_result(replica)
        return replica

    def ready(self, refs: list[Any]) -> tuple[list[Any], set[Any]]:
        self.watching = set(refs)
        ready = [ref for ref in refs if ref.ready]
        return ready, {ref for ref in ready if ref.stored}

    async def fetch(self, ref: FakeRef) -> Any:
        assert not ref.stored, "a large result was fetched into the manager"
        ref.fetched += 1
        if ref.error is not None:
            raise ref.error
        return ref.value

    def put(self, value: Any) -> FakeRef:
        ref = FakeRef()
        ref.finish(value)
        return ref

    def running_replicas(self) -> dict[str, int]:
        return {"Model": 1}

    def warm(self, deployments: list[str]) -> None:
        pass

    def export_metrics(self, samples: list[Any]) -> None:
        self.exported.append(samples)


def route(**options: Any) -> EndpointRoute:
    return EndpointRoute("work", "work", "Model", TaskOptions(**options), max_ongoing_requests=4)


@pytest.fixture
def calls() -> FakeCalls:
    return FakeCalls()


@pytest.fixture
async def manager(calls: FakeCalls) -> AsyncIterator[TaskManager]:
    manager = TaskManager("app", [route()], AppConfig(journal="off"), calls=calls)
    yield manager
    await manager.shutdown()


async def submit(manager: TaskManager, endpoint: str = "work") -> str:
    answer = await manager.submit(endpoint, {"seconds": 1}, NO_OPTIONS)
    assert isinstance(answer, TaskState)
    return answer.task_id


async def status(manager: TaskManager, task_id: str) -> TaskState:
    answer = await manager.status(task_id)
    assert isinstance(answer, TaskState)
    return answer


async def running(manager: TaskManager, calls: FakeCalls) -> tuple[str, FakeReplicaResult]:
    """A submitted task, dispatched and assigned to a replica."""
    task_id = await submit(manager)
    await settle(lambda: len(calls.sent) == 1)
    replica = calls.assign()
    await settle(lambda: replica.ref in calls.watching)  # the manager polls its result
    return task_id, replica


# -- cancel reaches the replica whenever it comes -------------------------------------


async def test_cancel_between_assignment_and_its_await_still_reaches_the_replica(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id = await submit(manager)
    await settle(lambda: len(calls.sent) == 1)
    replica = calls.assign()  # the replica has it; the manager's await has not resumed
    answer = await manager.cancel(task_id)  # runs before that await resumes
    assert isinstance(answer, TaskState) and answer.status == "cancelled"
    assert replica.cancels == 0  # Serve's own cancel() reached nothing
    await settle(lambda: replica.cancels == 1)


async def test_cancel_after_assignment_reaches_the_replica_once(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id, replica = await running(manager, calls)
    await manager.cancel(task_id)
    await asyncio.sleep(0.1)  # time for a second cancel, which must not come
    assert replica.cancels == 1


async def test_cancel_before_assignment_frees_the_slot_and_reaches_no_replica(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id = await submit(manager)
    await settle(lambda: len(calls.sent) == 1)
    assert (await manager.stats())["in_flight"] == {"Model": 1}
    await manager.cancel(task_id)
    await settle(lambda: manager.dispatcher.in_flight("Model") == 0)
    assert calls.sent[0][2].cancels == 0


# -- how attempts end -----------------------------------------------------------------


async def test_a_small_result_is_read_once_and_kept(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, replica = await running(manager, calls)
    replica.ref.finish({"words": 3})
    await settle(lambda: manager.table.get(task_id).status == "success")
    assert replica.ref.fetched == 1
    assert await manager.result(task_id) == [replica.ref]
    assert (await manager.stats())["results_held"] == 1


async def test_a_large_result_is_never_fetched(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, replica = await running(manager, calls)
    replica.ref.finish(b"x" * 10, stored=True)
    await settle(lambda: manager.table.get(task_id).status == "success")
    assert replica.ref.fetched == 0  # FakeCalls.fetch also asserts it
    assert await manager.result(task_id) == [replica.ref]


async def test_an_exception_is_final_by_default(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, replica = await running(manager, calls)
    replica.ref.finish(AttemptFailed("ValueError: no"))
    await settle(lambda: manager.table.get(task_id).status == "failure")
    state = await status(manager, task_id)
    assert state.error == "ValueError: no" and state.attempts == 1
    assert isinstance(await manager.result(task_id), HTTPError)


async def test_a_failure_is_logged_once_with_its_id_endpoint_attempt_and_error(
    manager: TaskManager, calls: FakeCalls, caplog: pytest.LogCaptureFixture
) -> None:
    task_id, replica = await running(manager, calls)
    with caplog.at_level(logging.INFO, logger="raytask.manager"):
        replica.ref.finish(AttemptFailed("ValueError: no"))
        await settle(lambda: manager.table.get(task_id).status == "failure")
    lines = [r for r in caplog.records if task_id in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING"]
    assert lines[0].getMessage() == (
        f"raytask task {task_id} of app/work failed (attempt 1 of 3): ValueError: no"
    )


async def test_retry_exceptions_requeues_the_task(calls: FakeCalls) -> None:
    manager = TaskManager(
        "app", [route(retry_exceptions=True)], AppConfig(journal="off"), calls=calls
    )
    try:
        task_id, replica = await running(manager, calls)
        replica.ref.finish(AttemptFailed("ValueError: flaky"))
        await settle(lambda: len(calls.sent) == 2)  # dispatched again
        calls.assign().ref.finish("fine")
        await settle(lambda: manager.table.get(task_id).status == "success")
        assert (await status(manager, task_id)).attempts == 2
    finally:
        await manager.shutdown()


async def test_a_dead_replica_requeues_until_attempts_run_out(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route(max_attempts=2)], AppConfig(journal="off"), calls=calls)
    try:
        task_id, replica = await running(manager, calls)
        replica.ref.finish(error=ActorDiedError())
        await settle(lambda: len(calls.sent) == 2)
        calls.assign().ref.finish(error=ActorDiedError())
        await settle(lambda: manager.table.get(task_id).status == "failure")
        state = await status(manager, task_id)
        assert state.attempts == 2 and "gave up after 2 attempts" in (state.error or "")
        assert "replica running it died" in (state.error or "")
        assert len(calls.sent) == 2  # never a third
    finally:
        await manager.shutdown()


async def test_a_timeout_stops_the_attempt_and_ignores_its_late_result(
    calls: FakeCalls,
) -> None:
    manager = TaskManager(
        "app", [route(timeout_s=5, max_attempts=2)], AppConfig(journal="off"), calls=calls
    )
    clock = FakeClock()
    manager.dispatcher.clock = clock
    try:
        task_id, first = await running(manager, calls)
        clock.advance(6)
        await settle(lambda: len(calls.sent) == 2)  # timed out, re-queued, sent again
        assert first.cancels == 1
        first.ref.finish("late")  # the superseded attempt's result
        await asyncio.sleep(0.1)  # the watcher polls every 5 ms: it would have seen it
        assert manager.table.get(task_id).status == "in_progress"
        assert first.ref.fetched == 0  # no longer watched
        calls.assign().ref.finish("second")
        await settle(lambda: manager.table.get(task_id).status == "success")
        assert await manager.result(task_id) == [calls.sent[1][2].ref]
    finally:
        await manager.shutdown()


async def test_the_sweep_drops_expired_results(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route(ttl_s=10)], AppConfig(journal="off"), calls=calls)
    clock = FakeClock()
    manager.table.clock = clock
    try:
        task_id, replica = await running(manager, calls)
        replica.ref.finish("x")
        await settle(lambda: manager.table.get(task_id).status == "success")
        assert (await manager.stats())["results_held"] == 1
        clock.advance(11)
        await manager.sweep()
        assert (await manager.stats())["results_held"] == 0
        answer = await manager.status(task_id)
        assert isinstance(answer, HTTPError) and answer.status_code == 410
    finally:
        await manager.shutdown()


# -- the API ----------------------------------------------------------------------------


async def test_errors_come_back_as_values(manager: TaskManager) -> None:
    answer = await manager.status("0" * 32)
    assert isinstance(answer, HTTPError) and answer.status_code == 404
    (unknown,) = await manager.submit_many([("nope", {}, NO_OPTIONS)])
    assert isinstance(unknown, HTTPError)


async def test_a_full_queue_refuses_only_the_items_past_its_room(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route()], AppConfig(max_queue_size=2, journal="off"), calls=calls)
    try:
        # One call is handled at once: nothing is dispatched between its items.
        answers = await manager.submit_many([("work", {}, NO_OPTIONS)] * 3)
        assert [type(a).__name__ for a in answers] == ["TaskState", "TaskState", "QueueFullError"]
    finally:
        await manager.shutdown()


async def test_queue_depth_and_metrics(manager: TaskManager, calls: FakeCalls) -> None:
    await running(manager, calls)
    assert await manager.depth() == {"Model": {"pending": 0, "in_flight": 1}}
    await settle(lambda: calls.exported)
    names = {metric.name for metric, _, _ in calls.exported[-1]}
    assert names == {"raytask_tasks", "raytask_oldest_pending_age_seconds", "raytask_in_flight"}
    queue = await manager.queue()
    assert queue["deployments"]["Model"] == {"in_flight": 1, "limit": 4}


async def test_a_long_poll_answers_when_the_task_finishes_not_before(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id, replica = await running(manager, calls)
    waiters = [asyncio.create_task(manager.wait(task_id, 30)) for _ in range(3)]
    await settle()
    assert not any(w.done() for w in waiters)  # held: nothing finished yet
    assert manager._finish_waits[task_id][1] == [3]  # one notification for the three
    replica.ref.finish({"words": 3})
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert {a.status for a in answers} == {TaskStatus.SUCCESS}  # type: ignore[union-attr]
    assert task_id not in manager._finish_waits  # nothing left behind
    finished = await manager.wait(task_id, 30)  # already finished: at once
    assert finished.status is TaskStatus.SUCCESS  # type: ignore[union-attr]


async def test_a_long_poll_that_times_out_answers_the_current_state(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id, _ = await running(manager, calls)
    answer = await manager.wait(task_id, 0.05)
    assert answer.status is TaskStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert task_id not in manager._finish_waits
    assert isinstance(await manager.wait("f" * 32, 1), TaskNotFoundError)
