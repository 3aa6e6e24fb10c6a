"""raytask.report_progress: a no-op outside a task, rate-limited inside, from any thread."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import raytask
from raytask.core.progress import ProgressReporter
from raytask.server.runner import run_attempt

from ..support import FakeClock


async def test_outside_a_task_it_does_nothing() -> None:
    sent: list[Any] = []
    reporter = ProgressReporter(lambda f, m: sent.append((f, m)), asyncio.get_running_loop())
    assert raytask.report_progress(0.5, "nobody listens") is None  # no error...
    token = reporter.activate()
    raytask.report_progress(0.5, "inside")
    reporter.deactivate(token)
    raytask.report_progress(0.6, "outside again")
    reporter.close()
    assert sent == [(0.5, "inside")]  # ...and no effect: only the attempt's own reports


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "half", True])
def test_a_bad_fraction_is_a_value_error(fraction: Any) -> None:
    with pytest.raises(ValueError, match="fraction"):
        raytask.report_progress(fraction)


async def test_reports_are_sent_at_most_once_per_interval_and_the_last_one_arrives() -> None:
    sent: list[tuple[float | None, str | None]] = []
    clock = FakeClock(0.0)
    reporter = ProgressReporter(
        lambda f, m: sent.append((f, m)), asyncio.get_running_loop(), 0.05, clock
    )
    token = reporter.activate()
    try:
        for i in range(100):  # a tight loop
            raytask.report_progress(i / 100, f"step {i}")
        assert sent == [(0.0, "step 0")]  # the first at once; the rest wait their turn
        clock.advance(0.05)
        await asyncio.sleep(0.1)  # the delayed send fires
        assert sent == [(0.0, "step 0"), (0.99, "step 99")]  # only the latest of the burst
        raytask.report_progress(1.0, "done")  # waits for its turn...
        reporter.close()  # ...and goes when the attempt ends
        assert sent[-1] == (1.0, "done")
        raytask.report_progress(1.0, "late")  # after the attempt: nothing is sent
        clock.advance(1)
        await asyncio.sleep(0.1)
        assert len(sent) == 3
    finally:
        reporter.deactivate(token)


class Worker:
    @raytask.task
    def sync_steps(self, n: int) -> int:
        for i in range(n):
            raytask.report_progress((i + 1) / n, "in a thread")
            time.sleep(0.02)
        return n

    @raytask.task
    async def async_steps(self, n: int) -> int:
        for i in range(n):
            raytask.report_progress((i + 1) / n, "in the loop")
            await asyncio.sleep(0.02)
        return n


@pytest.mark.parametrize("method", ["sync_steps", "async_steps"])
async def test_the_runner_gives_sync_and_async_methods_their_reporter(method: str) -> None:
    sent: list[tuple[float | None, str | None]] = []
    reporter = ProgressReporter(lambda f, m: sent.append((f, m)), asyncio.get_running_loop(), 0.03)
    assert await run_attempt(Worker(), method, {"n": 10}, reporter) == 10
    assert sent[0] == (0.1, sent[0][1]) and 2 <= len(sent) <= 10
    assert all(0 < f <= 1 for f, _ in sent if f is not None)
    assert sent[-1][0] == 1.0  # the last report is sent when the method returns
    count = len(sent)
    await asyncio.sleep(0.1)
    assert len(sent) == count  # closed with the attempt: no late sends
