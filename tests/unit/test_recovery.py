"""Recovery: what each journaled task becomes, and the task manager's crash points.

The crash tests run the real manager shell over the real SQLite journal (Serve faked at
its seam, as in test_manager), "crash" it by dropping it without any further write, and
start a new one on the same file, as Ray's restart or a new ``serve run`` would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raytask.core.chunks import ChunkLog
from raytask.core.config import AppConfig, SubmitOptions, TaskOptions
from raytask.core.dispatcher import EndpointRoute
from raytask.core.endpoint import encode_chunk
from raytask.core.errors import TaskConflictError, TaskExpiredError, TaskNotFoundError
from raytask.core.messages import Submit
from raytask.core.recovery import LOST_RESULT, LOST_RUN, recover
from raytask.core.state import TaskState
from raytask.core.status import TaskStatus
from raytask.core.table import TaskRecord, TaskTable
from raytask.core.usage import UsageQuery
from raytask.server.batch import STREAMED, Chunks
from raytask.server.journal import INTEGRITY_FAILED, RedisStore, SQLiteStore, Store
from raytask.server.manager import TaskManager

from ..support import FakeClock, missing, redis_server, settle
from .test_journal import SlowStore
from .test_manager import FakeCalls, FakeRef, route, running

# -- the rules, on plain records ---------------------------------------------------------


def journaled(clock: FakeClock, **options: Any) -> tuple[TaskTable, Callable[..., TaskRecord]]:
    table = TaskTable(clock=clock)
    made = 0

    def make(status: TaskStatus, attempts: int = 1, endpoint: str = "e") -> TaskRecord:
        nonlocal table, made
        table, made = TaskTable(clock=clock), made + 1  # one table each: pop_next is FIFO
        record = table.submit(endpoint, {}, TaskOptions(**options))
        record.seq = made
        if status is not TaskStatus.PENDING:
            table.pop_next(endpoint)
            record.attempts = attempts
            if status is TaskStatus.SUCCESS:
                table.succeed(record.task_id)
            elif status is TaskStatus.FAILURE:
                table.fail(record.task_id, "boom")
            elif status is TaskStatus.CANCELLED:
                table.cancel(record.task_id)
        return record

    return table, make


def test_each_state_resumes_as_the_rules_say(clock: FakeClock) -> None:
    _, make = journaled(clock, max_attempts=3)
    pending = make(TaskStatus.PENDING)
    running = make(TaskStatus.IN_PROGRESS, attempts=1)
    exhausted = make(TaskStatus.IN_PROGRESS, attempts=3)
    kept = make(TaskStatus.SUCCESS)
    lost = make(TaskStatus.SUCCESS)
    failed = make(TaskStatus.FAILURE)
    cancelled = make(TaskStatus.CANCELLED)
    orphan = make(TaskStatus.PENDING, endpoint="gone")
    records = [pending, running, exhausted, kept, lost, failed, cancelled, orphan]
    outcome = recover(records, ["e"], [kept.task_id], now=clock())
    status = {r.task_id: r.status for r in outcome.records}
    assert status[pending.task_id] is TaskStatus.PENDING
    assert status[running.task_id] is TaskStatus.PENDING and running.error == LOST_RUN
    assert status[exhausted.task_id] is TaskStatus.FAILURE
    assert exhausted.error == f"{LOST_RUN} (gave up after 3 attempts)"
    assert status[kept.task_id] is TaskStatus.SUCCESS
    assert status[lost.task_id] is TaskStatus.PENDING and lost.error == LOST_RESULT
    assert lost.completed_at is None and lost.expires_at is None
    assert status[failed.task_id] is TaskStatus.FAILURE and failed.error == "boom"
    assert status[cancelled.task_id] is TaskStatus.CANCELLED
    assert status[orphan.task_id] is TaskStatus.FAILURE and "'gone' no longer exists" in str(
        orphan.error
    )
    assert orphan.expires_at == clock() + orphan.options.ttl_s
    assert set(outcome.changed) == {
        running.task_id,
        exhausted.task_id,
        lost.task_id,
        orphan.task_id,
    }
    assert (outcome.requeued, outcome.failed) == (2, 2)


def test_a_lost_result_of_a_removed_endpoint_fails_instead_of_running_again(
    clock: FakeClock,
) -> None:
    _, make = journaled(clock)
    lost = make(TaskStatus.SUCCESS, endpoint="gone")
    outcome = recover([lost], ["e"], [], now=clock())
    assert lost.status is TaskStatus.FAILURE and lost.error == LOST_RESULT
    assert outcome.requeued == 0 and outcome.failed == 1


def test_an_endpoint_may_refuse_to_rerun_a_lost_result(clock: FakeClock) -> None:
    _, make = journaled(clock, rerun_lost_results=False)
    lost = make(TaskStatus.SUCCESS)
    recover([lost], ["e"], [], now=clock())
    assert lost.status is TaskStatus.FAILURE and lost.error == LOST_RESULT


def test_restored_pending_tasks_queue_in_submission_order(clock: FakeClock) -> None:
    _, make = journaled(clock)
    records = [make(TaskStatus.PENDING) for _ in range(5)]
    table = TaskTable(clock=clock)
    table.restore(reversed(records))  # a journal gives rows in any order
    assert [table.pop_next("e").task_id for _ in records] == [r.task_id for r in records]  # type: ignore[union-attr]
    assert table.submit("e", {}, TaskOptions()).seq == records[-1].seq + 1
    assert table.counts()["e"]["in_progress"] == 5


# -- crash points of the real manager ------------------------------------------------------


Stores = Callable[[], Store]


def manager(path: Stores, calls: FakeCalls, **options: Any) -> TaskManager:
    """A manager on a new connection to the journal (as a new process would open it), on
    the real clock (its loops sweep by it)."""
    return TaskManager("app", [route(**options)], AppConfig(), calls=calls, store=path())


@pytest.fixture(params=["sqlite", "redis"])
def path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """The journal every crash test runs on twice: SQLite, and a real redis-server."""
    if request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "journal.db")
        return
    try:
        with redis_server(tmp_path) as url:
            yield lambda: RedisStore(url, "app")
    except FileNotFoundError as exc:
        missing(f"the Redis journal is not tested here: {exc}")


class Gone:
    """The journal as a dead process sees it: nothing it writes arrives."""

    def commit(self, puts: Any, deletes: Any, groups: Any = (), usage: Any = ()) -> None:
        raise OSError("the process is gone")

    def close(self) -> None:
        pass


async def crash(m: TaskManager) -> None:
    """The process dies here: nothing more reaches the journal, and its loops stop."""
    assert m.service.journal is not None
    store, m.service.journal.store = m.service.journal.store, Gone()  # type: ignore[assignment]
    await m.shutdown()
    store.close()  # the dead process's connection (the OS would close it)


async def succeeded_then_crashed(path: Stores) -> str:
    """A task that succeeded with the small result ``{"value": 42}``, its status read
    (which waits for the journal), then the manager's crash; returns the task's id."""
    calls = FakeCalls()
    first = manager(path, calls)
    task_id, batch = await running(first, calls)
    batch.value(task_id, {"value": 42})
    await settle(lambda: first.service.table.get(task_id).status is TaskStatus.SUCCESS)
    seen = await first.status(task_id)  # waits for the journal if the success is unwritten
    assert seen.status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    await crash(first)  # nothing flushed after the status answer
    return task_id


async def test_dying_before_a_commit_loses_only_what_no_client_was_told(path: Stores) -> None:
    first = manager(path, FakeCalls())
    told = await first.submit(Submit("work", {"n": 1}, SubmitOptions()))
    assert isinstance(told, TaskState)
    untold = first.service.table.submit(
        "work", {"n": 2}, TaskOptions()
    )  # its submit never answered
    await crash(first)
    second = manager(path, FakeCalls())
    assert second.service.table.get(told.task_id).status is TaskStatus.PENDING
    with pytest.raises(TaskNotFoundError):
        second.service.table.get(untold.task_id)
    await second.shutdown()


async def test_dying_after_a_commit_but_before_the_reply_keeps_the_task(path: Stores) -> None:
    first = manager(path, FakeCalls())
    record = first.service.table.submit("work", {"n": 1}, TaskOptions())
    await first.service.journal.flush()  # type: ignore[union-attr]  # committed; the reply is lost
    await crash(first)
    second = manager(path, FakeCalls())
    assert second.service.table.get(record.task_id).status is TaskStatus.PENDING
    await second.shutdown()


async def test_a_result_stored_but_not_journaled_runs_again(path: Stores) -> None:
    calls = FakeCalls()
    first = manager(path, calls)
    task_id, batch = await running(first, calls)
    assert (await first.status(task_id)).status is TaskStatus.IN_PROGRESS  # type: ignore[union-attr]
    batch.large(task_id, {"value": 1})  # the replica's result is in the object store...
    await crash(first)  # ...but the manager died before it recorded the success
    calls = FakeCalls()
    second = manager(path, calls)
    state = second.service.table.get(task_id)
    assert state.status is TaskStatus.PENDING and state.error == LOST_RUN and state.attempts == 1
    await settle(lambda: len(calls.sent) == 1)  # dispatched again: attempt 2
    calls.assign().value(task_id, {"value": 1})
    await settle(lambda: second.service.table.get(task_id).status is TaskStatus.SUCCESS)
    assert second.service.table.get(task_id).attempts == 2
    await second.shutdown()


async def test_a_small_result_survives_and_a_status_never_runs_ahead_of_the_journal(
    path: Stores,
) -> None:
    task_id = await succeeded_then_crashed(path)
    calls = FakeCalls()
    second = manager(path, calls)
    assert second.service.table.get(task_id).status is TaskStatus.SUCCESS
    (ref,) = await second.result(task_id)  # type: ignore[misc]
    assert ref.value == {"value": 42} and calls.sent == []  # nothing ran again
    await second.shutdown()


async def test_a_task_that_kills_the_manager_every_time_ends_in_failure(path: Stores) -> None:
    calls = FakeCalls()
    m = manager(path, calls, max_attempts=3)
    answer = await m.submit(Submit("work", {"poison": True}, SubmitOptions()))
    task_id = answer.task_id  # type: ignore[union-attr]
    for attempt in range(1, 4):
        await settle(lambda calls=calls: len(calls.sent) == 1)
        state = await m.status(task_id)  # in progress, journaled
        assert state.status is TaskStatus.IN_PROGRESS and state.attempts == attempt  # type: ignore[union-attr]
        await crash(m)
        calls = FakeCalls()
        m = manager(path, calls, max_attempts=3)
        assert m.service.table.get(task_id).attempts <= 3
    state = m.service.table.get(task_id)
    assert state.status is TaskStatus.FAILURE and "gave up after 3 attempts" in str(state.error)
    await m.service.journal.flush()  # type: ignore[union-attr]
    await crash(m)
    m = manager(path, FakeCalls(), max_attempts=3)
    assert m.service.table.get(task_id).status is TaskStatus.FAILURE  # and it stays so
    usage = await m.usage(UsageQuery())  # failed at a recovery: counted once, not at each
    assert [(r["tasks"], r["failed"]) for r in usage] == [(1, 1)]
    await m.shutdown()


async def test_cancel_and_retry_are_journaled_before_they_answer(path: Stores) -> None:
    calls = FakeCalls()
    first = manager(path, calls)
    answer = await first.submit(Submit("work", {"n": 1}, SubmitOptions()))
    task_id = answer.task_id  # type: ignore[union-attr]
    await first.cancel(task_id)
    retried = await first.retry(task_id)
    await crash(first)
    second = manager(path, FakeCalls())
    assert second.service.table.get(task_id).status is TaskStatus.CANCELLED
    again = second.service.table.get(retried.task_id)  # type: ignore[union-attr]
    assert again.retry_of == task_id and again.status in (
        TaskStatus.PENDING,
        TaskStatus.IN_PROGRESS,
    )
    await second.shutdown()


async def test_a_status_waits_until_the_change_it_shows_is_journaled() -> None:
    store = SlowStore()
    store.gate.set()
    calls = FakeCalls()
    m = TaskManager("app", [route()], AppConfig(), calls=calls, store=store)
    task_id, batch = await running(m, calls)
    await m.status(task_id)  # in progress, and written
    store.gate.clear()  # writes hang from now on
    store.entered.clear()
    batch.value(task_id, {"value": 1})
    await settle(lambda: m.service.table.get(task_id).status is TaskStatus.SUCCESS)  # not written
    status = asyncio.ensure_future(m.status(task_id))
    await asyncio.to_thread(store.entered.wait, 10)  # the success's write waits at the gate
    await asyncio.sleep(0)
    assert not status.done()  # it would show a state a crash could take back
    store.gate.set()
    assert (await status).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    assert store.commits[-1] == [task_id]
    await m.shutdown()


async def test_keys_priorities_and_queue_deadlines_survive_a_restart(path: Stores) -> None:
    first = manager(path, FakeCalls())
    first.service.dispatcher.max_in_flight = 0  # nothing starts: every task stays queued
    keyed = await first.submit(Submit("work", {"n": 1}, SubmitOptions(), "key-1"))
    low = await first.submit(Submit("work", {"n": 2}, SubmitOptions(priority=-5)))
    high = await first.submit(Submit("work", {"n": 3}, SubmitOptions(priority=9, max_queue_s=3600)))
    await crash(first)
    second = manager(path, FakeCalls())
    second.service.dispatcher.max_in_flight = 0
    again = await second.submit(Submit("work", {"n": 1}, SubmitOptions(), "key-1"))
    assert again.task_id == keyed.task_id  # type: ignore[union-attr]
    conflict = await second.submit(Submit("work", {"n": 9}, SubmitOptions(), "key-1"))
    assert isinstance(conflict, TaskConflictError)
    positions = {
        s.task_id: s.queue_position
        for s in await second.status_many([keyed.task_id, low.task_id, high.task_id])  # type: ignore[union-attr]
    }
    assert positions == {high.task_id: 0, keyed.task_id: 1, low.task_id: 2}  # type: ignore[union-attr]
    assert second.service.table.get(high.task_id).queue_deadline() == pytest.approx(  # type: ignore[union-attr]
        second.service.table.get(high.task_id).created_at + 3600  # type: ignore[union-attr]
    )
    await second.shutdown()


async def test_a_pending_webhook_delivery_survives_a_restart(path: Stores) -> None:
    # A real receiver on 127.0.0.1: 500 to the first attempt, 200 after.
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.headers["webhook-id"])
            self.send_response(500 if len(seen) == 1 else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = AppConfig(
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        webhook_allow_private_networks=True,
        webhook_retry_delays_s=(1.0,),
    )
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        first = TaskManager("app", [route()], config, calls=FakeCalls(), store=path())
        first.service.dispatcher.max_in_flight = 0
        answer = await first.submit(Submit("work", {"n": 1}, SubmitOptions(webhook_url=url)))
        task_id = answer.task_id  # type: ignore[union-attr]
        await first.cancel(task_id)  # "cancelled" is one of the default events
        await settle(
            lambda: bool(seen) and first.service.table.get(task_id).webhook.summary.attempts == 1,  # type: ignore[union-attr]
            timeout_s=10,
        )
        await first.service.journal.flush()  # type: ignore[union-attr]
        await crash(first)  # the retry, due in 1 s, is pending in the journal only
        second = TaskManager("app", [route()], config, calls=FakeCalls(), store=path())
        await settle(lambda: len(seen) == 2, timeout_s=10)
        assert seen[0] == seen[1]  # the same delivery, resumed
        await settle(
            lambda: second.service.table.state(task_id).webhook.state == "delivered"  # type: ignore[union-attr]
        )
        assert second.service.table.state(task_id).webhook.attempts == 2  # type: ignore[union-attr]
        await second.shutdown()
    finally:
        server.shutdown()
        server.server_close()


async def test_a_delivery_that_ends_after_its_task_was_forgotten_does_not_bring_it_back(
    tmp_path: Path,
) -> None:
    config = AppConfig(
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        webhook_allow_private_networks=True,
        webhook_retry_delays_s=(0.3,),
    )
    m = TaskManager("app", [route()], config, calls=FakeCalls(), store=SQLiteStore(tmp_path / "j"))
    m.service.dispatcher.max_in_flight = 0
    url = "http://127.0.0.1:9/nobody-listens"
    answer = await m.submit(Submit("work", {"n": 1}, SubmitOptions(webhook_url=url, ttl_s=0.05)))
    task_id = answer.task_id  # type: ignore[union-attr]
    await m.cancel(task_id)  # "cancelled": a delivery that fails, then retries in 0.3 s
    await asyncio.sleep(0.1)
    await m.sweep()  # forgotten at its TTL while the retry waits
    with pytest.raises(TaskExpiredError):
        m.service.table.get(task_id)
    await m.service.webhooks.idle()
    assert m.service.journal is not None
    await m.service.journal.flush()
    records, _, _ = m.service.journal.load()
    assert task_id not in {r.task_id for r in records}
    await m.shutdown()


# -- trust: the journal is read, never obeyed -------------------------------------------


class Planted:
    """What an attacker who can write the journal would plant: a pickle that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


