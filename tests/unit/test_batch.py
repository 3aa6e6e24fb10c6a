"""The replica's side of batched dispatch, on plain asyncio (no Ray)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

import raytask
from raytask.server.batch import (
    BATCH_METHOD,
    FAILED,
    FOLLOWS,
    STOPPED,
    VALUE,
    BatchItem,
    Outcomes,
    fits_inline,
    run_batch,
    with_runner,
)


class Worker:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()
        self.joined: list[int] = []

    @raytask.task
    async def hold(self, n: int = 0) -> int:
        """Runs until the gate opens; counts how many run at once."""
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return n

    @raytask.task
    async def quick(self, n: int = 0) -> int:
        return n

    @raytask.task
    def add(self, a: int, b: int = 1) -> int:
        return a + b

    @raytask.task
    def boom(self) -> None:
        raise KeyError("missing")

    @raytask.task
    def big(self, size: int) -> bytes:
        return b"x" * size


def items(method: str, *kwargs: dict[str, Any]) -> list[BatchItem]:
    return [BatchItem(f"t{i}", 1, method, kw) for i, kw in enumerate(kwargs)]


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def ended(stream_items: list[Any]) -> dict[str, tuple[str, Any]]:
    return {
        task_id: (kind, payload)
        for item in stream_items
        if isinstance(item, Outcomes)
        for task_id, _, kind, payload, _ in item.ended
    }


async def test_attempts_run_at_once_and_end_in_one_item_per_turn() -> None:
    worker = Worker()
    stream = run_batch(worker, items("hold", *({"n": i} for i in range(5))), limit=16)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
    assert worker.most == 5  # all started before any ended: @serve.batch can join them
    worker.gate.set()
    out = [await first] + await collect(stream)
    assert len(out) == 1  # they ended in the same turn: one streamed item
    assert ended(out) == {f"t{i}": (VALUE, i) for i in range(5)}


async def test_the_replica_limit_caps_attempts_running_at_once() -> None:
    worker = Worker()
    stream = run_batch(worker, items("hold", *({"n": i} for i in range(6))), limit=2)
    reading = asyncio.ensure_future(collect(stream))
    await asyncio.sleep(0.05)
    assert worker.running == 2
    worker.gate.set()
    assert len(ended(await reading)) == 6 and worker.most == 2


async def test_failures_and_large_values_travel_apart() -> None:
    worker = Worker()
    batch = [
        BatchItem("ok", 3, "add", {"a": 1}),
        BatchItem("bad", 1, "boom", {}),
        BatchItem("large", 2, "big", {"size": 100_000}),
    ]
    out = await collect(run_batch(worker, batch, limit=8))
    outcomes = [item for item in out if isinstance(item, Outcomes)]
    attempt_nos = {e.task_id: e.attempt_no for o in outcomes for e in o.ended}
    assert attempt_nos == {"ok": 3, "bad": 1, "large": 2}
    seen = ended(out)
    assert seen["ok"] == (VALUE, 2)
    assert seen["bad"] == (FAILED, "KeyError: 'missing'")
    assert seen["large"] == (FOLLOWS, None)
    # the large value is the item right after the outcome that announced it
    announced = next(
        i
        for i, o in enumerate(out)
        if isinstance(o, Outcomes) and any(e.task_id == "large" for e in o.ended)
    )
    assert out[announced + 1] == b"x" * 100_000


async def test_a_stop_cancels_one_attempt_alone() -> None:
    worker = Worker()
    asked: list[int] = []
    answers: asyncio.Queue[list[str] | None] = asyncio.Queue()

    async def stops(seen: int) -> list[str] | None:
        asked.append(seen)
        return await answers.get()

    stream = run_batch(worker, items("hold", {"n": 0}, {"n": 1}), limit=8, stops=stops)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.1)  # past LISTEN_AFTER_S: the listener asks
    assert asked == [0]
    answers.put_nowait(["t0"])
    assert ended([await first]) == {"t0": (STOPPED, None)}
    await asyncio.sleep(0.01)
    assert asked == [0, 1] and worker.running == 1  # the other runs on
    worker.gate.set()
    assert ended(await collect(stream)) == {"t1": (VALUE, 1)}


async def test_short_batches_never_ask_for_stops() -> None:
    async def stops(seen: int) -> list[str] | None:
        raise AssertionError("asked")

    out = await collect(run_batch(Worker(), items("quick", {"n": 1}), limit=1, stops=stops))
    assert ended(out) == {"t0": (VALUE, 1)}


async def test_closing_the_stream_cancels_what_still_runs() -> None:
    worker = Worker()
    stream = run_batch(worker, items("hold", {}), limit=1)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.02)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    await asyncio.sleep(0.01)
    assert worker.running == 0


@pytest.mark.parametrize(
    ("value", "small"),
    [
        (None, True),
        ({"words": 3, "top": ["a", "b"]}, True),
        ([0.1] * 384, True),
        (b"x" * 40_000, False),
        ("y" * 40_000, False),
        ([[0.0] * 100] * 100, False),  # too many items to size cheaply
        (object(), False),  # a type it cannot size: its own item
    ],
)
def test_fits_inline(value: Any, small: bool) -> None:
    assert fits_inline(value) is small


def test_with_runner_subclasses_without_changing_the_class() -> None:
    wrapped = with_runner(Worker)
    assert issubclass(wrapped, Worker) and wrapped.__name__ == "Worker"
    assert hasattr(wrapped, BATCH_METHOD) and not hasattr(Worker, BATCH_METHOD)

    async def run() -> list[Any]:
        call = getattr(wrapped(), BATCH_METHOD)(None, 1, items("add", {"a": 1, "b": 1}), 4)
        return await collect(call)

    assert ended(asyncio.run(run())) == {"t0": (VALUE, 2)}


class Streamer:
    def __init__(self) -> None:
        self.gate = asyncio.Event()

    @raytask.task
    async def tokens(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"t{i}"
            if i == 1:
                await self.gate.wait()  # the reader sees the first two before the end

    @raytask.task
    def lines(self, n: int):  # a sync generator runs in a thread of its own
        for i in range(n):
            yield {"line": i}

    @raytask.task
    async def unsendable(self) -> AsyncIterator[object]:
        yield "fine"
        yield object()


def chunks_of(out: list[Any]) -> dict[str, list[Any]]:
    from raytask.server.batch import Chunks

    found: dict[str, list[Any]] = {}
    for item in out:
        if isinstance(item, Chunks):
            for task_id, _, encoded in item.streamed:  # each chunk travels as its JSON
                found.setdefault(task_id, []).extend(json.loads(chunk) for chunk in encoded)
    return found


async def test_chunks_travel_as_they_come_and_before_their_attempts_end() -> None:
    from raytask.server.batch import STREAMED, Chunks

    streamer = Streamer()
    batch = [
        BatchItem("a", 1, "tokens", {"n": 4}),
        BatchItem("b", 2, "lines", {"n": 3}),
        BatchItem("c", 1, "unsendable", {}),
    ]
    stream = run_batch(streamer, batch, limit=8)
    early: list[Any] = []
    while chunks_of(early).get("a", []) != ["t0", "t1"]:
        early.append(await stream.__anext__())  # before the gate opens: live
    assert "a" not in ended(early)
    streamer.gate.set()
    out = early + await collect(stream)
    assert chunks_of(out) == {
        "a": ["t0", "t1", "t2", "t3"],
        "b": [{"line": 0}, {"line": 1}, {"line": 2}],
        "c": ["fine"],
    }
    seen = ended(out)
    assert seen["a"] == (STREAMED, 4) and seen["b"] == (STREAMED, 3)
    assert seen["c"][0] == FAILED and "cannot be sent as JSON" in seen["c"][1]
    # every chunk of a task comes before the item that says it ended
    last_chunk = max(
        i
        for i, o in enumerate(out)
        if isinstance(o, Chunks) and any(r[0] == "a" for r in o.streamed)
    )
    end_of_a = next(
        i
        for i, o in enumerate(out)
        if isinstance(o, Outcomes) and any(e[0] == "a" for e in o.ended)
    )
    assert last_chunk < end_of_a
    assert all(n == 2 for o in out if isinstance(o, Chunks) for t, n, _ in o.streamed if t == "b")


class Reporting:
    @raytask.task
    async def steps(self, n: int) -> int:
        for i in range(1, n + 1):
            raytask.report_progress(i / n, f"{i} of {n}")
        return n


async def test_the_outcome_carries_the_methods_last_report_and_close_sends_nothing() -> None:
    from raytask.core.progress import ProgressReporter

    sent: list[Any] = []
    loop = asyncio.get_running_loop()

    def reporter_for(item: BatchItem) -> ProgressReporter:
        return ProgressReporter(lambda *report: sent.append(report), loop, send_last=False)

    out = await collect(run_batch(Reporting(), items("steps", {"n": 10}), 4, None, reporter_for))
    (outcome,) = [item for item in out if isinstance(item, Outcomes)]
    assert outcome.ended[0].progress == (1.0, "10 of 10")
    assert sent == [(0.1, "1 of 10")]  # the first went at once; the rest were held back
