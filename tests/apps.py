"""The tests' own app: the demo app plus methods that only tests and benchmarks need
(replica crashes, unsendable results, large results, tagged slow calls they can watch).

``build`` deploys it under the demo's deployment name (``Demo``), so a test's app looks like
``make run``'s demo from outside, with more endpoints.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Literal

from ray import serve
from ray.serve import Application

import raytask
from deployments.demo import Demo as _Demo


class TestDemo(_Demo.func_or_class):  # type: ignore[misc,name-defined]
    """The demo's methods, and the tests' knobs."""

    def __init__(self) -> None:
        self._blocking = 0
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()  # tags of block/nap calls running now
        self._finished: set[str] = set()  # tags of those that ran to their end

    @raytask.task
    def noop(self) -> None:
        """Do nothing (benchmarks measure the queue's own cost with it)."""

    @raytask.task
    async def sleep(self, seconds: float = 0.05) -> float:
        """Wait ``seconds`` without blocking the replica; return the time waited."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        return time.monotonic() - start

    @raytask.task
    def block(self, seconds: float = 1.0, tag: str = "") -> float:
        """Wait ``seconds`` in a sync method (a thread): shows cancelling sync code.

        ``tag`` names the call in :meth:`work`, so a test can see it run, stop, and never
        reach its end.
        """
        with self._lock:
            self._blocking += 1
            self._running[tag] += 1
        try:
            start = time.monotonic()
            deadline = start + seconds
            while time.monotonic() < deadline:
                time.sleep(0.01)
            with self._lock:
                self._finished.add(tag)
            return time.monotonic() - start
        finally:
            with self._lock:
                self._blocking -= 1
                self._running[tag] -= 1

    @raytask.task
    async def nap(self, seconds: float = 1.0, tag: str = "") -> float:
        """Wait ``seconds`` in an async method, in short awaits: shows cancelling async code
        (it stops at its next ``await``). ``tag`` as for :meth:`block`."""
        with self._lock:  # work() may read these from another thread
            self._running[tag] += 1
        try:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                await asyncio.sleep(0.01)
            with self._lock:
                self._finished.add(tag)
            return time.monotonic() - start
        finally:
            with self._lock:
                self._running[tag] -= 1

    @raytask.api
    def blocking(self) -> int:
        """How many ``block`` calls are running now (a cancelled one must stop)."""
        return self._blocking

    @raytask.api
    def work(self) -> dict[str, list[str]]:
        """Tags of the ``block`` and ``nap`` calls running now and of those that finished."""
        with self._lock:
            running = sorted(tag for tag, n in self._running.items() if n > 0)
            return {"running": running, "finished": sorted(self._finished)}

    @raytask.task
    def unsendable(self, kind: Literal["surrogate", "object"] = "surrogate") -> Any:
        """Return a value HTTP cannot carry: a string with a lone surrogate, or an object
        with no JSON form. The task ends in ``failure`` saying why (hardening tests)."""
        return "half a pair: \ud800" if kind == "surrogate" else threading.Lock()

    @raytask.task(ttl_s=3600)
    def blob(self, size_mb: float = 1.0) -> bytes:
        """Return ``size_mb`` MB of a repeating byte pattern (large-result tests)."""
        size = int(size_mb * 1024 * 1024)
        pattern = bytes(range(256))
        return (pattern * (size // 256 + 1))[:size]

    @raytask.task
    async def ticks(
        self, count: int = 100, interval_s: float = 0.0, size: int = 0, fail_at: int = -1
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream ``count`` chunks ``interval_s`` apart, each with its index and the time it
        was yielded (benchmarks/streaming.py measures yield-to-reader latency with it);
        raise before chunk ``fail_at``."""
        pad = "x" * size
        for i in range(count):
            if i == fail_at:
                raise RuntimeError(f"failed before chunk {i}")
            if interval_s:
                await asyncio.sleep(interval_s)
            elif i % 64 == 0:
                await asyncio.sleep(0)
            yield {"i": i, "t": time.time(), "pad": pad}

    @raytask.task
    async def dies_once(
        self, flag: str, count: int = 6, delay_s: float = 0.1
    ) -> AsyncIterator[int]:
        """Yield ``0 .. count-1``; the first attempt (no ``flag`` file yet) makes the file
        and kills its replica after three chunks, so the task streams again (a reset)."""
        first = not os.path.exists(flag)
        for i in range(count):
            await asyncio.sleep(delay_s)
            yield i
            if first and i == 2:
                open(flag, "w").close()
                await asyncio.sleep(0.5)  # the three chunks reach the manager first
                os.kill(os.getpid(), signal.SIGKILL)

    @raytask.task
    def crash_replica(self) -> None:
        """Kill this replica's process (a poison task: every attempt kills its replica)."""
        os.kill(os.getpid(), signal.SIGKILL)

    @raytask.api
    def pid(self) -> int:
        """The replica's process id (tests kill it)."""
        return os.getpid()


Demo = serve.deployment(name="Demo", max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})(
    TestDemo
)


def build(args: dict[str, Any] | None = None) -> Application:
    """Application builder (as ``deployments.demo:build``): ``args`` are AppConfig fields."""
    return raytask.app(Demo.bind(), config=args or {})
