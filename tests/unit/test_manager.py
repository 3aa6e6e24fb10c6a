"""The task manager shell, through its public methods, with Serve faked at its one seam.

``FakeCalls`` replaces :class:`ReplicaCalls`' I/O (sending batches, reading their streams,
fetching small items, reading replicas) but keeps its real ``assigned``, which goes through
the Serve-compat module to Serve's real ``DeploymentResponseGenerator``: each response here
is the real class, built offline the way a router in the caller's loop builds it (the
manager's setting). Only the replica's side (``ReplicaResult`` and its stream) is fake.
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
from ray.serve.handle import DeploymentResponseGenerator

from raytask.core.config import AppConfig, SubmitOptions, TaskOptions
from raytask.core.dispatcher import EndpointRoute
from raytask.core.errors import HTTPError, QueueFullError, TaskNotFoundError
from raytask.core.messages import Submit
from raytask.core.state import TaskState
from raytask.core.status import TaskStatus
from raytask.server.batch import (
    FAILED,
    FOLLOWS,
    STOPPED,
    STREAMED,
    VALUE,
    BatchItem,
    Chunks,
    Ended,
    Outcomes,
)
from raytask.server.calls import ReplicaCalls
from raytask.server.manager import TaskManager

from ..support import FakeClock, settle

NO_OPTIONS = SubmitOptions()


class FakeRef:
    """A streamed item: ``stored`` ones are too large to have been inlined."""

    def __init__(self, value: Any = None, stored: bool = False, error: BaseException | None = None):
        self.value, self.stored, self.error = value, stored, error
        self.fetched = 0


class FakeBatch:
    """One batch request and the replica's side of it: its stream of items."""

    def __init__(self, items: list[BatchItem], limit: int) -> None:
        self.items, self.limit = items, limit
        self.stream: asyncio.Queue[FakeRef | None] = asyncio.Queue()

    @property
    def task_ids(self) -> list[str]:
        return [item.task_id for item in self.items]

    def _attempt_no(self, task_id: str) -> int:
        return next(i.attempt_no for i in self.items if i.task_id == task_id)

    def end(self, task_id: str, kind: str, payload: Any = None, progress: Any = None) -> None:
        """The replica streams how one attempt ended (with its last progress report)."""
        ended = Ended(task_id, self._attempt_no(task_id), kind, payload, progress)
        self.stream.put_nowait(FakeRef(Outcomes([ended])))

    def value(self, task_id: str, value: Any) -> FakeRef:
        """A small value, inside the outcome."""
        self.end(task_id, VALUE, value)
        return FakeRef(value)

    def large(self, task_id: str, value: Any) -> FakeRef:
        """A large value: an outcome saying it follows, then the value as its own item."""
        self.end(task_id, FOLLOWS)
        ref = FakeRef(value, stored=True)
        self.stream.put_nowait(ref)
        return ref

    def die(self, error: BaseException) -> None:
        """The replica died: the stream's last item holds the error."""
        self.stream.put_nowait(FakeRef(error=error))
        self.stream.put_nowait(None)

    def done(self) -> None:
        self.stream.put_nowait(None)


class FakeReplicaResult:
    """The replica's side of a request: Serve's ``ReplicaResult`` interface."""

    def __init__(self, batch: FakeBatch) -> None:
        self.batch = batch

    def to_object_ref_gen(self) -> FakeBatch:
        return self.batch


