"""``raytask.report_progress``: a running task tells its status readers how far it got.

The replica's runner puts a :class:`ProgressReporter` in a context variable for the length
of one attempt (sync methods run in a thread that gets a copy of the context), so the
function finds it without any argument and does nothing outside a task. Reports go to the
task manager at most every ``PROGRESS_INTERVAL_S``: a tight loop that reports on every
step costs one message per interval, and the last report of a burst is sent when the
interval has passed (or when the method returns), so what status shows is never older than
about a second.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

PROGRESS_INTERVAL_S = 0.5
MAX_MESSAGE_CHARS = 1000

Send = Callable[[float | None, str | None], None]

_current: ContextVar[ProgressReporter | None] = ContextVar("raytask_progress", default=None)


def report_progress(fraction: float | None = None, message: str | None = None) -> None:
    """Record the progress of the task this code runs in; outside a task it does nothing.

    Status answers then carry ``"progress": {"fraction", "message", "updated_at"}``,
    fresh within about a second. Call it as often as you like: reports are rate-limited.

    Args:
        fraction: how much is done, from 0.0 to 1.0 (or None).
        message: a short note, such as ``"step 3 of 10"`` (cut at 1,000 characters).

    Raises:
        ValueError: ``fraction`` is not a number from 0.0 to 1.0.

    Example::

        @raytask.task
        def render(self, frames: int) -> str:
            for i in range(frames):
                ...
                raytask.report_progress(fraction=(i + 1) / frames, message=f"frame {i + 1}")
    """
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"fraction must be a number from 0.0 to 1.0, not {fraction!r}")
        fraction = float(fraction)
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"fraction must be from 0.0 to 1.0, not {fraction!r}")
    if message is not None:
        message = str(message)[:MAX_MESSAGE_CHARS]
    reporter = _current.get()
    if reporter is not None:
        reporter.report(fraction, message)


class ProgressReporter:
    """The progress channel of one attempt: sends reports, at most one per interval.

    Args:
        send: delivers one report (to the task manager; must not block for long).
        loop: the replica's event loop, which times the delayed sends.
        interval_s: the least time between two sends.
        clock: monotonic seconds.
        send_last: whether :meth:`close` sends the report still held back (False: the
            attempt's outcome carries :attr:`last` instead, so the method's last word
            cannot arrive after its end and be dropped).
    """

    def __init__(
        self,
        send: Send,
        loop: asyncio.AbstractEventLoop,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        send_last: bool = True,
    ) -> None:
        self._send, self._loop, self._interval_s, self._clock = send, loop, interval_s, clock
        self._send_last = send_last
        self.last: tuple[float | None, str | None] | None = None  # the latest report
        self._lock = threading.Lock()  # sync methods report from their own thread
        self._last_sent = -math.inf
        self._latest: tuple[float | None, str | None] | None = None
        self._scheduled = False
        self._closed = False

    def report(self, fraction: float | None, message: str | None) -> None:
        """Send now if the interval has passed, else keep it for the next send."""
        with self._lock:
            if self._closed:
                return
            self._latest = self.last = (fraction, message)
            wait_s = self._last_sent + self._interval_s - self._clock()
            if wait_s > 0:
                if not self._scheduled:
                    self._scheduled = True
                    self._loop.call_soon_threadsafe(self._loop.call_later, wait_s, self._flush)
                return
            report = self._take()
        self._send(*report)

    def _take(self) -> tuple[float | None, str | None]:
        report, self._latest = self._latest, None
        self._last_sent = self._clock()
        assert report is not None
        return report

    def _flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if self._closed or self._latest is None:
                return
            report = self._take()
        self._send(*report)

    def close(self) -> None:
        """The attempt ended: send the report still waiting for its turn (the method's
        last word, such as "step 10 of 10"), then nothing more."""
        with self._lock:
            self._closed = True
            report = self._take() if self._latest is not None else None
        if report is not None and self._send_last:
            self._send(*report)

    def activate(self) -> object:
        """Make this the reporter of the current context; returns the token to reset."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: object) -> None:
        """Undo :meth:`activate`."""
        _current.reset(token)  # type: ignore[arg-type]
