"""The BentoML side of the benchmark: the same task methods as the raytask demo.

Started by the runner with BentoML's own virtualenv::

    .venv-bentoml/bin/bentoml serve bentoml_service:Bench --host 127.0.0.1 --port PORT

``noop``, ``sleep`` and ``blob`` match the demo's methods of the same names.
"""

from __future__ import annotations

import asyncio
import time

import bentoml


@bentoml.service(traffic={"timeout": 600})
class Bench:
    @bentoml.task
    def noop(self) -> str:
        """Do nothing (BentoML's task routes need a return value to encode)."""
        return ""

    @bentoml.task
    async def sleep(self, seconds: float = 0.05) -> float:
        """Wait ``seconds`` without blocking the worker; return the time waited."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        return time.monotonic() - start

    @bentoml.task
    def blob(self, size_mb: float = 1.0) -> bytes:
        """Return ``size_mb`` MB of a repeating byte pattern."""
        size = int(size_mb * 1024 * 1024)
        pattern = bytes(range(256))
        return (pattern * (size // 256 + 1))[:size]