class FakeCalls(ReplicaCalls):
    def __init__(self) -> None:
        super().__init__("app")
        self.sent: list[tuple[DeploymentResponseGenerator, asyncio.Future[Any], FakeBatch]] = []
        self.exported: list[Any] = []

    def send(self, deployment: str, batch_id: int, items: list[BatchItem], limit: int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        metadata = RequestMetadata(
            request_id=uuid.uuid4().hex, internal_request_id="x", is_streaming=True
        )
        response = DeploymentResponseGenerator(
            future, metadata, _is_router_running_in_separate_loop=False
        )
        self.sent.append((response, future, FakeBatch(items, limit)))
        return response

    def assign(self, index: int = -1) -> FakeBatch:
        """Serve's router has chosen a replica for request ``index`` and sent it."""
        _, future, batch = self.sent[index]
        future.set_result(FakeReplicaResult(batch))
        return batch

    async def next_ref(self, stream: FakeBatch) -> FakeRef | None:
        return await stream.stream.get()

    async def next_value_ref(self, stream: FakeBatch) -> FakeRef | None:
        return await stream.stream.get()

    def stored(self, ref: FakeRef) -> int | None:
        return len(ref.value) if ref.stored else None

    async def fetch(self, ref: FakeRef) -> Any:
        assert not ref.stored, "a large result was fetched into the manager"
        ref.fetched += 1
        if ref.error is not None:
            raise ref.error
        return ref.value

    def put(self, value: Any) -> FakeRef:
        return FakeRef(value)

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
    answer = await manager.submit(Submit(endpoint, {"seconds": 1}))
    assert isinstance(answer, TaskState)
    return answer.task_id


async def status(manager: TaskManager, task_id: str) -> TaskState:
    answer = await manager.status(task_id)
    assert isinstance(answer, TaskState)
    return answer


async def running(manager: TaskManager, calls: FakeCalls) -> tuple[str, FakeBatch]:
    """A submitted task, dispatched alone and assigned to a replica."""
    task_id = await submit(manager)
    await settle(lambda: len(calls.sent) == 1)
    batch = calls.assign()
    await settle(
        lambda: manager.service.dispatcher._deadlines
    )  # armed: the manager reads the stream
    return task_id, batch


# -- batches ------------------------------------------------------------------------------


async def test_queued_tasks_go_in_one_batch_capped_by_the_replica_limit(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route()], AppConfig(journal="off"), calls=calls)
    try:
        answers = await manager.submit_each(
            [Submit("work", {"n": i}, NO_OPTIONS) for i in range(6)]
        )
        await settle(lambda: len(calls.sent) == 1)
        batch = calls.sent[0][2]
        assert [item.kwargs for item in batch.items] == [{"n": i} for i in range(4)]
        assert batch.limit == 4 and [i.attempt_no for i in batch.items] == [1] * 4
        assert batch.task_ids == [a.task_id for a in answers[:4]]  # type: ignore[union-attr]
        assert manager.service.table.pending_count == 2  # the rest waits for free slots
        calls.assign()
        batch.value(batch.task_ids[0], 1)
        await settle(lambda: len(calls.sent) == 2)  # a slot freed: dispatched at once, alone
        assert calls.sent[1][2].task_ids == [answers[4].task_id]  # type: ignore[union-attr]
    finally:
        await manager.shutdown()


