"""Attempts in flight: send what the dispatcher started, watch results, report how each ended.

:class:`Attempts` turns the :class:`~raytask.core.dispatcher.Dispatcher`'s decisions into
Serve requests (through :class:`~raytask.server.calls.ReplicaCalls`) and its results back
into dispatcher calls. It keeps each successful result's ``ObjectRef`` (the manager is its
owner) and never fetches a result too large to have been inlined: the only values it reads
are small ones, to tell a failure from a result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ..core.dispatcher import Attempt, Dispatcher
from .calls import ReplicaCalls
from .runner import AttemptFailed

_REPLICA_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


def failure_reason(exc: BaseException) -> str:
    """Why an attempt whose request raised ``exc`` was lost."""
    if isinstance(exc, _REPLICA_LOST):
        return f"the replica running it died ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"  # a cancelled request, a lost object, a Serve error


@dataclass(eq=False, slots=True)
class _Call:
    """An attempt's Serve request: its response, result ref and the task awaiting it."""

    attempt: Attempt
    response: Any
    ref: Any = None
    stopping: bool = False
    assigner: asyncio.Task[None] | None = None


class Attempts:
    """The attempts of one manager that are on their way to, or running on, replicas.

    Args:
        dispatcher: decides what starts and records how attempts end.
        calls: the I/O with Serve.
        on_end: called after any attempt ended (a slot is free: dispatch again).
    """

    def __init__(
        self, dispatcher: Dispatcher, calls: ReplicaCalls, on_end: Callable[[], None]
    ) -> None:
        self.dispatcher = dispatcher
        self.calls = calls
        self.on_end = on_end
        self.results: dict[str, Any] = {}
        # Called with (task id, value) for each small result that made a success.
        self.on_result: Callable[[str, Any], None] = lambda task_id, value: None
        self._calls: dict[str, _Call] = {}
        self._watched: dict[Any, _Call] = {}
        self.wake = asyncio.Event()

    def start(self) -> None:
        """Send every queued task that the dispatcher lets start now."""
        for attempt, record, route in self.dispatcher.take():
            response = self.calls.send(
                route.deployment, route.method, record.kwargs, (record.task_id, record.attempts)
            )
            call = _Call(attempt, response)
            self._calls[attempt.task_id] = call
            call.assigner = asyncio.create_task(self._assigned(call, record.options.timeout_s))

    def stop(self, task_id: str) -> None:
        """Stop ``task_id``'s running attempt (its slot frees when the replica confirms)."""
        call = self._calls.get(task_id)
        if call is not None:
            call.stopping = True
            self.calls.cancel(call.response)

    async def _assigned(self, call: _Call, timeout_s: float) -> None:
        """Wait until Serve has given the attempt a replica, then watch its result."""
        try:
            call.ref = await self.calls.assigned(call.response)
        except asyncio.CancelledError:  # cancelled by a user before it reached a replica
            self.dispatcher.release(call.attempt)
            return self._ended(call)
        except Exception as exc:
            self.dispatcher.lost(call.attempt, failure_reason(exc))
            return self._ended(call)
        if call.stopping:
            self.calls.cancel(call.response, on_replica=True)
        self.dispatcher.arm(call.attempt, timeout_s)
        self._watched[call.ref] = call
        self.wake.set()

    async def watch(self) -> bool:
        """Settle the ready results and the timed-out attempts; True while any is left."""
        if self._watched:
            ready, stored = self.calls.ready(list(self._watched))
            for ref in ready:
                await self._settle(self._watched.pop(ref), ref in stored)
        for attempt in self.dispatcher.expired():
            call = self._calls.get(attempt.task_id)
            if call is not None and call.attempt is attempt:
                self._watched.pop(call.ref, None)
                call.stopping = True
                self.calls.cancel(call.response)
                self._ended(call)
        return bool(self._watched)

    async def _settle(self, call: _Call, stored: bool) -> None:
        attempt = call.attempt
        value: Any = None
        if not stored:  # small: a failure or a small result, cheap to read
            try:
                value = await self.calls.fetch(call.ref)
            except Exception as exc:
                self.dispatcher.lost(attempt, failure_reason(exc))
                return self._ended(call)
            if isinstance(value, AttemptFailed):
                self.dispatcher.raised(attempt, value.error)
                return self._ended(call)
        if self.dispatcher.succeed(attempt):
            self.results[attempt.task_id] = call.ref
            if not stored:
                self.on_result(attempt.task_id, value)
        self._ended(call)

    def _ended(self, call: _Call) -> None:
        if self._calls.get(call.attempt.task_id) is call:
            del self._calls[call.attempt.task_id]
        self.on_end()
