"""The replica side of batched dispatch: run several attempts in one Serve request.

The task manager sends the queued tasks of a deployment to a replica in one streaming call
(``__raytask_batch__``, added by :func:`~raytask.server.runner.with_runner`). The replica
starts every attempt at once, as its own asyncio task, so ``@serve.batch`` methods join
them, and streams back how each one ended as soon as it does:

- an :class:`Outcomes` item for all attempts that ended in the same event-loop turn: a
  small value travels inside it, a failure as its message;
- right after it, one item per large value (``follows``), in the order of the outcomes;
- before them, a :class:`Chunks` item for the chunks generator attempts yielded in that
  turn (SPEC 10), in the order they were yielded: many chunks per item when they come fast.

Every streamed item is owned by the caller (the manager), so a large result lives in the
object store on the replica's node, owned by the manager: it survives the replica, and the
manager keeps its ``ObjectRef`` without ever reading it.

A running attempt is stopped alone (a cancel or a timeout) through a long-poll to the
manager, :meth:`TaskManager.batch_stops`, which returns the task ids to stop. It starts only
once a batch has run :data:`LISTEN_AFTER_S`, so short tasks never pay for it; a stop sent
earlier is in its first answer.

The replica also caps how many attempts run at once at its ``max_ongoing_requests`` (one
batch is one Serve request), so two batches that Serve routes to one replica never run more
than the user allowed there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..core.progress import ProgressReporter
from ..core.record import plain_size
from .runner import AttemptFailed, Streamed, manager_of, progress_sender, run_attempt

logger = logging.getLogger("raytask.replica")

BATCH_METHOD = "__raytask_batch__"
LISTEN_AFTER_S = 0.02
INLINE_BUDGET_BYTES = 32 * 1024
_MAX_NODES = 4096

# Outcome kinds, as they travel.
VALUE, FAILED, FOLLOWS, STOPPED = "value", "failed", "follows", "stopped"
STREAMED = "streamed"  # a generator attempt ended; its chunks came before (payload: count)


@dataclass(frozen=True)
class BatchItem:
    """One attempt of a batch: the task, its attempt number, the method and its inputs."""

    task_id: str
    attempt_no: int
    method: str
    kwargs: dict[str, Any]


class Ended(NamedTuple):
    """How one attempt ended.

    ``kind`` is ``value`` (payload: the value), ``failed`` (payload: the error),
    ``follows`` (the value is the next streamed item) or ``stopped`` (cancelled by a stop).
    """

    task_id: str
    attempt_no: int
    kind: str
    payload: Any
    progress: tuple[float | None, str | None] | None = None  # the method's last report


@dataclass(frozen=True)
class Outcomes:
    """How some attempts of a batch ended, in the order they ended."""

    ended: list[Ended]


@dataclass(frozen=True)
class Chunks:
    """Chunks generator attempts of a batch yielded: ``(task_id, attempt_no, values)``
    runs, in the order they were yielded."""

    streamed: list[tuple[str, int, list[Any]]]


def _grouped(chunks: list[tuple[str, int, Any]]) -> Chunks:
    runs: list[tuple[str, int, list[Any]]] = []
    for task_id, attempt_no, value in chunks:
        if runs and runs[-1][0] == task_id and runs[-1][1] == attempt_no:
            runs[-1][2].append(value)
        else:
            runs.append((task_id, attempt_no, [value]))
    return Chunks(runs)


def fits_inline(value: Any, budget: int = INLINE_BUDGET_BYTES) -> bool:
    """True if ``value`` is surely small: plain data whose size estimate is within ``budget``.

    Anything else (large, deep, or of a type it cannot size cheaply) travels as an object of
    its own, which the manager never reads if it is large. Either way is correct; this only
    keeps small results, the common case, to one streamed item per event-loop turn.
    """
    return plain_size(value, budget=budget, max_nodes=_MAX_NODES) is not None


_SLOTTED: dict[int, dict[str, Any]] = {}


def _slots(instance: Any, limit: int) -> asyncio.Semaphore:
    """The replica's cap on attempts running at once, kept on its instance (a class with
    ``__slots__`` and no ``__dict__`` gets it by id: a replica process has one instance)."""
    holder = getattr(instance, "__dict__", None)
    if holder is None:
        holder = _SLOTTED.setdefault(id(instance), {})
    slots = holder.get("_raytask_slots")
    if slots is None:
        slots = holder["_raytask_slots"] = asyncio.Semaphore(max(1, limit))
    return slots


async def _attempt(
    instance: Any,
    item: BatchItem,
    slots: asyncio.Semaphore,
    reporter: ProgressReporter | None,
    emit: Callable[[Any], None],
    last: dict[str, Any],
) -> Any:
    async with slots:
        try:
            return await run_attempt(instance, item.method, item.kwargs, reporter, emit)
        finally:
            if reporter is not None and reporter.last is not None:
                last[item.task_id] = reporter.last  # it travels with the outcome


async def _listen(stops: Callable[[int], Any], running: dict[str, asyncio.Task[Any]]) -> None:
    """Cancel the attempts the manager names until it says the batch is over."""
    seen = 0
    while True:
        try:
            names = await stops(seen)
        except Exception as exc:  # the manager restarted: it re-runs this batch's tasks
            logger.warning("raytask: the task manager cannot be asked for stops: %s", exc)
            return
        if names is None:
            return
        seen += len(names)
        for task_id in names:
            task = running.get(task_id)
            if task is not None:
                task.cancel()


def _ended(
    done: list[asyncio.Task[Any]],
    of_task: dict[asyncio.Task[Any], BatchItem],
    running: dict[str, asyncio.Task[Any]],
    last: dict[str, Any],
) -> tuple[Outcomes, list[Any]]:
    """The outcomes of the attempts ``done`` (forgotten as running), and the values too
    large to travel inside them, to stream after them in order."""
    ended, large = [], []
    for task in done:
        item = of_task.pop(task)
        del running[item.task_id]
        kind, payload = _outcome(task)
        if kind == VALUE and not fits_inline(payload):
            kind = FOLLOWS
            large.append(payload)
            payload = None
        progress = last.pop(item.task_id, None)
        ended.append(Ended(item.task_id, item.attempt_no, kind, payload, progress))
    return Outcomes(ended), large


async def _turn(
    events: asyncio.Queue[tuple[str, Any]], first: tuple[str, Any]
) -> tuple[list[Any], list[Any]]:
    """``first`` and every event of the same event-loop turn: the chunks, and the attempts
    that ended (so that they travel together in one item each)."""
    await asyncio.sleep(0)
    got = [first]
    while not events.empty():
        got.append(events.get_nowait())
    return [p for kind, p in got if kind == "chunk"], [p for kind, p in got if kind == "ended"]


async def run_batch(
    instance: Any,
    items: list[BatchItem],
    limit: int,
    stops: Callable[[int], Any] | None = None,
    reporter_for: Callable[[BatchItem], ProgressReporter | None] = lambda item: None,
) -> AsyncIterator[Any]:
    """Run ``items`` on ``instance`` at once; yield :class:`Outcomes` and large values.

    Args:
        instance: the deployment's instance.
        items: the attempts.
        limit: attempts this replica may run at once (its ``max_ongoing_requests``).
        stops: ``stops(seen)`` awaits the task ids to stop past the first ``seen`` (None:
            the batch is over); None: nothing stops attempts.
        reporter_for: each attempt's progress reporter.
    """
    slots = _slots(instance, limit)
    # One queue for both, so a generator's chunks always come before its end.
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    running: dict[str, asyncio.Task[Any]] = {}
    of_task: dict[asyncio.Task[Any], BatchItem] = {}
    last: dict[str, Any] = {}  # each ended attempt's last progress report
    for item in items:

        def emit(value: Any, item: BatchItem = item) -> None:
            events.put_nowait(("chunk", (item.task_id, item.attempt_no, value)))

        task = asyncio.create_task(_attempt(instance, item, slots, reporter_for(item), emit, last))
        task.add_done_callback(lambda task: events.put_nowait(("ended", task)))
        running[item.task_id] = task
        of_task[task] = item
    listener: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        left = len(items)
        while left:
            if listener is None and stops is not None:
                try:
                    wait_s = max(0.0, started + LISTEN_AFTER_S - time.monotonic())
                    first = await asyncio.wait_for(events.get(), wait_s)
                except TimeoutError:
                    listener = asyncio.create_task(_listen(stops, running))
                    continue
            else:
                first = await events.get()
            chunks, done = await _turn(events, first)
            if chunks:
                yield _grouped(chunks)
            if done:
                left -= len(done)
                outcomes, large = _ended(done, of_task, running, last)
                yield outcomes
                for value in large:
                    yield value
    finally:
        if listener is not None:
            listener.cancel()
        for task in running.values():  # the whole request was cancelled
            task.cancel()


def _outcome(task: asyncio.Task[Any]) -> tuple[str, Any]:
    if task.cancelled():
        return STOPPED, None
    try:
        value = task.result()  # run_attempt turns every Exception into AttemptFailed
    except BaseException as exc:  # SystemExit and the like, raised by the method
        return FAILED, f"{type(exc).__name__}: {exc}"
    if isinstance(value, AttemptFailed):
        return FAILED, value.error
    if isinstance(value, Streamed):
        return STREAMED, value.count
    return VALUE, value


def with_runner(cls: type) -> type:
    """A subclass of the deployment class ``cls`` that also has ``__raytask_batch__``.

    The manager calls it through a streaming ``DeploymentHandle`` with its app's name, the
    batch id (for stops), the items and the replica's ``max_ongoing_requests``.
    """

    async def __raytask_batch__(
        self: Any, app_name: str | None, batch_id: int, items: list[BatchItem], limit: int
    ) -> AsyncIterator[Any]:
        stops, reporter_for = None, lambda item: None
        if app_name is not None:  # None: a direct call (tests), with no manager to ask
            manager = manager_of(app_name)
            stops = lambda seen: manager.batch_stops.remote(batch_id, seen)  # noqa: E731
            loop = asyncio.get_running_loop()
            reporter_for = lambda item: ProgressReporter(  # noqa: E731
                progress_sender(app_name, item.task_id, item.attempt_no), loop, send_last=False
            )
        async for out in run_batch(self, items, limit, stops, reporter_for):
            yield out

    return type(cls.__name__, (cls,), {BATCH_METHOD: __raytask_batch__, "__doc__": cls.__doc__})
