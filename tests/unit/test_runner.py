import asyncio
import threading
import time

import raytask
from raytask.server.runner import AttemptFailed, call_in_thread, run_attempt


class Worker:
    def __init__(self) -> None:
        self.stopped = threading.Event()

    @raytask.task
    def add(self, a: int, b: int = 1) -> int:
        return a + b

    @raytask.task
    async def shout(self, text: str) -> str:
        return text.upper()

    @raytask.task
    def boom(self) -> None:
        raise KeyError("missing")

    @raytask.task
    def spin(self, seconds: float) -> None:
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.001)
        finally:
            self.stopped.set()


async def test_run_attempt_calls_sync_and_async_methods() -> None:
    worker = Worker()
    assert await run_attempt(worker, "add", {"a": 2}) == 3
    assert await run_attempt(worker, "shout", {"text": "hi"}) == "HI"


async def test_exceptions_become_small_failure_values() -> None:
    result = await run_attempt(Worker(), "boom", {})
    assert result == AttemptFailed("KeyError: 'missing'")


async def test_bad_stored_kwargs_fail_the_attempt() -> None:
    result = await run_attempt(Worker(), "add", {"a": "not a number"})
    assert isinstance(result, AttemptFailed) and "ValidationError" in result.error


async def test_cancelling_a_sync_method_interrupts_its_thread() -> None:
    worker = Worker()
    task = asyncio.ensure_future(call_in_thread(worker.spin, {"seconds": 30}))
    await asyncio.sleep(0.1)
    task.cancel()
    start = time.monotonic()
    assert await asyncio.to_thread(worker.stopped.wait, 5)
    assert time.monotonic() - start < 5
