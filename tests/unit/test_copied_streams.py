"""Streams from an ingress replica's copy (raytask.core.feed, raytask.core.copy): a
streaming task's chunks travel to each copy once, the copy answers stream readers of
running and finished tasks, and the feed sends nothing the journal does not hold yet."""

from __future__ import annotations

import asyncio

from raytask.core.chunks import ChunkLog
from raytask.core.config import AppConfig, TaskOptions
from raytask.core.copy import StateCopy
from raytask.core.dispatcher import EndpointRoute
from raytask.core.feed import ChangeFeed, Chunks
from raytask.core.messages import Submit
from raytask.core.record import Result
from raytask.core.status import TaskStatus
from raytask.server.journal import Journal
from raytask.server.service import TaskService

from ..support import FakeClock
from .test_feed import A, B, Tasks, entry, group
from .test_journal import KEY, SlowStore


def jsons(*values: str) -> list[bytes]:
    return [f'"{v}"'.encode() for v in values]


async def test_a_streaming_tasks_chunks_travel_once_to_each_copy() -> None:
    tasks, logs = Tasks(), {A: ChunkLog.of(1, ["a", "b"])}
    feed = ChangeFeed(tasks.entry, logs.get, lease_s=5.0, hold_s=0.05, gather_s=0.0)
    r1 = await feed.poll("r1", None, 0)
    tasks.set(A, TaskStatus.IN_PROGRESS)
    feed.changed(A)
    g1 = await feed.poll("r1", r1.epoch, r1.version)
    assert g1.entries[A].chunks == Chunks(1, 0, jsons("a", "b"))
    logs[A].extend(jsons("c"))
    feed.changed(A)
    g2 = await feed.poll("r1", g1.epoch, g1.version)
    assert g2.entries[A].chunks == Chunks(1, 2, jsons("c"))  # only what r1 lacks
    r2 = await feed.poll("r2", None, 0)  # a copy that starts now
    logs[A].extend(jsons("d"))
    feed.changed(A)
    assert (await feed.poll("r2", r2.epoch, r2.version)).entries[A].chunks == Chunks(
        1, 0, jsons("a", "b", "c", "d")
    )
    assert (await feed.poll("r1", g2.epoch, g2.version)).entries[A].chunks == Chunks(
        1, 3, jsons("d")
    )
    # That answer was lost on its way: r1 asks from g2's version again and gets them all.
    again = await feed.poll("r1", g2.epoch, g2.version)
    assert again.entries[A].chunks == Chunks(1, 0, jsons("a", "b", "c", "d"))
    logs[A] = ChunkLog.of(2, ["x"])  # a new attempt: its chunks from the first
    feed.changed(A)
    tasks.set(B, TaskStatus.IN_PROGRESS)  # not a generator: no chunks
    feed.changed(B)
    newer = await feed.poll("r1", again.epoch, again.version)
    assert newer.entries[A].chunks == Chunks(2, 0, jsons("x"))
    assert newer.entries[B].chunks is None


def streaming(task_id: str, status: TaskStatus, chunks: Chunks | None) -> object:
    return entry(task_id, status)._replace(chunks=chunks)


def test_the_copy_answers_stream_reads_from_the_chunks_it_was_sent() -> None:
    clock, wall = FakeClock(0.0), FakeClock(1000.0)
    copy = StateCopy(clock=clock, wall=wall, lease_s=2.0)
    copy.apply(group("e1", 0, {}, reset=True), copy.sent())
    running = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 0, jsons("a", "b")))
    copy.apply(group("e1", 1, {A: running}), copy.sent())  # type: ignore[dict-item]
    read = copy.stream(A, 0, None)
    assert read is not None and (read.attempt, read.start, read.chunks) == (1, 0, jsons("a", "b"))
    assert read.state.status is TaskStatus.IN_PROGRESS and not read.more
    later = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 2, jsons("c")))
    copy.apply(group("e1", 2, {A: later}), copy.sent())  # type: ignore[dict-item]
    assert copy.stream(A, 1, 1).chunks == jsons("b", "c")  # type: ignore[union-attr]
    assert copy.stream(A, 3, 1).chunks == []  # type: ignore[union-attr]
    assert copy.result_bytes == len(b'"a""b""c"')
    # A resend from the first (a lost answer) overlaps what it holds: nothing twice.
    resent = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 0, jsons("a", "b", "c", "d")))
    copy.apply(group("e1", 3, {A: resent}), copy.sent())  # type: ignore[dict-item]
    assert copy.stream(A, 0, 1).chunks == jsons("a", "b", "c", "d")  # type: ignore[union-attr]
    # A reader of the attempt that was lost is told of the new one, from its first chunk.
    retried = streaming(A, TaskStatus.IN_PROGRESS, Chunks(2, 0, jsons("x")))
    copy.apply(group("e1", 4, {A: retried}), copy.sent())  # type: ignore[dict-item]
    read = copy.stream(A, 4, 1)
    assert read is not None and (read.attempt, read.start, read.chunks) == (2, 0, jsons("x"))
    # A copy that got the stream mid-way sends readers of earlier chunks to the manager.
    mid = streaming(B, TaskStatus.IN_PROGRESS, Chunks(1, 5, jsons("f")))
    copy.apply(group("e1", 5, {B: mid}), copy.sent())  # type: ignore[dict-item]
    assert copy.stream(B, 0, None) is None and copy.stream(B, 5, None).chunks == jsons("f")  # type: ignore[union-attr]
    # Pending (its queue position is the manager's), past the lease, or forgotten: None.
    copy.apply(group("e1", 6, {B: streaming(B, TaskStatus.PENDING, None)}), copy.sent())  # type: ignore[dict-item]
    assert copy.stream(B, 0, None) is None
    copy.apply(group("e1", 7, {A: None, B: None}), copy.sent())
    assert copy.stream(A, 0, None) is None and copy.result_bytes == 0
    copy.apply(group("e1", 8, {A: retried}), copy.sent())  # type: ignore[dict-item]
    clock.advance(2.0)
    assert copy.stream(A, 0, None) is None


