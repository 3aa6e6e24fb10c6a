"""The events of ``GET /NAME/stream`` (SPEC 10), from the backend's stream reads.

sse-starlette writes the Server-Sent Events wire (and the ``: ping`` comments while idle,
and the headers that keep proxies from buffering); this module decides which events go out:
``output`` per chunk (``id``: its index in its attempt), ``reset`` when a lost attempt runs
again, one ``done`` with the final status answer, and ``error`` if the task manager cannot
be reached mid-stream (the client reconnects with ``Last-Event-ID``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from ..core.endpoint import encode_chunk
from ..core.errors import HTTPError
from ..core.messages import StreamRead
from .backend import Backend

PING_S = 15.0
"""Seconds between ``: ping`` comments on an idle stream."""
READ_WAIT_S = 15.0
"""How long one read of the backend waits for something new."""


class Reads:
    """One reader of one task's stream."""

    def __init__(
        self, backend: Backend, task_id: str, owner: str | None, endpoint: str, bentoml: bool
    ) -> None:
        self.backend, self.task_id, self.owner = backend, task_id, owner
        self.endpoint, self.bentoml = endpoint, bentoml

    async def events(self, read: StreamRead) -> AsyncIterator[ServerSentEvent]:
        """The events, from the first read on, until the task ends."""
        attempt = None
        while True:
            if attempt and read.attempt != attempt:  # a lost attempt: its chunks are void
                yield ServerSentEvent(json.dumps({"attempt": read.attempt}), event="reset")
            attempt, index = read.attempt, read.start
            for chunk in read.chunks:
                yield ServerSentEvent(encode_chunk(chunk), event="output", id=str(index))
                index += 1
            if read.state.status.finished and not read.more:
                done = read.state.wire(bentoml=self.bentoml)
                yield ServerSentEvent(json.dumps(done), event="done")
                return
            try:
                read = await self.backend.stream(
                    self.task_id, index, attempt, READ_WAIT_S, self.owner, self.endpoint
                )
            except HTTPError as exc:  # the manager is away: the client resumes later
                body = {**exc.to_body(), "status_code": exc.status_code}
                yield ServerSentEvent(json.dumps(body), event="error")
                return