async def test_a_row_that_fails_its_seal_is_never_unpickled_and_its_task_fails(
    path: Stores, tmp_path: Path
) -> None:
    import pickle

    first = manager(path, FakeCalls())
    first.service.dispatcher.max_in_flight = 0
    planted = await first.submit(Submit("work", {"n": 1}, SubmitOptions()))
    kept = await first.submit(Submit("work", {"n": 2}, SubmitOptions()))
    assert isinstance(planted, TaskState) and isinstance(kept, TaskState)
    await crash(first)
    marker = tmp_path / "the-journal-ran-code"
    evil = pickle.dumps(Planted(marker))
    store = path()
    ((_, seq, sealed, _, inputs),) = [row for row in store.load() if row[0] == planted.task_id]
    assert inputs is not None  # written once, with the task's first row
    # the old tag with new bytes, and the planted bytes without any tag: neither loads
    store.commit([(planted.task_id, seq, sealed[:32] + evil, None, None)], [])
    store.close()
    second = manager(path, FakeCalls())
    assert not marker.exists()
    record = second.service.table.get(planted.task_id)
    assert record.status is TaskStatus.FAILURE and record.error == INTEGRITY_FAILED
    assert second.service.table.get(kept.task_id).status is TaskStatus.PENDING
    await second.shutdown()
    store = path()
    store.commit([(planted.task_id, seq, evil, None, None)], [])
    store.close()
    third = manager(path, FakeCalls())
    assert not marker.exists()
    assert third.service.table.get(planted.task_id).error == INTEGRITY_FAILED
    await third.shutdown()
    # a good record beside planted inputs: the inputs are sealed too
    store = path()
    store.commit([(kept.task_id, seq, sealed, None, inputs[:32] + evil)], [])
    store.close()
    fourth = manager(path, FakeCalls())
    assert not marker.exists()
    assert fourth.service.table.get(kept.task_id).error == INTEGRITY_FAILED
    await fourth.shutdown()