async def test_a_stream_wait_on_the_copy_wakes_on_the_group_with_new_chunks() -> None:
    copy = StateCopy(lease_s=5.0)
    first = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 0, jsons("a")))
    copy.apply(group("e1", 1, {A: first}, reset=True), copy.sent())  # type: ignore[dict-item]
    waiting = asyncio.ensure_future(copy.stream_wait(A, 1, 1, 5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    more = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 1, jsons("b")))
    copy.apply(group("e1", 2, {A: more}), copy.sent())  # type: ignore[dict-item]
    read = await asyncio.wait_for(waiting, 1.0)
    assert read is not None and read.chunks == jsons("b")
    # Nothing new within wait_s: the answer says so (as the manager's would).
    quiet = await copy.stream_wait(A, 2, 1, 0.05)
    assert quiet is not None and quiet.chunks == [] and not quiet.state.status.finished
    # The end wakes a reader that has every chunk; a lost copy sends it to the manager.
    ending = asyncio.ensure_future(copy.stream_wait(A, 2, 1, 5.0))
    await asyncio.sleep(0.01)
    done = streaming(A, TaskStatus.SUCCESS, Chunks(1, 2, []))
    copy.apply(group("e1", 3, {A: done}), copy.sent())  # type: ignore[dict-item]
    assert (await asyncio.wait_for(ending, 1.0)).state.status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    copy.apply(group("e1", 4, {B: streaming(B, TaskStatus.IN_PROGRESS, None)}), copy.sent())  # type: ignore[dict-item]
    lost = asyncio.ensure_future(copy.stream_wait(B, 0, None, 0.0))
    assert (await lost) is not None  # B runs: that is news to a reader of any attempt
    lost = asyncio.ensure_future(copy.stream_wait(B, 0, 1, 5.0))
    await asyncio.sleep(0.01)
    copy.lost()
    assert await asyncio.wait_for(lost, 1.0) is None


async def test_the_feed_sends_no_state_or_chunk_the_journal_does_not_hold_yet(
    clock: FakeClock,
) -> None:
    store = SlowStore()
    route = EndpointRoute("words", "words", "Model", TaskOptions(), 4, streams=True)
    service = TaskService("app", [route], AppConfig(), journal=Journal(store, key=KEY), clock=clock)
    start = await service.changes("r1", None, 0)
    store.gate.set()
    task_id = (await service.submit(Submit("words", {"n": 1}))).task_id
    store.gate.clear()
    store.entered.clear()
    service.table.pop_next("words")
    service.table.add_chunks(task_id, 1, jsons("a"))
    polled = asyncio.ensure_future(service.changes("r1", start.epoch, start.version))
    await asyncio.to_thread(store.entered.wait, 10)  # the running state is being written
    await asyncio.sleep(0.05)
    assert not polled.done()  # held until the journal has it
    store.gate.set()
    got = await asyncio.wait_for(polled, 5.0)
    assert got.entries[task_id].chunks == Chunks(1, 0, jsons("a"))
    assert not service.journal.pending(task_id)  # type: ignore[union-attr]
    service.table.succeed(task_id, Result(service.table.get(task_id).chunks, 0))
    assert (await service.changes("r1", got.epoch, got.version)).entries[
        task_id
    ].state.status is TaskStatus.SUCCESS


async def test_a_copy_behind_the_reader_tells_nothing_older_and_waits() -> None:
    """A reader placed by a direct answer (attempt 2, or three chunks in) reads on from a
    copy that has not caught up: no reset to the older attempt, no chunk twice."""
    copy = StateCopy(lease_s=5.0)
    old = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 0, jsons("a", "b")))
    copy.apply(group("e1", 1, {A: old}, reset=True), copy.sent())  # type: ignore[dict-item]
    copy.answered(A)  # the manager answered this task directly: the entry is fenced
    assert copy.state(A) is None
    for start, attempt in ((0, 2), (3, 1), (3, None)):
        read = copy.stream(A, start, attempt)
        assert read is not None and read.chunks == [] and read.start == start
        assert read.attempt in (attempt, 1)  # the reader's place, not an older one
    waiting = asyncio.ensure_future(copy.stream_wait(A, 3, 1, 5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    caught_up = streaming(A, TaskStatus.IN_PROGRESS, Chunks(1, 2, jsons("c", "d")))
    copy.apply(group("e1", 2, {A: caught_up}), copy.sent())  # type: ignore[dict-item]
    read = await asyncio.wait_for(waiting, 1.0)
    assert read is not None and (read.start, read.chunks) == (3, jsons("d"))
    # Finished, the copy holds every chunk: it answers as the manager would.
    done = streaming(A, TaskStatus.FAILURE, Chunks(1, 4, []))
    copy.apply(group("e1", 3, {A: done}), copy.sent())  # type: ignore[dict-item]
    read = copy.stream(A, 0, 2)
    assert read is not None and read.state.status is TaskStatus.FAILURE
    assert (read.attempt, read.start, len(read.chunks)) == (1, 0, 4)
