"""``client.NAME.batch(inputs)``: a batch job (SPEC §11) from raytask's own clients.

The inputs become a JSONL file of request lines (``custom_id`` is each input's index, as a
string), uploaded with ``POST /v1/files`` and started with ``POST /v1/batches``, or, from
the in-cluster clients, with the same commands sent to the task manager actor. The job
handle (:class:`Job`, :class:`AsyncJob`) reads its state, waits with a progress bar, reads
its results back from the output and error files a piece at a time, and cancels it.

The handles talk to a small backend (:class:`JobBackend`) that each client provides: HTTP
requests or actor calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from ..core.errors import TaskFailedError, WaitTimeoutError
from .protocol import Request, check

PIECE = 4 * 1024 * 1024
ENDED = ("completed", "failed", "cancelled", "expired")


class JobState(BaseModel):
    """A batch object (SPEC §11): ``status``, ``request_counts`` and the file ids."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    endpoint: str
    request_counts: dict[str, int]
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    created_at: int
    expires_at: int | None = None

    @property
    def done(self) -> bool:
        """Whether the job has ended (completed, failed, cancelled or expired)."""
        return self.status in ENDED


def request_lines(url: str, bodies: Iterable[dict[str, Any]]) -> bytes:
    """The JSONL input file of a job on ``url``: one request line per body, numbered."""
    return b"".join(
        json.dumps({"custom_id": str(i), "method": "POST", "url": url, "body": body}).encode()
        + b"\n"
        for i, body in enumerate(bodies)
    )


def _result_of(line: dict[str, Any]) -> tuple[str, Any]:
    if line.get("error") is None:
        return line["custom_id"], line["response"]["body"]
    error = line["error"]
    return line["custom_id"], TaskFailedError(f"{error['code']}: {error['message']}")


class JobBackend(Protocol):
    """What a :class:`Job` needs from its client."""

    def get(self, batch_id: str) -> dict[str, Any]: ...
    def cancel(self, batch_id: str) -> dict[str, Any]: ...
    def read(self, file_id: str, offset: int, size: int) -> bytes: ...


class AsyncJobBackend(Protocol):
    """What an :class:`AsyncJob` needs from its client."""

    async def get(self, batch_id: str) -> dict[str, Any]: ...
    async def cancel(self, batch_id: str) -> dict[str, Any]: ...
    async def read(self, file_id: str, offset: int, size: int) -> bytes: ...


def _split(piece: bytes, rest: bytes) -> tuple[list[bytes], bytes]:
    """The whole lines of ``rest + piece``, and what is left of the last one."""
    lines = (rest + piece).split(b"\n")
    return [line for line in lines[:-1] if line.strip()], lines[-1]