async def test_a_result_that_fails_its_seal_is_dropped_and_the_task_runs_again(
    path: Stores,
) -> None:
    task_id = await succeeded_then_crashed(path)
    store = path()
    ((_, seq, sealed, result, _),) = store.load()
    assert result is not None
    store.commit([(task_id, seq, sealed, result[:32] + b"\x80\x04K\x01.", None)], [])  # pickle of 1
    store.close()
    second = manager(path, FakeCalls())
    record = second.service.table.get(task_id)
    assert record.status is TaskStatus.PENDING and record.error == LOST_RESULT
    await second.shutdown()


def test_unreadable_rows_end_in_failure_with_their_reason(clock: FakeClock) -> None:
    outcome = recover([], ["e"], [], now=clock(), unreadable={"a" * 32: INTEGRITY_FAILED})
    (record,) = outcome.records
    assert (record.task_id, record.status, record.error) == (
        "a" * 32,
        TaskStatus.FAILURE,
        INTEGRITY_FAILED,
    )
    assert record.expires_at == clock() + record.options.ttl_s
    assert outcome.changed == ["a" * 32] and outcome.failed == 1


async def test_the_sqlite_journal_and_its_key_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "journal"
    m = TaskManager(
        "app", [route()], AppConfig(), calls=FakeCalls(), store=SQLiteStore(folder / "j.db")
    )
    await m.submit(Submit("work", {"n": 1}, SubmitOptions()))  # written: the -wal file exists
    files = sorted(p.name for p in folder.iterdir())
    assert "j.db" in files and "j.db.key" in files and "j.db-wal" in files
    assert {name: (folder / name).stat().st_mode & 0o777 for name in files} == dict.fromkeys(
        files, 0o600
    )
    await m.shutdown()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


