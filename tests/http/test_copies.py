"""Two ingress replicas over one task service, each with its copy of the task states
(raytask.core.feed, raytask.core.copy, raytask.server.reads): reads answer from the copy,
and a write acknowledged at one replica is seen at the other at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from raytask.core.config import AppConfig
from raytask.core.copy import StateCopy
from raytask.core.record import Result
from raytask.server.reads import CopiedReads
from raytask.server.routes import Routes

from ..support import FakeClock
from .conftest import ServedBackend
from .test_routes import assert_error, submit
from .test_streams import events

WORDS = {"words": 3, "top": ["a", "b", "c"]}


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=1000)


class Replica:
    """One ingress replica: its copy, following the service's feed, and its routes."""

    def __init__(self, backend: ServedBackend, config: AppConfig, clock: FakeClock, name: str):
        self.copy = StateCopy(wall=clock)
        self.name = name
        reads = CopiedReads(backend, self.copy)
        app = Routes(list(backend.endpoints.values()), reads, config).asgi_app()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://raytask"
        )

        async def poll(epoch: str | None, since: int) -> Any:
            return await backend.changes(name, epoch, since)

        self.following = asyncio.create_task(self.copy.follow(poll))

    async def stop(self) -> None:
        self.following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.following
        await self.client.aclose()


def count_calls(backend: ServedBackend) -> Counter[str]:
    """Count the service's read commands (what an actor call would be)."""
    calls: Counter[str] = Counter()
    for name in ("status", "status_many", "wait", "result", "stream"):
        method = getattr(backend, name)

        async def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            calls[_name] += 1
            return await _method(*args, **kw)

        setattr(backend, name, counted)
    return calls


@pytest.fixture
async def replicas(
    backend: ServedBackend, config: AppConfig, clock: FakeClock
) -> AsyncIterator[list[Replica]]:
    pair = [Replica(backend, config, clock, name) for name in ("r1", "r2")]
    yield pair
    for replica in pair:
        await replica.stop()


