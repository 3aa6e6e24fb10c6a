"""Helpers every test tier shares: a fake clock, a free port, condition waits, the repo
root, and a redis-server of a test's own.

Kept free of Ray and of pytest fixtures, so scripts the e2e tests run as subprocesses
(``python -m tests.e2e.fake_cluster``) can import it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def redis_server(tmp_dir: Path, persist: bool = False) -> Iterator[str]:
    """A ``redis-server`` of this test's own on 127.0.0.1 at a free port; yields its URL
    and stops it by its PID. No persistence unless ``persist`` (then an append-only file
    in ``tmp_dir``). Raises ``FileNotFoundError`` when the binary is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_dir)]
    args += ["--appendonly", "yes"] if persist else ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def up() -> bool:
            assert process.poll() is None, "redis-server exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False

        wait_for(up, 10, "redis-server to listen")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


JSON = {"content-type": "application/json"}
"""Headers of a request whose body is JSON (any other body type is 415)."""


def missing(reason: str) -> None:
    """A part a test needs from outside Python is missing (redis-server, chromium): skip,
    saying why, or fail under ``CI=true``, where ``make test`` installs it, so a green CI
    cannot hide a test that never ran."""
    import os

    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing part fails the run)")
    pytest.skip(reason)