async def test_the_key_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYTASK_JOURNAL_KEY", "a key the operator keeps elsewhere")
    store = lambda: SQLiteStore(tmp_path / "j.db")  # noqa: E731
    first = TaskManager("app", [route()], AppConfig(), calls=FakeCalls(), store=store())
    answer = await first.submit(Submit("work", {"n": 1}, SubmitOptions()))
    await crash(first)
    assert not (tmp_path / "j.db.key").exists()
    second = TaskManager("app", [route()], AppConfig(), calls=FakeCalls(), store=store())
    assert second.service.table.get(answer.task_id).status is TaskStatus.PENDING  # type: ignore[union-attr]
    await second.shutdown()
    monkeypatch.setenv("RAYTASK_JOURNAL_KEY", "another key")
    third = TaskManager("app", [route()], AppConfig(), calls=FakeCalls(), store=store())
    assert third.service.table.get(answer.task_id).error == INTEGRITY_FAILED  # type: ignore[union-attr]
    await third.shutdown()


def test_the_redis_journal_names_no_password() -> None:
    store = RedisStore("redis://user:s3cret-pass@127.0.0.1:1/0?password=other-secret", "app")
    assert "s3cret-pass" not in str(store) and "other-secret" not in str(store)
    store.close()


# -- a redeploy, then a crash: the restarted manager serves the latest deploy ------------


