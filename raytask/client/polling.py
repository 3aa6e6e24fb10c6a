"""Waiting for tasks, without I/O: the plans of long-polls and of batch polls, shared by
the sync and async clients (they differ only in how they send a request and sleep).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from ..core.errors import WaitTimeoutError

# Status polls start FIRST_POLL_S apart and back off by half each time, up to MAX_POLL_S.
FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0


def backoff(
    timeout_s: float | None, first_s: float = FIRST_POLL_S, max_s: float = MAX_POLL_S
) -> Iterator[float]:
    """Delays between polls, growing by half each time up to ``max_s``, until ``timeout_s`` has passed.

    Raises:
        WaitTimeoutError: (from the generator) when the deadline passes.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = first_s
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(f"still not finished after {timeout_s:g} s")
            yield min(delay, left)
        else:
            yield delay
        delay = min(delay * 1.5, max_s)


LONG_POLL_S = 30.0
"""How long one long-poll asks the server to hold the request (the server caps it at 60)."""


class LongPoll:
    """The plan of one wait on one task, shared by every handle: each request asks the
    server to hold it until the task finishes (``wait_s``), up to ``LONG_POLL_S`` or what is
    left of ``timeout_s``. An answer that comes back early with the task unfinished (a
    server without long-poll) is followed by a pause that backs off, as plain polling does.
    """

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._pauses = backoff(None)
        self._first = True

    def next_wait(self) -> float | None:
        """``wait_s`` for the next request, or None: the time is up."""
        if self.deadline is None:
            return LONG_POLL_S
        left = self.deadline - time.monotonic()
        if left <= 0 and not self._first:
            return None
        self._first = False
        return max(0.0, min(LONG_POLL_S, left))

    def pause_after(self, asked_s: float, took_s: float) -> float:
        """Seconds to sleep after an answer with the task unfinished."""
        if took_s >= asked_s / 2:
            return 0.0
        pause = next(self._pauses)
        if self.deadline is not None:
            pause = min(pause, max(0.0, self.deadline - time.monotonic()))
        return pause


class Poller:
    """The polling plan of a batch wait, shared by both clients.

    Tasks run in FIFO order, so it polls a window of the *oldest* pending tasks: a window
    that has all finished moves straight on to the next, so a batch costs about one status
    request per task; otherwise it backs off (and starts over from short delays whenever
    something finished).
    """

    def __init__(self, tasks: list[Any], timeout_s: float | None, window: int) -> None:
        self.pending = list(dict.fromkeys(tasks))
        self.window = max(1, window)
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._first_s, self._max_s = FIRST_POLL_S, MAX_POLL_S
        self._delay = self._first_s

    def batch(self) -> list[Any]:
        """The tasks to poll this round."""
        return self.pending[: self.window]

    def update(self, polled: list[Any], finished: list[bool]) -> float | None:
        """Record a round; return the seconds to sleep before the next (None: all done).

        Raises:
            WaitTimeoutError: tasks are left and the deadline has passed.
        """
        done = {task for task, fin in zip(polled, finished, strict=True) if fin}
        self.pending = [task for task in self.pending if task not in done]
        if not self.pending:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise WaitTimeoutError(
                f"{len(self.pending)} tasks did not finish within {self.timeout_s:g} s"
            )
        if len(done) == len(polled):
            self._delay = self._first_s
            return 0.0
        delay = self._first_s if done else self._delay
        self._delay = min(delay * 1.5, self._max_s)
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - time.monotonic()))
        return delay


def refuse_inside_event_loop(what: str, alternative: str) -> None:
    """Sync waits would block the loop they run in: refuse and name the async way."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{what} blocks, and this thread runs an event loop: use {alternative}")
