"""``task.stream()`` (SPEC 10): a task's chunks as they come.

Over HTTP, from ``GET /NAME/stream``: httpx-sse parses the Server-Sent Events;
:class:`StreamEvents` (sans-I/O) decides what each event means, and the loops here reconnect
a dropped stream where it left off (``from=`` the next chunk's index, ``attempt=`` the
attempt it read, so that a newer one starts with a reset), up to ``reconnects`` times in
a row. In the cluster, from the manager's ``stream`` long-poll (:func:`read_reads`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from httpx_sse import EventSource

from ..core.errors import ServiceUnavailableError, StreamReset, error_from_body
from ..core.messages import StreamRead
from ..core.state import TaskState
from ..core.wire import ATTEMPT_HEADER
from .protocol import Request, check

RECONNECTS = 5
"""Reconnects in a row (with no chunk between them) before the error is raised."""
_DROPPED = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout, ServiceUnavailableError)


class StreamEvents:
    """Reads one task's stream across reconnects (sans-I/O): feed it each event; it says
    what to hand the caller and where a reconnect resumes (``next_index``)."""

    def __init__(self) -> None:
        self.next_index = 0
        self.attempt = 0  # the attempt whose chunks it reads (0: not known yet)
        self.state: TaskState | None = None

    def connected(self, headers: httpx.Headers) -> None:
        """A stream answered: it says the attempt the reader is in."""
        attempt = headers.get(ATTEMPT_HEADER, "")
        if attempt.isdigit() and int(attempt):
            self.attempt = int(attempt)

    def take(self, event: str, data: str, event_id: str | None) -> tuple[bool, Any]:
        """``(True, chunk)`` for a chunk; ``(False, None)`` for the end (``state`` is set)
        or a ping.

        Raises:
            StreamReset: the task's attempt was lost and it runs again.
            HTTPError: the server sent an ``error`` event (reconnect later).
        """
        if event == "output":
            if event_id is not None and event_id.isdigit():
                self.next_index = int(event_id) + 1
            return True, json.loads(data)
        if event == "reset":
            attempt = int(json.loads(data).get("attempt", 0))
            self.next_index, self.attempt = 0, attempt
            raise StreamReset(
                f"the task lost its attempt and runs again (attempt {attempt})", attempt
            )
        if event == "done":
            self.state = TaskState.model_validate_json(data)
        elif event == "error":
            body = json.loads(data)
            raise error_from_body(int(body.get("status_code", 503)), body)
        return False, None


def _pause(failures: int) -> float:
    return min(0.2 * 2**failures, 5.0)


def read_stream(
    http: httpx.Client,
    build: Callable[[Request], httpx.Request],
    request_for: Callable[[int, int], Request],
    reader: StreamEvents,
    reconnects: int = RECONNECTS,
) -> Iterator[Any]:
    """The chunks of one stream, reconnecting from ``reader.next_index`` when it drops."""
    failures = 0
    while True:
        try:
            request = build(request_for(reader.next_index, reader.attempt))
            response = http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    check(response.status_code, response.read())
                reader.connected(response.headers)
                for event in EventSource(response).iter_sse():
                    is_chunk, chunk = reader.take(event.event, event.data, event.id)
                    if is_chunk:
                        failures = 0
                        yield chunk
                    elif reader.state is not None:
                        return
            finally:
                response.close()
        except _DROPPED:
            failures += 1
            if failures > reconnects:
                raise
            time.sleep(_pause(failures))


async def aread_stream(
    http: httpx.AsyncClient,
    build: Callable[[Request], httpx.Request],
    request_for: Callable[[int, int], Request],
    reader: StreamEvents,
    reconnects: int = RECONNECTS,
) -> AsyncIterator[Any]:
    """The chunks of one stream (see :func:`read_stream`), awaited."""
    failures = 0
    while True:
        try:
            request = build(request_for(reader.next_index, reader.attempt))
            response = await http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    check(response.status_code, await response.aread())
                reader.connected(response.headers)
                async for event in EventSource(response).aiter_sse():
                    is_chunk, chunk = reader.take(event.event, event.data, event.id)
                    if is_chunk:
                        failures = 0
                        yield chunk
                    elif reader.state is not None:
                        return
            finally:
                await response.aclose()
        except _DROPPED:
            failures += 1
            if failures > reconnects:
                raise
            await asyncio.sleep(_pause(failures))


READ_WAIT_S = 15.0
"""How long one in-cluster read waits for something new."""


def _new_reads(read: StreamRead, attempt: int | None, reader: StreamEvents) -> list[Any]:
    """The chunks of one in-cluster read (their index kept in ``reader``), or the reset."""
    if attempt and read.attempt != attempt:
        reader.next_index = 0
        raise StreamReset(
            f"the task lost its attempt and runs again (attempt {read.attempt})", read.attempt
        )
    reader.next_index = read.start + len(read.chunks)
    if read.state.status.finished and not read.more:
        reader.state = read.state
    return [json.loads(chunk) for chunk in read.chunks]


def read_reads(
    ask: Callable[[int, int | None], StreamRead], reader: StreamEvents, reconnects: int = RECONNECTS
) -> Iterator[Any]:
    """The chunks of one stream in the cluster: ``ask(start, attempt)`` is one read; a read
    the manager cannot answer (it restarts) is asked again, up to ``reconnects`` times in a
    row, in the attempt it read (a newer one raises the reset)."""
    attempt, failures = None, 0
    while reader.state is None:
        try:
            read = ask(reader.next_index, attempt)
        except ServiceUnavailableError:
            failures += 1
            if failures > reconnects:
                raise
            time.sleep(_pause(failures))
            continue
        failures = 0
        yield from _new_reads(read, attempt, reader)
        attempt = read.attempt


async def aread_reads(
    ask: Callable[[int, int | None], Any], reader: StreamEvents, reconnects: int = RECONNECTS
) -> AsyncIterator[Any]:
    """The chunks of one stream in the cluster (see :func:`read_reads`), awaited."""
    attempt, failures = None, 0
    while reader.state is None:
        try:
            read = await ask(reader.next_index, attempt)
        except ServiceUnavailableError:
            failures += 1
            if failures > reconnects:
                raise
            await asyncio.sleep(_pause(failures))
            continue
        failures = 0
        for chunk in _new_reads(read, attempt, reader):
            yield chunk
        attempt = read.attempt