class FakeSettings:
    """Ray's GCS as the manager sees it: what ``configure`` saved outlives the actor."""

    def __init__(self) -> None:
        self.saved: Any = None
        self.is_restart = False

    def restarted(self) -> bool:
        return self.is_restart

    def save(self, value: Any) -> None:
        self.saved = value

    def load(self) -> Any:
        return self.saved


async def test_a_restart_after_a_redeploy_keeps_the_new_endpoints_and_their_tasks(
    path: Stores,
) -> None:
    settings = FakeSettings()
    first_deploy = [route()]

    def start() -> TaskManager:
        # Ray reruns the constructor with the arguments of the actor's first creation
        return TaskManager(
            "app", first_deploy, AppConfig(), [("Old", object)], FakeCalls(), path(), settings
        )

    first = start()
    redeployed = [route(), EndpointRoute("added", "added", "Model", TaskOptions(), 4)]
    await first.configure(redeployed, AppConfig(max_queue_size=7), [("New", dict)])
    first.service.dispatcher.max_in_flight = 0
    queued = [await first.submit(Submit("added", {"n": n}, SubmitOptions())) for n in range(4)]
    await crash(first)
    settings.is_restart = True
    second = start()
    for answer in queued:
        assert second.service.table.get(answer.task_id).status is TaskStatus.PENDING  # type: ignore[union-attr]
    assert isinstance(await second.submit(Submit("added", {"n": 5}, SubmitOptions())), TaskState)
    assert await second.models() == [("New", dict)]
    assert second.service.config.max_queue_size == 7
    await second.shutdown()
    settings.is_restart = False  # a new actor (not a restart) takes its own arguments
    third = start()
    assert set(third.service.routes) == {"work"} and settings.saved[0] == first_deploy
    await third.shutdown()


