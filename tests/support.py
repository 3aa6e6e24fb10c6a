"""Helpers every test tier shares: a fake clock, a free port, condition waits, the repo root.

Kept free of Ray and of pytest fixtures, so scripts the e2e tests run as subprocesses
(``python -m tests.e2e.fake_cluster``) can import it too.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root (where pyproject.toml is)."""


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T], timeout_s: float = 60, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def settle(condition: Callable[[], Any] | None = None, timeout_s: float = 1.0) -> None:
    """Let the event loop's ready tasks run: until ``condition()`` holds (failing after
    ``timeout_s``), or, with no condition, for a few iterations of the loop."""
    if condition is None:
        for _ in range(5):
            await asyncio.sleep(0)
        return
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s")
        await asyncio.sleep(0.005)