async def held(replicas: list[Replica], task_ids: list[str], what: str = "status") -> None:
    """Wait until every copy holds the tasks' latest states."""
    for _ in range(200):
        if all(
            r.copy.held(t) and r.copy.version == replicas[0].copy.version
            for r in replicas
            for t in task_ids
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the copies never held {task_ids}")


async def test_reads_of_finished_and_running_tasks_never_reach_the_service(
    backend: ServedBackend, replicas: list[Replica]
) -> None:
    a, b = replicas
    done = [await submit(a.client, "wordcount", {"text": "a b c"}) for _ in range(3)]
    await backend.drain()
    running = await submit(a.client, "wordcount", {"text": "x"})
    backend.dispatcher.take()
    await held(replicas, [*done, running])
    calls = count_calls(backend)
    for replica in replicas:
        for task_id in done:
            answer = await replica.client.get("/wordcount/status", params={"task_id": task_id})
            assert answer.json()["status"] == "success"
            got = await replica.client.get("/wordcount/get", params={"task_id": task_id})
            assert got.json() == WORDS
            waited = await replica.client.get(
                "/wordcount/get", params={"task_id": task_id, "wait_s": 5}
            )
            assert waited.json() == WORDS
        answer = await replica.client.get("/wordcount/status", params={"task_id": running})
        assert answer.json()["status"] == "in_progress"
        many = await replica.client.post("/status_many", json={"task_ids": [*done, running]})
        assert [t["status"] for t in many.json()["tasks"]] == ["success"] * 3 + ["in_progress"]
    assert calls == Counter()
    # The owner and endpoint rules hold on the copy's states too.
    other = await b.client.get("/sleep/status", params={"task_id": done[0]})
    assert other.status_code == 404 and "belongs to 'wordcount'" in other.json()["error"]
    # A pending task's queue position is the service's: that read goes to it.
    queued = await submit(a.client, "wordcount", {"text": "y"})
    await held(replicas, [queued])
    answer = await b.client.get("/wordcount/status", params={"task_id": queued})
    assert answer.json()["queue_position"] == 0 and calls["status"] == 1


async def test_a_write_acknowledged_at_one_replica_is_read_at_the_other(
    backend: ServedBackend, replicas: list[Replica]
) -> None:
    a, b = replicas
    backend.feed.gather_s = 0.05  # groups are slow to come: only the acks' wait saves the reads
    finished = [await submit(a.client, "wordcount", {"text": f"{i}"}) for i in range(10)]
    await backend.drain()
    running = [await submit(a.client, "wordcount", {"text": f"r{i}"}) for i in range(10)]
    backend.dispatcher.take()
    await held(replicas, finished + running)

    async def delete_then_read(task_id: str, writer: Replica, reader: Replica) -> None:
        deleted = await writer.client.post("/wordcount/delete_many", json={"task_ids": [task_id]})
        assert deleted.json()["deleted"] == 1
        answer = await reader.client.get("/wordcount/status", params={"task_id": task_id})
        assert answer.status_code == 404, answer.text

    async def cancel_then_read(task_id: str, writer: Replica, reader: Replica) -> None:
        cancelled = await writer.client.post("/wordcount/cancel", params={"task_id": task_id})
        assert cancelled.json()["status"] == "cancelled"
        answer = await reader.client.get("/wordcount/status", params={"task_id": task_id})
        assert answer.json()["status"] == "cancelled", answer.text

    pairs = [(a, b), (b, a)] * 5
    await asyncio.gather(
        *(delete_then_read(t, *pair) for t, pair in zip(finished, pairs, strict=True)),
        *(cancel_then_read(t, *pair) for t, pair in zip(running, pairs, strict=True)),
    )


async def test_a_long_poll_at_a_replica_wakes_when_the_task_finishes(
    backend: ServedBackend, replicas: list[Replica]
) -> None:
    a, b = replicas
    task_id = await submit(a.client, "wordcount", {"text": "late"})
    ((attempt, _, _),) = backend.dispatcher.take()
    await held(replicas, [task_id])
    calls = count_calls(backend)
    params = {"task_id": task_id, "wait_s": 30}
    got = asyncio.create_task(b.client.get("/wordcount/get", params=params))
    status = asyncio.create_task(a.client.get("/wordcount/status", params=params))
    await asyncio.sleep(0.1)
    assert not got.done() and not status.done()
    backend.dispatcher.succeed(attempt, Result({"late": 1}, 10))
    assert (await asyncio.wait_for(got, 1.0)).json() == {"late": 1}
    assert (await asyncio.wait_for(status, 1.0)).json()["status"] == "success"
    assert calls == Counter()


async def test_a_new_replica_starts_empty_and_a_dead_one_holds_writes_only_for_its_lease(
    backend: ServedBackend, config: AppConfig, clock: FakeClock, replicas: list[Replica]
) -> None:
    a, b = replicas
    backend.feed.lease_s = 0.3
    task_id = await submit(a.client, "wordcount", {"text": "z"})
    await backend.drain()
    await held(replicas, [task_id])
    await b.stop()  # replica b is gone; a new one takes its place
    fresh = Replica(backend, config, clock, "r3")
    try:
        calls = count_calls(backend)
        answer = await fresh.client.get("/wordcount/status", params={"task_id": task_id})
        assert answer.json()["status"] == "success" and calls["status"] == 1  # not held yet
        deleted = await asyncio.wait_for(
            a.client.post("/wordcount/delete_many", json={"task_ids": [task_id]}), 2.0
        )
        assert deleted.json()["deleted"] == 1  # b's silence held it up for its lease at most
        answer = await fresh.client.get("/wordcount/status", params={"task_id": task_id})
        assert answer.status_code == 404
    finally:
        await fresh.stop()


async def test_building_a_group_changes_no_task(
    backend: ServedBackend, clock: FakeClock, replicas: list[Replica]
) -> None:
    """A task past its queue deadline when its group is built is sent as it is: the feed
    reads the table and never expires it meanwhile (which would change the log it walks)."""
    start = await backend.changes("r9", None, 0)
    a, _ = replicas
    task_id = await submit(a.client, "wordcount", {"text": "late"}, max_queue_s=1)
    clock.advance(5)
    group = await backend.changes("r9", start.epoch, start.version)
    assert group.entries[task_id].state.status.value == "pending"


async def test_a_stream_reader_at_a_replica_follows_the_copy_and_wakes_at_once(
    backend: ServedBackend, replicas: list[Replica]
) -> None:
    a, b = replicas
    task_id = await submit(a.client, "words", {"text": "one two", "delay_s": 0})
    ((attempt, _, _),) = backend.dispatcher.take()
    backend.table.add_chunks(task_id, attempt.attempt_no, [b'"one"'])
    await held(replicas, [task_id])
    calls = count_calls(backend)
    reading = asyncio.create_task(b.client.get("/words/stream", params={"task_id": task_id}))
    resumed = asyncio.create_task(
        a.client.get("/words/stream", params={"task_id": task_id}, headers={"Last-Event-ID": "0"})
    )
    await asyncio.sleep(0.1)
    assert not reading.done() and not resumed.done()  # both wait on their copy
    backend.table.add_chunks(task_id, attempt.attempt_no, [b'"two"'])
    await asyncio.sleep(0.05)
    backend.dispatcher.succeed(attempt, Result(backend.table.get(task_id).chunks, 0))
    got = events((await asyncio.wait_for(reading, 2.0)).text)
    assert got[:-1] == [("output", "0", "one"), ("output", "1", "two")]
    assert got[-1][0] == "done" and got[-1][2]["chunks"] == 2
    got = events((await asyncio.wait_for(resumed, 2.0)).text)
    assert [(e, i) for e, i, _ in got] == [("output", "1"), ("done", None)]
    assert calls == Counter()
    # The endpoint rule holds on the copy too; a finished stream is read from it again.
    assert_error(await b.client.get("/noop/stream", params={"task_id": task_id}), 404, "'words'")
    again = events((await a.client.get("/words/stream", params={"task_id": task_id})).text)
    assert [d for e, _, d in again if e == "output"] == ["one", "two"] and calls == Counter()
    # A pending task's reads go to the service (the copy holds no queue position): the
    # first one, then the long-poll that waits for it to start.
    queued = await submit(a.client, "words", {"text": "three", "delay_s": 0})
    await held(replicas, [queued])
    reading = asyncio.create_task(b.client.get("/words/stream", params={"task_id": queued}))
    await asyncio.sleep(0.1)
    assert calls["stream"] == 2
    await backend.drain()
    got = events((await asyncio.wait_for(reading, 2.0)).text)
    assert [d for e, _, d in got if e == "output"] == ["three"] and got[-1][0] == "done"