def test_the_redis_store_deletes_a_task_and_its_result(tmp_path: Path) -> None:
    try:
        with redis_server(tmp_path) as url:
            import redis

            store = RedisStore(url, "app")
            rows = [("a", 1, b"record-a", b"result-a", b"in-a"), ("b", 2, b"record-b", None, None)]
            store.commit(rows, [])
            store.commit([("b", 2, b"record-b2", None, None)], [])  # no inputs: they stay
            assert sorted(store.load()) == [rows[0], ("b", 2, b"record-b2", None, None)]
            store.commit([], ["a"])
            assert store.load() == [("b", 2, b"record-b2", None, None)]
            raw = redis.Redis.from_url(url)
            assert raw.hgetall("raytask:journal:app:results") == {}  # no orphan result
            assert raw.hgetall("raytask:journal:app:inputs") == {}  # nor inputs
            raw.close()
            store.close()
    except FileNotFoundError as exc:
        missing(f"the Redis journal is not tested here: {exc}")


# -- a generator task's chunks across a crash (SPEC 10) ------------------------------------


def streaming(path: Stores, calls: FakeCalls, **options: Any) -> TaskManager:
    work = EndpointRoute("work", "work", "Model", TaskOptions(**options), 4, streams=True)
    return TaskManager("app", [work], AppConfig(), calls=calls, store=path())


