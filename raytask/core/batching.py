"""Coalescing: many concurrent calls of one kind travel as one call.

Each Ray actor call costs a fixed slice of CPU on both ends, whatever it carries. Under
load the ingress makes hundreds of submit and status calls a second to the one task
manager; a :class:`Coalescer` sends the first call at once and gathers the calls that
arrive while it is on its way into the next one. An idle system pays no extra latency,
and a busy one pays one round trip per batch instead of one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    """Join calls made while earlier ones are in flight into batches.

    Args:
        send: sends one batch; returns one answer per item, in order.
        max_in_flight: batches on their way at once.
        max_batch: most items in one batch.
    """

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Answer]]],
        max_in_flight: int = 2,
        max_batch: int = 512,
    ) -> None:
        self._send = send
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches = 0  # sent so far, for tests and stats
        self.items = 0

    async def __call__(self, item: Item) -> Answer:
        """Send ``item`` (in some batch) and return its answer."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._in_flight) < self._max_in_flight:
            self._start()
        return await future

    def _start(self) -> None:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        task = asyncio.ensure_future(self._deliver(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._waiting and len(self._in_flight) < self._max_in_flight:
            self._start()

    async def _deliver(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            answers = await self._send([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to a batch of {len(batch)}")
        except BaseException as exc:  # every caller of the batch learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # its caller may have gone (a closed connection)
                future.set_result(answer)