class Job:
    """A batch job's handle: ``status()``, ``wait()``, ``results()``, ``cancel()``."""

    def __init__(self, backend: JobBackend, batch_id: str) -> None:
        self._backend, self.id = backend, batch_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobState:
        """The batch object now."""
        return JobState.model_validate(self._backend.get(self.id))

    def wait(
        self, timeout: float | None = None, progress: bool = False, poll_s: float = 0.5
    ) -> JobState:
        """Return once the job has ended (its last state); with ``progress``, a bar counts
        the finished lines.

        Raises:
            WaitTimeoutError: it had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with tqdm(disable=not progress, desc=f"batch {self.id}", unit="line") as bar:
            while True:
                state = self.status()
                _show(bar, state)
                if state.done:
                    return state
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(f"batch {self.id} is still {state.status}")
                time.sleep(poll_s)

    def _lines(self, file_id: str | None) -> Iterator[dict[str, Any]]:
        offset, rest = 0, b""
        while file_id is not None:
            piece = self._backend.read(file_id, offset, PIECE)
            if not piece:
                return
            offset += len(piece)
            lines, rest = _split(piece, rest)
            yield from map(json.loads, lines)

    def results(self) -> Iterator[tuple[str, Any]]:
        """``(custom_id, result)`` of each line of an ended job, read a piece at a time: the
        output file's results first, then the error file's lines, each as a
        :class:`~raytask.TaskFailedError` saying its code and message."""
        state = self.status()
        if not state.done:
            raise TaskFailedError(f"batch {self.id} is still {state.status}: wait() first")
        for file_id in (state.output_file_id, state.error_file_id):
            yield from map(_result_of, self._lines(file_id))

    def cancel(self) -> JobState:
        """Cancel the job: finished lines stay in its output; the rest are cancelled."""
        return JobState.model_validate(self._backend.cancel(self.id))


class AsyncJob:
    """A batch job's handle for async code (the names of :class:`Job`)."""

    def __init__(self, backend: AsyncJobBackend, batch_id: str) -> None:
        self._backend, self.id = backend, batch_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> JobState:
        return JobState.model_validate(await self._backend.get(self.id))

    async def wait(
        self, timeout: float | None = None, progress: bool = False, poll_s: float = 0.5
    ) -> JobState:
        """See :meth:`Job.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with tqdm(disable=not progress, desc=f"batch {self.id}", unit="line") as bar:
            while True:
                state = await self.status()
                _show(bar, state)
                if state.done:
                    return state
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(f"batch {self.id} is still {state.status}")
                await asyncio.sleep(poll_s)

    async def results(self) -> AsyncIterator[tuple[str, Any]]:
        """See :meth:`Job.results`."""
        state = await self.status()
        if not state.done:
            raise TaskFailedError(f"batch {self.id} is still {state.status}: wait() first")
        for file_id in (state.output_file_id, state.error_file_id):
            offset, rest = 0, b""
            while file_id is not None:
                piece = await self._backend.read(file_id, offset, PIECE)
                if not piece:
                    break
                offset += len(piece)
                lines, rest = _split(piece, rest)
                for line in lines:
                    yield _result_of(json.loads(line))

    async def cancel(self) -> JobState:
        return JobState.model_validate(await self._backend.cancel(self.id))


def _show(bar: tqdm, state: JobState) -> None:
    counts = state.request_counts
    bar.total = counts.get("total") or None
    bar.n = counts.get("completed", 0) + counts.get("failed", 0)
    bar.set_postfix_str(state.status, refresh=False)
    bar.refresh()


# -- the HTTP backends -----------------------------------------------------------


class HTTPJobs:
    """The :class:`JobBackend` of the sync HTTP client, under an app's route prefix."""

    def __init__(self, send: Callable[[Request], Any], prefix: str) -> None:
        self._send, self._v1 = send, prefix.rstrip("/") + "/v1"

    def _json(self, request: Request) -> Any:
        response = self._send(request)
        check(response.status_code, response.content)
        return response.json()

    def start(self, data: bytes, url: str, priority: int) -> str:
        """Upload ``data`` and start a job on it; returns its id."""
        upload = Request(
            "POST",
            f"{self._v1}/files",
            files={"file": ("batch.jsonl", data)},
            data={"purpose": "batch"},
        )
        file_id = self._json(upload)["id"]
        body = {"input_file_id": file_id, "endpoint": url, "priority": priority}
        return self._json(Request("POST", f"{self._v1}/batches", json=body))["id"]

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._json(Request("GET", f"{self._v1}/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._json(Request("POST", f"{self._v1}/batches/{batch_id}/cancel"))

    def read(self, file_id: str, offset: int, size: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + size - 1}"}
        response = self._send(
            Request("GET", f"{self._v1}/files/{file_id}/content", headers=headers)
        )
        if response.status_code == 416:  # past its end
            return b""
        check(response.status_code, response.content)
        return response.content if response.status_code == 206 or offset == 0 else b""


class AsyncHTTPJobs:
    """The :class:`AsyncJobBackend` of the async HTTP client."""

    def __init__(self, send: Callable[[Request], Awaitable[Any]], prefix: str) -> None:
        self._send, self._v1 = send, prefix.rstrip("/") + "/v1"

    async def _json(self, request: Request) -> Any:
        response = await self._send(request)
        check(response.status_code, response.content)
        return response.json()

    async def start(self, data: bytes, url: str, priority: int) -> str:
        upload = Request(
            "POST",
            f"{self._v1}/files",
            files={"file": ("batch.jsonl", data)},
            data={"purpose": "batch"},
        )
        file_id = (await self._json(upload))["id"]
        body = {"input_file_id": file_id, "endpoint": url, "priority": priority}
        return (await self._json(Request("POST", f"{self._v1}/batches", json=body)))["id"]

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._json(Request("GET", f"{self._v1}/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._json(Request("POST", f"{self._v1}/batches/{batch_id}/cancel"))

    async def read(self, file_id: str, offset: int, size: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + size - 1}"}
        request = Request("GET", f"{self._v1}/files/{file_id}/content", headers=headers)
        response = await self._send(request)
        if response.status_code == 416:  # past its end
            return b""
        check(response.status_code, response.content)
        return response.content if response.status_code == 206 or offset == 0 else b""