async def streamed_then_crashed(path: Stores, **options: Any) -> tuple[str, list[bytes]]:
    """A generator task that streamed 3 groups of chunks, each seen by a reader (which
    waits for the journal), then the manager's crash mid-stream; returns the id and the
    chunks a reader saw."""
    calls = FakeCalls()
    first = streaming(path, calls, **options)
    task_id, batch = await running(first, calls)
    table = first.service.table
    seen: list[bytes] = []
    for group in range(3):
        chunks = [encode_chunk(f"{group}.{i}") for i in range(group + 1)]
        batch.stream.put_nowait(FakeRef(Chunks([(task_id, 1, chunks)])))
        count = len(seen) + len(chunks)
        await settle(lambda count=count: len(table.get(task_id).chunks or ()) == count)
        read = await first.stream(task_id, len(seen), 1, 5.0)
        seen += read.chunks
    # one group per write, each with only the chunks since the last (none written twice)
    groups = [opened(first, task_id, sealed) for sealed in path().load_groups()[task_id]]
    assert [ChunkLog.first_of(group) for group in groups] == [0, 1, 3]
    await crash(first)
    return task_id, seen


def opened(manager: TaskManager, task_id: str, sealed: bytes) -> bytes:
    """A chunk group as the journal reads it back (its seal checked)."""
    assert manager.service.journal is not None
    group = manager.service.journal._seal.open(task_id, b"chunks", sealed)
    assert group is not None
    return group


async def test_journaled_chunks_survive_a_crash_mid_stream_and_the_stream_resumes(
    path: Stores,
) -> None:
    task_id, seen = await streamed_then_crashed(path, max_attempts=1)
    assert [json.loads(c) for c in seen] == ["0.0", "1.0", "1.1", "2.0", "2.1", "2.2"]
    second = streaming(path, FakeCalls())
    try:  # no attempt left: it ends, and its reader resumes where it was, then reads the end
        assert second.service.table.get(task_id).status is TaskStatus.FAILURE
        resumed = await second.stream(task_id, 4, 1, 5.0)
        assert resumed.chunks == seen[4:] and resumed.attempt == 1
        assert resumed.state.status is TaskStatus.FAILURE
        assert (resumed.state.error or "").startswith(LOST_RUN)
        assert (await second.stream(task_id, 0, 1, 5.0)).chunks == seen  # none lost
    finally:
        await second.shutdown()


