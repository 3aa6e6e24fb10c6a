"""The demo app of ``make run``: what a user learns raytask from, one method of each kind.

- ``describe``: a synchronous endpoint (``POST /demo/describe``);
- ``wordcount``: a quick task;
- ``slow``: a slow task, to cancel while it runs;
- ``steps``: a task that reports its progress;
- ``words``: a task that streams its output (``GET /demo/words/stream?task_id=...``);
- ``fail``: a task that fails, to see the error and retry it;
- ``long_running_image_generation``: the task of the Python client examples (a tiny PNG).

``serve run configs/app.yaml`` serves it at ``/demo``. The tests serve a subclass with
methods of their own (``tests/apps.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

import raytask


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})
class Demo:
    """Text utilities standing in for a model."""

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
    def slow(self, seconds: float = 30.0) -> float:
        """Wait ``seconds``, then return the time waited: a task to cancel while it runs
        (``POST /demo/slow/cancel?task_id=...`` stops it mid-run)."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(0.01)  # a cancel stops a sync method between two of these
        return time.monotonic() - start

    @raytask.task
    async def words(self, text: str, delay_s: float = 0.2) -> AsyncIterator[str]:
        """Stream the words of ``text``, one every ``delay_s`` seconds, as a model streams
        the tokens it generates; the result is the list of them."""
        for word in text.split():
            await asyncio.sleep(delay_s)
            yield word

    @raytask.task
    def steps(self, count: int = 10, seconds: float = 0.3) -> int:
        """Work through ``count`` steps of ``seconds`` each, reporting progress after each
        (a sync method: it reports from its own thread)."""
        for step in range(1, count + 1):
            time.sleep(seconds)
            raytask.report_progress(fraction=step / count, message=f"step {step} of {count}")
        return count

    @raytask.task
    def fail(self, message: str = "boom") -> str:
        """Always raise ``ValueError(message)``."""
        raise ValueError(message)

    @raytask.task
    def long_running_image_generation(self, prompt: str) -> bytes:
        """Draw a (tiny, 16x16) PNG whose colour depends on the prompt.

        A prompt containing "fail" raises, so there is a failure to retry.
        """
        if "fail" in prompt:
            raise RuntimeError(f"could not draw {prompt!r}")
        rgb = hashlib.sha256(prompt.encode()).digest()[:3]
        return _png(16, 16, rgb)


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
