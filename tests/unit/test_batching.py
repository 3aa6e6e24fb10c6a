"""The Coalescer: calls made while a batch is in flight travel together, in order."""

from __future__ import annotations

import asyncio

import pytest

from raytask.core.batching import Coalescer

from ..support import settle


class FakeManager:
    """Answers each batch when the test releases it; records what each batch carried."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 10 for item in items]


async def test_a_lone_call_goes_at_once() -> None:
    manager = FakeManager()
    manager.release.set()
    coalesce = Coalescer(manager.send)
    assert await coalesce(1) == 10
    assert manager.batches == [[1]]


async def test_calls_made_while_batches_fly_are_joined_in_order() -> None:
    manager = FakeManager()
    coalesce = Coalescer(manager.send, max_in_flight=1)
    calls = [asyncio.ensure_future(coalesce(i)) for i in range(6)]
    await settle()
    assert manager.batches == [[0]]  # the first went alone; the rest wait for it
    manager.release.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40, 50]
    assert manager.batches == [[0], [1, 2, 3, 4, 5]]
    assert (coalesce.batches, coalesce.items) == (2, 6)


async def test_batches_are_capped() -> None:
    manager = FakeManager()
    coalesce = Coalescer(manager.send, max_in_flight=1, max_batch=2)
    calls = [asyncio.ensure_future(coalesce(i)) for i in range(5)]
    await settle()
    manager.release.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40]
    assert manager.batches == [[0], [1, 2], [3, 4]]


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_goes() -> None:
    manager = FakeManager()
    coalesce = Coalescer(manager.send, max_in_flight=1)
    first = [asyncio.ensure_future(coalesce(i)) for i in range(3)]
    await settle()
    manager.fail_with = ConnectionError("manager restarting")
    manager.release.set()
    outcomes = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    manager.fail_with = None
    assert await coalesce(7) == 70


async def test_a_caller_that_goes_away_does_not_disturb_the_others() -> None:
    manager = FakeManager()
    coalesce = Coalescer(manager.send, max_in_flight=1)
    calls = [asyncio.ensure_future(coalesce(i)) for i in range(3)]
    await settle()
    calls[2].cancel()
    manager.release.set()
    assert await asyncio.gather(calls[0], calls[1]) == [0, 10]
    with pytest.raises(asyncio.CancelledError):
        await calls[2]


async def test_a_short_answer_is_an_error_not_a_silent_mismatch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1] if len(items) > 1 else items

    coalesce = Coalescer(short, max_in_flight=1)
    calls = [asyncio.ensure_future(coalesce(i)) for i in range(3)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == 0  # a batch of one, answered in full
    assert all(isinstance(o, RuntimeError) for o in outcomes[1:])
