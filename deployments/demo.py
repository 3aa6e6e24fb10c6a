"""A small CPU-only demo deployment: one of each kind of endpoint raytask serves.

``serve run configs/app.yaml`` serves it; the end-to-end tests and benchmarks use it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import struct
import threading
import time
import zlib
from collections import Counter
from typing import Any, Literal

from ray import serve
from ray.serve import Application

import raytask


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})
class Demo:
    """Text utilities standing in for a model, plus a few knobs for tests."""

    def __init__(self) -> None:
        self._blocking = 0
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()  # tags of block/nap calls running now
        self._finished: set[str] = set()  # tags of those that ran to their end

    @raytask.api
    def describe(self, prompt: str) -> str:
        """Synchronous endpoint: describe a prompt in one line."""
        return f"{len(prompt.split())} words, {len(prompt)} characters: {prompt!r}"

    @raytask.task
    def wordcount(self, text: str, top: int = 3) -> dict[str, Any]:
        """Count words and return the most frequent ones."""
        counts: dict[str, int] = {}
        for word in text.lower().split():
            counts[word] = counts.get(word, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return {"words": sum(counts.values()), "top": [w for w, _ in ranked]}

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
    def steps(self, count: int = 10, seconds: float = 0.3) -> int:
        """Work through ``count`` steps of ``seconds`` each, reporting progress after each
        (a sync method: it reports from its own thread)."""
        for step in range(1, count + 1):
            time.sleep(seconds)
            raytask.report_progress(fraction=step / count, message=f"step {step} of {count}")
        return count

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
    def fail(self, message: str = "boom") -> str:
        """Always raise ``ValueError(message)``."""
        raise ValueError(message)

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
    def long_running_image_generation(self, prompt: str) -> bytes:
        """The seed page's example: a (tiny, 16x16) PNG whose colour depends on the prompt.

        A prompt containing "fail" raises, so the seed's retry snippet has a failure to retry.
        """
        if "fail" in prompt:
            raise RuntimeError(f"could not draw {prompt!r}")
        rgb = hashlib.sha256(prompt.encode()).digest()[:3]
        return _png(16, 16, rgb)

    @raytask.task
    def crash_replica(self) -> None:
        """Kill this replica's process (a poison task: every attempt kills its replica)."""
        os.kill(os.getpid(), signal.SIGKILL)

    @raytask.api
    def pid(self) -> int:
        """The replica's process id (tests kill it)."""
        return os.getpid()


def _png(width: int, height: int, rgb: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rgb * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def build(args: dict[str, Any] | None = None) -> Application:
    """Application builder for YAML: ``args`` are raytask :class:`~raytask.AppConfig` fields."""
    return raytask.app(Demo.bind(), config=args or {})


app = build()
