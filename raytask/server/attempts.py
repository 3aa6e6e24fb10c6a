"""Attempts in flight: send what the dispatcher started, in batches; report how each ended.

:class:`Attempts` turns the :class:`~raytask.core.dispatcher.Dispatcher`'s decisions into
Serve requests (through :class:`~raytask.server.calls.ReplicaCalls`), one streaming request
per batch of tasks of a deployment (see :mod:`raytask.server.batch` for the replica's side),
and the streamed outcomes back into dispatcher calls, each attempt on its own: a task of a
batch succeeds, fails, times out or is cancelled alone.

Results: a small value arrives inside an outcome and is kept as it is; a large one arrives
as a streamed item of its own, which the manager owns and keeps as an ``ObjectRef`` without
ever reading it. Either goes to the dispatcher with the success it belongs to (a
:class:`~raytask.core.record.Result` on the task's record). A replica that dies loses only the attempts of its batches that had not
ended yet (they are re-queued while attempts remain); the results it streamed before live
on in the object store, owned by the manager.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ..core.chunks import ChunkLog
from ..core.config import AppConfig
from ..core.dispatcher import Attempt, Dispatcher
from ..core.record import Result, approx_size
from .batch import FAILED, FOLLOWS, STREAMED, VALUE, BatchItem, Chunks
from .calls import ReplicaCalls

_REPLICA_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)
STOPS_WAIT_S = 30.0


def failure_reason(exc: BaseException) -> str:
    """Why an attempt whose request raised ``exc`` was lost."""
    if isinstance(exc, _REPLICA_LOST):
        return f"the replica running it died ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"  # a cancelled request, a lost object, a Serve error


@dataclass(eq=False, slots=True)
class _Batch:
    """One batch request: its attempts not ended yet, and the stops its replica is owed."""

    batch_id: int
    open: dict[str, Attempt]
    members: tuple[str, ...] = ()
    stops: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    over: bool = False


class Attempts:
    """The attempts of one manager that are on their way to, or running on, replicas.

    Args:
        dispatcher: decides what starts and records how attempts end.
        calls: the I/O with Serve.
        on_end: called after attempts ended (slots are free: dispatch again).
        progress: records an attempt's progress report as the replica's own reports are
            (the service's ``report_progress``: its webhook event too); an outcome brings
            the method's last one.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        calls: ReplicaCalls,
        on_end: Callable[[], None],
        progress: Callable[[str, int, float | None, str | None], Awaitable[None]],
    ) -> None:
        self.dispatcher = dispatcher
        self.calls = calls
        self.on_end = on_end
        self.progress = progress
        self.batch_size = 64
        self.stream_limits = (100_000, 64 * 1024**2)  # (chunks, bytes) an attempt may stream
        self._batches: dict[int, _Batch] = {}
        self._batch_of: dict[str, _Batch] = {}  # task id -> the batch of its current attempt
        self._runs: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.wake = asyncio.Event()
        self.sent = {"batches": 0, "attempts": 0}  # for stats: the mean batch size

    def start(self) -> None:
        """Send every queued task that the dispatcher lets start now, in batches."""
        for group in self.dispatcher.take_batches(self.batch_size):
            opened = {attempt.task_id: attempt for attempt, _, _ in group}
            batch = _Batch(next(self._ids), opened, tuple(opened))
            items = [
                BatchItem(r.task_id, r.attempts, route.method, r.kwargs) for _, r, route in group
            ]
            timeouts = {r.task_id: r.options.timeout_s for _, r, _ in group}
            route = group[0][2]
            if route.streams:  # their status answers count chunks from 0
                for _, record, _ in group:
                    self.dispatcher.table.add_chunks(record.task_id, record.attempts, [])
            try:
                response = self.calls.send(
                    route.deployment, batch.batch_id, items, route.max_ongoing_requests
                )
            except Exception as exc:  # no handle (deployment gone): never stuck in progress
                for attempt in opened.values():
                    self.dispatcher.lost(attempt, failure_reason(exc))
                self.on_end()
                continue
            self._batches[batch.batch_id] = batch
            self.sent["batches"] += 1
            self.sent["attempts"] += len(items)
            for task_id in batch.open:
                self._batch_of[task_id] = batch
            run = asyncio.create_task(self._run(batch, response, timeouts))
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)

    def stop(self, task_id: str) -> None:
        """Stop ``task_id``'s running attempt alone (its slot frees when the replica says
        it stopped, or when its batch ends)."""
        batch = self._batch_of.get(task_id)
        if batch is not None and task_id in batch.open:
            batch.stops.append(task_id)
            batch.changed.set()

    async def stops(self, batch_id: int, seen: int) -> list[str] | None:
        """The task ids its replica must stop in batch ``batch_id`` past the first ``seen``,
        once there are any (a long-poll of up to ``STOPS_WAIT_S``); None once it is over."""
        batch = self._batches.get(batch_id)
        if batch is None:
            return None
        if len(batch.stops) <= seen and not batch.over:
            batch.changed.clear()
            try:
                await asyncio.wait_for(batch.changed.wait(), STOPS_WAIT_S)
            except TimeoutError:
                pass
        return None if batch.over else batch.stops[seen:]

    async def watch(self) -> float | None:
        """End the attempts past their deadline and stop them on their replicas; returns
        the seconds until the next deadline (None: no attempt runs)."""
        for attempt in self.dispatcher.expired():
            batch = self._batch_of.get(attempt.task_id)
            if batch is not None and batch.open.get(attempt.task_id) is attempt:
                self.stop(attempt.task_id)
                del batch.open[attempt.task_id]  # its late outcome is ignored
                self.on_end()
        return self.dispatcher.next_deadline_in()

    async def close(self) -> None:
        """Stop reading the batches' streams (the actor is going away)."""
        for run in list(self._runs):
            run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)

    async def _run(self, batch: _Batch, response: Any, timeouts: dict[str, float]) -> None:
        """Read one batch's stream until each of its attempts has ended."""
        reason, closing = "its batch ended without its outcome", False
        try:
            stream = await self.calls.assigned(response)
            for task_id, attempt in batch.open.items():
                self.dispatcher.arm(attempt, timeouts[task_id])
            self.wake.set()  # the watch loop keeps the deadlines
            while batch.open:
                ref = await self.calls.next_ref(stream)
                if ref is None:
                    break
                outcomes = await self.calls.fetch(ref)  # raises if the replica died
                if isinstance(outcomes, Chunks):
                    self._streamed(batch, outcomes)
                    continue
                for task_id, attempt_no, kind, payload, progress in outcomes.ended:
                    if kind == FOLLOWS:
                        payload = await self.calls.next_value_ref(stream)
                    attempt = batch.open.pop(task_id, None)
                    if attempt is not None and attempt.attempt_no == attempt_no:
                        if progress is not None:  # its last word, before its end
                            await self.progress(task_id, attempt_no, *progress)
                        await self._settle(attempt, kind, payload)
                self.on_end()
        except asyncio.CancelledError:
            closing = True
            raise
        except Exception as exc:
            reason = failure_reason(exc)
        finally:
            if not closing:
                for attempt in batch.open.values():
                    self.dispatcher.lost(attempt, reason)
            self._over(batch)

    def configure(self, config: AppConfig) -> None:
        """Take the app's settings (at start and at each redeploy)."""
        self.batch_size = config.dispatch_batch_size
        self.stream_limits = (config.max_stream_chunks, config.max_stream_bytes)

    def _streamed(self, batch: _Batch, chunks: Chunks) -> None:
        """Keep the chunks of the batch's running attempts (a late one's are dropped); an
        attempt past the stream limits is stopped and its task fails (StreamTooLarge)."""
        max_chunks, max_bytes = self.stream_limits
        for task_id, attempt_no, values in chunks.streamed:
            attempt = batch.open.get(task_id)
            if attempt is None or attempt.attempt_no != attempt_no or attempt.ended:
                continue
            self.dispatcher.table.add_chunks(task_id, attempt_no, values)
            log = self.dispatcher.table.get(task_id).chunks
            if log is not None and (len(log) > max_chunks or log.nbytes > max_bytes):
                # Stopped on its replica; the batch reads on until the replica says so
                # (the attempt has ended here: its later chunks and its end are ignored).
                self.stop(task_id)
                self.dispatcher.refused(
                    attempt,
                    f"StreamTooLarge: the stream passed max_stream_chunks={max_chunks} or "
                    f"max_stream_bytes={max_bytes}",
                )
                self.on_end()

    async def _settle(self, attempt: Attempt, kind: str, payload: Any) -> None:
        if kind == VALUE:
            self.dispatcher.succeed(attempt, Result(payload, approx_size(payload)))
        elif kind == STREAMED:  # the result is the array of the chunks that came before
            log = self.dispatcher.table.get(attempt.task_id).chunks or ChunkLog(attempt.attempt_no)
            self.dispatcher.succeed(attempt, Result(log, 0))  # held as its chunks already
        elif kind == FAILED:
            self.dispatcher.raised(attempt, payload)
        elif kind == FOLLOWS:
            await self._settle_ref(attempt, payload)
        else:  # stopped on the replica: cancelled, or timed out and already re-queued
            self.dispatcher.lost(attempt, "stopped on its replica")

    async def _settle_ref(self, attempt: Attempt, ref: Any) -> None:
        """A value that came as an item of its own: large ones are never read here."""
        if ref is None:
            return self.dispatcher.lost(attempt, "its batch ended before its value came")
        size = self.calls.stored(ref)
        if size is None:  # small after all, or the error that ended the stream
            try:
                value = await self.calls.fetch(ref)
            except Exception as exc:
                return self.dispatcher.lost(attempt, failure_reason(exc))
            self.dispatcher.succeed(attempt, Result(value, approx_size(value)))
        else:  # the object store holds it: never read here
            self.dispatcher.succeed(attempt, Result(ref, size, inline=False))

    def _over(self, batch: _Batch) -> None:
        batch.over = True
        batch.changed.set()  # a waiting stops() answers None
        self._batches.pop(batch.batch_id, None)
        for task_id in batch.members:
            if self._batch_of.get(task_id) is batch:
                del self._batch_of[task_id]
        self.on_end()