async def test_an_idle_manager_sends_a_lone_task_at_once(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id = await submit(manager)
    await settle(lambda: len(calls.sent) == 1)
    assert calls.sent[0][2].task_ids == [task_id]


async def test_each_task_of_a_batch_ends_on_its_own(manager: TaskManager, calls: FakeCalls) -> None:
    answers = await manager.submit_each([Submit("work", {}, NO_OPTIONS)] * 3)
    await settle(lambda: len(calls.sent) == 1)
    batch = calls.assign()
    first, second, third = batch.task_ids
    batch.value(second, "two")
    await settle(lambda: manager.service.table.get(second).status == "success")
    assert manager.service.table.get(first).status == "in_progress"
    batch.end(first, FAILED, "ValueError: no")
    batch.large(third, b"x" * 10)
    await settle(lambda: manager.service.table.get(third).status == "success")
    assert (await status(manager, first)).error == "ValueError: no"
    assert await manager.result(second) == ["two"]
    assert len(answers) == 3


# -- cancel reaches the replica, for the task alone -----------------------------------------


async def test_cancelling_a_running_task_stops_it_alone(
    manager: TaskManager, calls: FakeCalls
) -> None:
    await manager.submit_each([Submit("work", {}, NO_OPTIONS)] * 2)
    await settle(lambda: len(calls.sent) == 1)
    batch = calls.assign()
    stop, keep = batch.task_ids
    poll = asyncio.create_task(manager.batch_stops(1, 0))  # the replica's long-poll
    await settle()
    assert not poll.done()
    answer = await manager.cancel(stop)
    assert isinstance(answer, TaskState) and answer.status == "cancelled"
    assert await asyncio.wait_for(poll, 5) == [stop]
    assert manager.service.dispatcher.in_flight("Model") == 2  # until the replica confirms
    batch.end(stop, STOPPED)
    await settle(lambda: manager.service.dispatcher.in_flight("Model") == 1)
    assert manager.service.table.get(keep).status == "in_progress"
    batch.value(keep, 1)
    await settle(lambda: manager.service.table.get(keep).status == "success")
    assert manager.service.table.get(stop).status == "cancelled"


async def test_a_stop_sent_before_the_replica_asks_is_in_its_first_answer(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id = await submit(manager)
    await settle(lambda: len(calls.sent) == 1)
    await manager.cancel(task_id)  # not even assigned to a replica yet
    calls.assign()
    assert await asyncio.wait_for(manager.batch_stops(1, 0), 5) == [task_id]


async def test_the_stops_long_poll_ends_with_its_batch(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id, batch = await running(manager, calls)
    poll = asyncio.create_task(manager.batch_stops(1, 0))
    await settle()
    batch.value(task_id, 1)
    batch.done()
    assert await asyncio.wait_for(poll, 5) is None
    assert await manager.batch_stops(1, 0) is None  # over: no wait
    assert await manager.batch_stops(99, 0) is None  # unknown


# -- how attempts end -----------------------------------------------------------------


async def test_a_small_result_is_kept_as_it_came(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, batch = await running(manager, calls)
    batch.value(task_id, {"words": 3})
    await settle(lambda: manager.service.table.get(task_id).status == "success")
    assert await manager.result(task_id) == [{"words": 3}]
    assert (await manager.stats())["results_held"] == 1


async def test_a_large_result_is_never_fetched(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, batch = await running(manager, calls)
    ref = batch.large(task_id, b"x" * 10)
    await settle(lambda: manager.service.table.get(task_id).status == "success")
    assert ref.fetched == 0  # FakeCalls.fetch also asserts it
    assert await manager.result(task_id) == [ref]
    record = manager.service.table.get(task_id)
    assert record.result_bytes == 10  # its size, as the object store tells it
    assert manager.service.table.held_bytes == record.input_bytes + 10


async def test_a_small_result_counts_its_bytes(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, batch = await running(manager, calls)
    batch.value(task_id, {"text": "y" * 1000})
    await settle(lambda: manager.service.table.get(task_id).status == "success")
    assert 1000 < manager.service.table.get(task_id).result_bytes < 1100


async def test_an_in_cluster_submit_past_max_ttl_s_is_refused(calls: FakeCalls) -> None:
    config = AppConfig(journal="off", max_ttl_s=60)
    manager = TaskManager("app", [route()], config, calls=calls)
    (answer,) = await manager.submit_each([Submit("work", {}, SubmitOptions(ttl_s=61))])
    assert isinstance(answer, HTTPError) and answer.status_code == 422
    refused = await manager.submit_many("work", [{}], SubmitOptions(ttl_s=61))
    assert isinstance(refused, HTTPError) and "max_ttl_s=60" in str(refused)
    assert len(manager.service.table) == 0
    await manager.shutdown()


async def test_a_value_item_that_turns_out_small_is_read(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id, batch = await running(manager, calls)
    batch.end(task_id, FOLLOWS)
    batch.stream.put_nowait(FakeRef([1, 2]))
    await settle(lambda: manager.service.table.get(task_id).status == "success")
    assert await manager.result(task_id) == [[1, 2]]


async def test_an_exception_is_final_by_default(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, batch = await running(manager, calls)
    batch.end(task_id, FAILED, "ValueError: no")
    await settle(lambda: manager.service.table.get(task_id).status == "failure")
    state = await status(manager, task_id)
    assert state.error == "ValueError: no" and state.attempts == 1
    assert isinstance(await manager.result(task_id), HTTPError)


async def test_a_failure_is_logged_once_with_its_id_endpoint_attempt_and_error(
    manager: TaskManager, calls: FakeCalls, caplog: pytest.LogCaptureFixture
) -> None:
    task_id, batch = await running(manager, calls)
    with caplog.at_level(logging.INFO, logger="raytask.manager"):
        batch.end(task_id, FAILED, "ValueError: no")
        await settle(lambda: manager.service.table.get(task_id).status == "failure")
    lines = [r for r in caplog.records if task_id in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING"]
    assert lines[0].getMessage() == (
        f"raytask task {task_id} of app/work failed for good after 1 of at most 3 attempts: "
        "ValueError: no"
    )
    assert "retry" not in lines[0].getMessage()  # a plain exception is not retried


async def test_retry_exceptions_requeues_the_task(
    calls: FakeCalls, caplog: pytest.LogCaptureFixture
) -> None:
    manager = TaskManager(
        "app", [route(retry_exceptions=True)], AppConfig(journal="off"), calls=calls
    )
    try:
        task_id, batch = await running(manager, calls)
        with caplog.at_level(logging.INFO, logger="raytask.manager"):
            batch.end(task_id, FAILED, "ValueError: flaky")
            await settle(lambda: len(calls.sent) == 2)  # dispatched again
        assert [r.getMessage() for r in caplog.records if task_id in r.getMessage()] == [
            f"raytask task {task_id} of app/work: attempt 1 of 3 failed, will retry: "
            "ValueError: flaky"
        ]
        second = calls.assign()
        assert [i.attempt_no for i in second.items] == [2]
        second.value(task_id, "fine")
        await settle(lambda: manager.service.table.get(task_id).status == "success")
        assert (await status(manager, task_id)).attempts == 2
    finally:
        await manager.shutdown()


async def test_a_dead_replica_requeues_until_attempts_run_out(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route(max_attempts=2)], AppConfig(journal="off"), calls=calls)
    try:
        task_id, batch = await running(manager, calls)
        batch.die(ActorDiedError())
        await settle(lambda: len(calls.sent) == 2)
        calls.assign().die(ActorDiedError())
        await settle(lambda: manager.service.table.get(task_id).status == "failure")
        state = await status(manager, task_id)
        assert state.attempts == 2 and "gave up after 2 attempts" in (state.error or "")
        assert "replica running it died" in (state.error or "")
        assert len(calls.sent) == 2  # never a third
    finally:
        await manager.shutdown()


async def test_a_dead_replica_loses_only_the_attempts_not_ended(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route()], AppConfig(journal="off"), calls=calls)
    try:
        await manager.submit_each([Submit("work", {}, NO_OPTIONS)] * 2)
        await settle(lambda: len(calls.sent) == 1)
        batch = calls.assign()
        done, lost = batch.task_ids
        ref = batch.large(done, b"big")
        batch.die(ActorDiedError())
        await settle(lambda: len(calls.sent) == 2)
        assert calls.sent[1][2].task_ids == [lost]  # re-queued, sent again
        assert manager.service.table.get(done).status == "success"
        assert await manager.result(done) == [ref]  # its value outlives the replica
    finally:
        await manager.shutdown()


async def test_a_stream_that_ends_early_loses_the_rest(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route(max_attempts=1)], AppConfig(journal="off"), calls=calls)
    try:
        task_id, batch = await running(manager, calls)
        batch.done()
        await settle(lambda: manager.service.table.get(task_id).status == "failure")
        assert "without its outcome" in (manager.service.table.get(task_id).error or "")
        assert manager.service.dispatcher.in_flight("Model") == 0
    finally:
        await manager.shutdown()


async def test_a_timeout_stops_the_attempt_and_ignores_its_late_result(
    calls: FakeCalls,
) -> None:
    manager = TaskManager(
        "app", [route(timeout_s=5, max_attempts=2)], AppConfig(journal="off"), calls=calls
    )
    clock = FakeClock()
    manager.service.dispatcher.clock = clock
    try:
        task_id, first = await running(manager, calls)
        clock.advance(6)
        manager.attempts.wake.set()  # the deadline loop sleeps on the real clock: wake it
        await settle(lambda: len(calls.sent) == 2)  # timed out, re-queued, sent again
        assert await asyncio.wait_for(manager.batch_stops(1, 0), 5) == [task_id]
        first.value(task_id, "late")  # the superseded attempt's result...
        first.stream.put_nowait(None)  # ...then its stream ends: the manager read both
        assert await asyncio.wait_for(manager.batch_stops(1, 1), 5) is None  # batch 1 over
        assert manager.service.table.get(task_id).status == "in_progress"
        second = calls.assign()
        second.value(task_id, "second")
        await settle(lambda: manager.service.table.get(task_id).status == "success")
        assert await manager.result(task_id) == ["second"]
    finally:
        await manager.shutdown()


async def test_the_sweep_drops_expired_results(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route(ttl_s=10)], AppConfig(journal="off"), calls=calls)
    clock = FakeClock()
    manager.service.table.clock = clock
    try:
        task_id, batch = await running(manager, calls)
        batch.value(task_id, "x")
        await settle(lambda: manager.service.table.get(task_id).status == "success")
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
    (unknown,) = await manager.submit_each([Submit("nope", {}, NO_OPTIONS)])
    assert isinstance(unknown, HTTPError)


async def test_a_full_queue_refuses_only_the_items_past_its_room(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route()], AppConfig(max_queue_size=2, journal="off"), calls=calls)
    try:
        # One call is handled at once: nothing is dispatched between its items.
        answers = await manager.submit_each([Submit("work", {}, NO_OPTIONS)] * 3)
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
    task_id, batch = await running(manager, calls)
    waiters = [asyncio.create_task(manager.wait(task_id, 30)) for _ in range(3)]
    await settle()
    assert not any(w.done() for w in waiters)  # held: nothing finished yet
    assert manager.service._finish_waits.waiting(task_id) == 3  # one notification for the three
    batch.value(task_id, {"words": 3})
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert {a.status for a in answers} == {TaskStatus.SUCCESS}  # type: ignore[union-attr]
    assert task_id not in manager.service._finish_waits  # nothing left behind
    finished = await manager.wait(task_id, 30)  # already finished: at once
    assert finished.status is TaskStatus.SUCCESS  # type: ignore[union-attr]


async def test_a_long_poll_that_times_out_answers_the_current_state(
    manager: TaskManager, calls: FakeCalls
) -> None:
    task_id, _ = await running(manager, calls)
    answer = await manager.wait(task_id, 0.05)
    assert answer.status is TaskStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert task_id not in manager.service._finish_waits
    assert isinstance(await manager.wait("f" * 32, 1), TaskNotFoundError)


async def test_a_batch_that_cannot_be_sent_is_lost_not_stuck(calls: FakeCalls) -> None:
    def refuse(*args: Any) -> Any:
        raise RuntimeError("no such deployment")

    calls.send = refuse  # type: ignore[method-assign]
    manager = TaskManager("app", [route(max_attempts=2)], AppConfig(journal="off"), calls=calls)
    try:
        task_id = await submit(manager)
        await settle(lambda: manager.service.table.get(task_id).status == "failure")
        assert "RuntimeError: no such deployment" in (
            manager.service.table.get(task_id).error or ""
        )
        assert manager.service.dispatcher.in_flight("Model") == 0
    finally:
        await manager.shutdown()


async def test_cancel_many_with_an_owner_touches_only_that_owners_tasks(
    calls: FakeCalls,
) -> None:
    manager = TaskManager("app", [route()], AppConfig(journal="off"), calls=calls)
    manager.service.dispatcher.max_in_flight = 0  # everything stays pending
    mine = [Submit("work", {"n": n}, owner="alice") for n in range(3)]
    theirs = [Submit("work", {"n": n}, owner="bob") for n in range(2)]
    answers = await manager.submit_each(mine + theirs)
    bobs = [a.task_id for a in answers[3:]]  # type: ignore[union-attr]
    assert await manager.cancel_many("work", None, ["pending"], owner="bob") == 2
    assert await manager.cancel_many("work", [a.task_id for a in answers], None, "bob") == 0  # type: ignore[union-attr]
    assert manager.service.table.counts()["work"]["pending"] == 3  # alice's queue is untouched
    assert all(manager.service.table.get(t).status is TaskStatus.CANCELLED for t in bobs)
    await manager.shutdown()


async def test_submit_many_is_all_or_none(calls: FakeCalls) -> None:
    manager = TaskManager("app", [route()], AppConfig(journal="off", max_queue_size=3), calls=calls)
    manager.service.dispatcher.max_in_flight = 0  # everything stays pending
    refused = await manager.submit_many("work", [{"n": n} for n in range(4)], NO_OPTIONS)
    assert isinstance(refused, QueueFullError)
    assert manager.service.table.pending_count == 0  # not the three that had room
    queued = await manager.submit_many("work", [{"n": n} for n in range(3)], NO_OPTIONS)
    assert [s.status for s in queued] == [TaskStatus.PENDING] * 3  # type: ignore[union-attr]
    await manager.shutdown()


async def test_streamed_chunks_are_kept_read_and_become_the_result(calls: FakeCalls) -> None:
    streaming = EndpointRoute("work", "work", "Model", TaskOptions(), 4, streams=True)
    manager = TaskManager("app", [streaming], AppConfig(journal="off"), calls=calls)
    try:
        await _check_streamed(manager, calls)
    finally:
        await manager.shutdown()


async def _check_streamed(manager: TaskManager, calls: FakeCalls) -> None:
    task_id, batch = await running(manager, calls)
    reading = asyncio.ensure_future(manager.stream(task_id, 0, None, 5.0))
    first = await reading  # a running task: its attempt at once
    assert first.attempt == 1 and first.chunks == []
    waiting = asyncio.ensure_future(manager.stream(task_id, 0, 1, 5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing new yet: the read waits (no polling)
    batch.stream.put_nowait(
        FakeRef(Chunks([(task_id, 1, [b'"a"', b'"b"']), ("f" * 32, 1, [b'"x"'])]))
    )
    read = await waiting
    assert (read.start, read.chunks) == (0, [b'"a"', b'"b"'])  # woken, chunks as JSON
    assert (await status(manager, task_id)).chunks == 2
    batch.stream.put_nowait(FakeRef(Chunks([(task_id, 9, [b'"stale"'])])))  # another attempt's
    batch.end(task_id, STREAMED, 2)
    await settle(lambda: manager.service.table.get(task_id).status == "success")
    assert await manager.result(task_id) == [["a", "b"]]
    last = await manager.stream(task_id, 2, 1, 5.0)
    assert last.chunks == [] and last.state.status == "success" and not last.more


async def test_a_stream_past_its_limit_is_stopped_and_fails(calls: FakeCalls) -> None:
    streaming = EndpointRoute("work", "work", "Model", TaskOptions(), 4, streams=True)
    config = AppConfig(journal="off", max_stream_chunks=3)
    manager = TaskManager("app", [streaming], config, calls=calls)
    try:
        task_id, batch = await running(manager, calls)
        batch.stream.put_nowait(FakeRef(Chunks([(task_id, 1, [b"1", b"2"])])))
        batch.stream.put_nowait(FakeRef(Chunks([(task_id, 1, [b"3", b"4"])])))
        await settle(lambda: manager.service.table.get(task_id).status == "failure")
        state = await status(manager, task_id)
        assert state.error is not None and state.error.startswith("StreamTooLarge")
        assert state.attempts == 1  # final: not re-queued
        assert await asyncio.wait_for(manager.batch_stops(1, 0), 5) == [task_id]  # stopped there
    finally:
        await manager.shutdown()


# -- batch jobs ---------------------------------------------------------------------------


async def test_a_batch_folder_it_cannot_write_costs_the_batch_jobs_not_the_app(
    calls: FakeCalls, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    config = AppConfig(journal="off", batch_dir=str(blocked / "files"))
    with caplog.at_level(logging.ERROR, logger="raytask.manager"):
        manager = TaskManager("app", [route()], config, calls=calls)
    try:
        assert "batch jobs are unavailable" in caplog.text
        await submit(manager)  # tasks still work
        answer = await manager.job("file_list")
        assert isinstance(answer, HTTPError) and answer.status_code == 503
        assert "batch jobs are unavailable" in answer.message
        unknown = await manager.job("shutdown")
        assert isinstance(unknown, HTTPError) and unknown.status_code == 500
    finally:
        await manager.shutdown()


async def test_the_manager_serves_the_job_commands(calls: FakeCalls, tmp_path: Any) -> None:
    manager = TaskManager(
        "app", [route()], AppConfig(journal="off", batch_dir=str(tmp_path)), calls=calls
    )
    try:
        upload = await manager.job("file_open", "in.jsonl", "batch", None)
        await manager.job("file_write", upload, b'{"custom_id": "a"}\n')
        info = await manager.job("file_close", upload)
        assert info["bytes"] == 19 and (tmp_path / f"{info['id']}.json").exists()
        assert await manager.job("file_read", info["id"], 0, 5, None) == b'{"cus'
        missing = await manager.job("batch_get", "batch_nope")
        assert isinstance(missing, HTTPError) and missing.status_code == 404
    finally:
        await manager.shutdown()


async def test_the_last_progress_report_comes_with_the_end_and_is_kept(
    calls: FakeCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report sent apart (an actor call) can arrive after the end and be dropped; the
    # one inside the outcome cannot, and it is recorded as any report is (webhook too).
    config = AppConfig(
        journal="off",
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        webhook_allow_private_networks=True,
    )
    manager = TaskManager("app", [route()], config, calls=calls)
    fired: list[str] = []
    monkeypatch.setattr(manager.service.webhooks, "fire", lambda record, event: fired.append(event))
    hook = SubmitOptions(webhook_url="http://127.0.0.1:9/hook", webhook_events="progress,completed")
    answer = await manager.submit(Submit("work", {"seconds": 1}, hook))
    task_id = answer.task_id  # type: ignore[union-attr]
    await settle(lambda: len(calls.sent) == 1)
    batch = calls.assign()
    await settle(lambda: manager.service.dispatcher._deadlines)
    batch.end(task_id, VALUE, {"ok": 1}, progress=(1.0, "10 of 10"))
    await settle(lambda: manager.service.table.get(task_id).status is TaskStatus.SUCCESS)
    progress = manager.service.table.get(task_id).progress
    assert progress is not None and (progress.fraction, progress.message) == (1.0, "10 of 10")
    assert fired[-2:] == ["progress", "completed"]  # its webhook event, before the end
    await manager.shutdown()
