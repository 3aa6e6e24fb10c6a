"""``delete_many`` (SPEC §7): finished tasks go from the table and from the journal at once,
their ids answer 404 (not 410), and unfinished, unknown and foreign ids are skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytask.core.config import AppConfig, TaskOptions
from raytask.core.dispatcher import EndpointRoute
from raytask.core.errors import TaskNotFoundError
from raytask.core.messages import Submit
from raytask.core.record import Result
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable
from raytask.server.journal import Journal, SQLiteStore
from raytask.server.service import TaskService

from ..support import FakeClock

KEY = b"k" * 32


def routes() -> list[EndpointRoute]:
    return [
        EndpointRoute(name, name, "Model", TaskOptions(), max_ongoing_requests=4)
        for name in ("work", "other")
    ]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "j.db")


@pytest.fixture
async def service(store: SQLiteStore, clock: FakeClock) -> TaskService:
    return TaskService("app", routes(), AppConfig(), journal=Journal(store, key=KEY), clock=clock)


async def queued(service: TaskService, endpoint: str = "work", owner: str | None = None) -> str:
    state = await service.submit(Submit(endpoint, {"n": 1}, owner=owner))
    return state.task_id


def finish(service: TaskService, task_id: str, ok: bool = True) -> None:
    record = service.table.pop_next(service.table.get(task_id).endpoint)
    assert record is not None and record.task_id == task_id
    if ok:
        service.table.succeed(task_id, Result(value={"n": 1}, size=10, inline=True))
    else:
        service.table.fail(task_id, "boom")


def journaled(store: SQLiteStore) -> set[str]:
    return {row[0] for row in store.load()}


async def test_deleting_by_ids_removes_finished_tasks_and_their_rows(
    service: TaskService, store: SQLiteStore
) -> None:
    done, failed, waiting = [await queued(service) for _ in range(3)]
    elsewhere = await queued(service, "other")
    finish(service, done)
    finish(service, failed, ok=False)
    finish(service, elsewhere)
    await service._flush()
    assert journaled(store) == {done, failed, waiting, elsewhere}
    held = service.table.held_bytes

    ids = [done, failed, waiting, elsewhere, "f" * 32]
    assert await service.delete_many("work", ids) == (2, 3)

    assert journaled(store) == {waiting, elsewhere}  # written before the answer
    assert service.table.held_bytes < held
    assert service.table.ids_in([TaskStatus.SUCCESS, TaskStatus.FAILURE], "work") == []
    for task_id in (done, failed):
        with pytest.raises(TaskNotFoundError):  # gone, not expired: 404
            await service.status(task_id)
    assert (await service.status(waiting)).status == "pending"
    assert (await service.status(elsewhere, endpoint="other")).status == "success"
    assert await service.delete_many("work", [done]) == (0, 1)  # twice: skipped


async def test_deleting_by_status_and_age(service: TaskService, clock: FakeClock) -> None:
    old = await queued(service)
    finish(service, old)
    clock.advance(100)
    young, failed = await queued(service), await queued(service)
    finish(service, young)
    finish(service, failed, ok=False)
    clock.advance(10)
    assert await service.delete_many("work", None, "success", older_than_s=50) == (1, 0)
    with pytest.raises(TaskNotFoundError):
        await service.status(old)
    assert (await service.status(young)).status == "success"
    assert await service.delete_many("work", None, "failure") == (1, 0)
    assert await service.delete_many(None, None, "success") == (1, 0)  # every endpoint
    assert service.table.held_bytes == 0


async def test_an_owner_deletes_only_their_own_tasks(service: TaskService) -> None:
    alice, bob = await queued(service, owner="alice"), await queued(service, owner="bob")
    finish(service, alice)
    finish(service, bob)
    assert await service.delete_many("work", [alice, bob], owner="bob") == (1, 1)
    assert await service.delete_many("work", None, "success", owner="bob") == (0, 0)
    assert (await service.status(alice)).status == "success"


async def test_a_deleted_idempotency_key_queues_anew(service: TaskService) -> None:
    first = await service.submit(Submit("work", {"n": 1}, idempotency_key="k"))
    finish(service, first.task_id)
    await service.delete_many("work", [first.task_id])
    again = await service.submit(Submit("work", {"n": 1}, idempotency_key="k"))
    assert again.task_id != first.task_id


def test_the_sweep_skips_tasks_deleted_or_moved_since(clock: FakeClock) -> None:
    table = TaskTable(clock=clock)
    a, b = (table.submit("e", {}, TaskOptions(ttl_s=1)) for _ in range(2))
    for record in (a, b):
        table.pop_next("e")
        table.succeed(record.task_id)
    waiting = table.submit("e", {}, TaskOptions())
    assert table.delete([waiting.task_id, "f" * 32]) == []  # unfinished and unknown: kept
    assert table.get(waiting.task_id).status == "pending" and table.pending_count == 1
    assert table.delete([a.task_id]) == [a.task_id]
    clock.advance(2)
    assert table.sweep() == [b.task_id]  # a's expiry entry is stale: no tombstone for it
    with pytest.raises(TaskNotFoundError):
        table.get(a.task_id)


async def test_an_age_applies_to_given_ids_too(service: TaskService, clock: FakeClock) -> None:
    old, young = await queued(service), await queued(service)
    finish(service, old)
    clock.advance(60)
    finish(service, young)
    assert await service.delete_many("work", [old, young], older_than_s=30) == (1, 1)
    assert (await service.status(young)).status == "success"


def test_deleted_tasks_leave_no_expiry_behind(clock: FakeClock) -> None:
    # A batch job deletes each line's task once written: a million of them must not keep a
    # million expiries (their TTL is a day) in the heap.
    table = TaskTable(10**6, 1.0, clock=clock)
    kept = table.submit("work", {}, TaskOptions())
    table.pop_next("work")
    table.succeed(kept.task_id, Result(None, 0))
    for _ in range(20):
        records = [table.submit("work", {"i": i}, TaskOptions()) for i in range(500)]
        for record in records:
            table.pop_next("work")
            table.succeed(record.task_id, Result(None, 0))
        table.delete(r.task_id for r in records)
        assert len(table._expiries) <= 2 * len(table._records) + 1024 + 500
    assert len(table._expiries) < 2_000
    clock.advance(TaskOptions().ttl_s + 1)
    assert table.sweep() == [kept.task_id]  # the live one still expires at its TTL
