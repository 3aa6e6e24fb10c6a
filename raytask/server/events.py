"""The events of ``GET /NAME/stream`` (SPEC 10), from the backend's stream reads.

sse-starlette writes the Server-Sent Events wire (and the ``: ping`` comments while idle,
and the headers that keep proxies from buffering); this module decides which events go out:
``output`` per chunk (``id``: its index in its attempt), ``reset`` when a lost attempt runs
again, one ``done`` with the final status answer, and ``error`` if the task manager cannot
be reached mid-stream (the client reconnects with ``Last-Event-ID``). Also the events of a
generator's synchronous call, which has no task (:func:`call_events`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from ..core.endpoint import encode_chunk
from ..core.errors import HTTPError, ResultEncodingError
from ..core.messages import StreamRead
from .backend import Backend

logger = logging.getLogger("ray.serve.raytask.routes")

PING_S = 15.0
"""Seconds between ``: ping`` comments on an idle stream."""
READ_WAIT_S = 15.0
"""How long one read of the backend waits for something new."""


def _json(value: Any) -> str:
    """Compact JSON, as the JSON answers are."""
    return json.dumps(value, separators=(",", ":"))


class Reads:
    """One reader of one task's stream."""

    def __init__(
        self, backend: Backend, task_id: str, owner: str | None, endpoint: str, bentoml: bool
    ) -> None:
        self.backend, self.task_id, self.owner = backend, task_id, owner
        self.endpoint, self.bentoml = endpoint, bentoml

    async def events(
        self, read: StreamRead, attempt: int | None = None
    ) -> AsyncIterator[ServerSentEvent]:
        """The events, from the first read on (of ``attempt``, when the reader resumes
        one: a newer attempt's chunks come after a reset), until the task ends."""
        while True:
            if read.attempt and attempt and read.attempt != attempt:  # the lost one's are void
                yield ServerSentEvent(_json({"attempt": read.attempt}), event="reset")
            attempt, index = read.attempt or attempt or 0, read.start
            for chunk in read.chunks:
                yield ServerSentEvent(chunk.decode(), event="output", id=str(index))
                index += 1
            if read.state.status.finished and not read.more:
                done = read.state.wire(bentoml=self.bentoml)
                yield ServerSentEvent(_json(done), event="done")
                return
            try:
                read = await self.backend.stream(
                    self.task_id, index, attempt, READ_WAIT_S, self.owner, self.endpoint
                )
            except HTTPError as exc:  # the manager is away: the client resumes later
                body = {**exc.to_body(), "status_code": exc.status_code}
                yield ServerSentEvent(_json(body), event="error")
                return


async def call_events(chunks: AsyncIterator[Any]) -> AsyncIterator[ServerSentEvent]:
    """The events of a generator's synchronous call with ``Accept: text/event-stream``: an
    ``output`` per chunk as the method yields it, then one ``done`` (no task: its status,
    chunk count and error, the fields of a status answer that apply)."""
    count, error = 0, None
    try:
        async for value in chunks:
            yield ServerSentEvent(encode_chunk(value).decode(), event="output", id=str(count))
            count += 1
    except (HTTPError, ResultEncodingError) as exc:
        error = str(exc)
    except Exception as exc:  # the replica or the connection to it: said, not raised
        logger.warning("raytask: a streamed call failed: %r", exc)
        error = f"{type(exc).__name__}: {exc}"
    done = {"status": "failure" if error else "success", "chunks": count, "error": error}
    yield ServerSentEvent(_json(done), event="done")