async def test_a_crash_mid_stream_runs_it_again_and_its_reader_gets_the_new_attempt(
    path: Stores,
) -> None:
    task_id, seen = await streamed_then_crashed(path, max_attempts=2)
    calls = FakeCalls()
    second = streaming(path, calls, max_attempts=2)
    try:
        await settle(lambda: len(calls.sent) == 1)  # attempt 2 runs
        batch = calls.assign()
        batch.stream.put_nowait(FakeRef(Chunks([(task_id, 2, [encode_chunk("new")])])))
        read = await second.stream(task_id, len(seen), 1, 5.0)  # a reader of attempt 1
        assert (read.attempt, read.start) == (2, 0)  # starts over: a reset
        if not read.chunks:  # it answered when attempt 2 started; its chunks come next
            read = await second.stream(task_id, 0, 2, 5.0)
        assert read.chunks == [b'"new"']
        batch.end(task_id, STREAMED, 1)
        await settle(lambda: second.service.table.get(task_id).status is TaskStatus.SUCCESS)
        assert await second.result(task_id) == [["new"]]
        (sealed,) = path().load_groups()[task_id]  # attempt 2's; attempt 1's are gone
        log = ChunkLog.rebuild([opened(second, task_id, sealed)])
        assert log is not None and (log.attempt, log.values()) == (2, ["new"])
    finally:
        await second.shutdown()


async def test_a_streamed_result_survives_a_crash_without_a_pickle_and_leaves_with_its_task(
    path: Stores,
) -> None:
    calls = FakeCalls()
    first = streaming(path, calls)
    task_id, batch = await running(first, calls)
    batch.stream.put_nowait(FakeRef(Chunks([(task_id, 1, [encode_chunk({"t": 1}), b"2"])])))
    batch.end(task_id, STREAMED, 2)
    await settle(lambda: first.service.table.get(task_id).status is TaskStatus.SUCCESS)
    await first.status(task_id)  # waits for the journal
    await crash(first)
    assert [row[3] for row in path().load() if row[0] == task_id] == [None]  # no result pickle
    calls = FakeCalls()
    second = streaming(path, calls)
    try:
        assert await second.result(task_id) == [[{"t": 1}, 2]] and calls.sent == []
        assert (await second.stream(task_id, 0, None, 5.0)).chunks == [b'{"t":1}', b"2"]
        await second.delete_many(None, [task_id])
        await second.service.journal.flush()  # type: ignore[union-attr]
        assert task_id not in path().load_groups()  # its chunks left with it
    finally:
        await second.shutdown()


async def test_usage_is_journaled_with_the_task_that_finished_and_survives_crashes(
    path: Stores,
) -> None:
    await succeeded_then_crashed(path)  # its status read waited for the journal
    second = manager(path, FakeCalls())
    rows = await second.usage(UsageQuery())
    assert [(r["tenant"], r["endpoint"], r["tasks"], r["succeeded"]) for r in rows] == [
        ("anonymous", "work", 1, 1)
    ]
    await crash(second)
    third = manager(path, FakeCalls())
    assert await third.usage(UsageQuery()) == rows
    total = third.service.table.usage.run_total[("anonymous", "work")]
    assert total == pytest.approx(rows[0]["run_s"], abs=1e-6)  # rows say microseconds
    await third.shutdown()


async def test_a_finished_task_that_recovery_fails_is_not_counted_twice(path: Stores) -> None:
    calls = FakeCalls()
    first = manager(path, calls, rerun_lost_results=False)
    task_id, batch = await running(first, calls)
    batch.large(task_id, {"value": 1})  # a result the journal does not keep
    await settle(lambda: first.service.table.get(task_id).status is TaskStatus.SUCCESS)
    assert (await first.status(task_id)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    await crash(first)
    second = manager(path, FakeCalls(), rerun_lost_results=False)
    assert second.service.table.get(task_id).status is TaskStatus.FAILURE  # its result is gone
    usage = await second.usage(UsageQuery())
    assert [(r["tasks"], r["succeeded"], r["failed"]) for r in usage] == [(1, 1, 0)]
    await second.shutdown()
