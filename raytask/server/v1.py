"""The ``/v1`` routes of a raytask app: OpenAI's Files and Batch APIs (SPEC §11).

They follow OpenAI's wire, so the official ``openai`` SDK works unchanged with
``base_url="<app url>/v1"`` and a raytask token as its API key. The routes parse and check
requests and stream bytes; the jobs themselves live in the task manager
(:class:`~raytask.server.jobs.Jobs`), which they reach through ``jobs``: the in-process
:class:`Jobs` in the HTTP test tier, a proxy to the manager actor on Ray.

An upload is parsed as it arrives with python-multipart's streaming parser, and its file
part goes on to the manager in pieces of :data:`PIECE` bytes, so neither the ingress nor
the manager ever holds a whole file; a download comes back the same way.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.config import AppConfig
from ..core.errors import (
    InvalidInputError,
    MalformedRequestError,
    PayloadTooLargeError,
)
from ..core.queue import MAX_PRIORITY, MIN_PRIORITY
from .auth import caller_of
from .params import DIGITS, parse_body, read_body

_RANGE = re.compile(r"bytes=([0-9]{1,15})-([0-9]{0,15})")
PIECE = 4 * 1024 * 1024
"""Bytes per call between the ingress and the manager, for uploads and downloads."""
MAX_LIST = 100


class BatchRequest(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=64)
    endpoint: str = Field(max_length=256)
    completion_window: str = Field("24h", max_length=8)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    priority: int = Field(-1, ge=MIN_PRIORITY, le=MAX_PRIORITY)


def _metadata_ok(metadata: dict[str, str] | None) -> None:
    for key, value in (metadata or {}).items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidInputError(
                "metadata keys are at most 64 characters and values at most 512"
            )


class _Form:
    """What the streaming parser found so far: the fields, and the file part's pieces."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.pending = bytearray()  # the file's bytes not sent on yet
        self._name: str | None = None
        self._header = [b"", b""]
        self._headers: dict[bytes, bytes] = {}
        self._value = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        def field(data: bytes, start: int, end: int) -> None:
            self._header[0] += data[start:end]

        def value(data: bytes, start: int, end: int) -> None:
            self._header[1] += data[start:end]

        def header_end() -> None:
            self._headers[self._header[0].lower()] = self._header[1]
            self._header = [b"", b""]

        def headers_done() -> None:
            _, options = parse_options_header(self._headers.get(b"content-disposition"))
            self._name = options.get(b"name", b"").decode("utf-8", "replace")
            if self._name == "file":
                raw = options.get(b"filename", b"upload.jsonl")
                self.filename = raw.decode("utf-8", "replace")

        def data(chunk: bytes, start: int, end: int) -> None:
            if self._name == "file":
                self.pending += chunk[start:end]
            elif len(self._value) < 1024:
                self._value += chunk[start:end]

        def part_end() -> None:
            if self._name != "file" and self._name is not None:
                self.fields[self._name] = self._value.decode("utf-8", "replace")
            self._name, self._headers, self._value = None, {}, bytearray()

        return {
            "on_header_field": field,
            "on_header_value": value,
            "on_header_end": header_end,
            "on_headers_finished": headers_done,
            "on_part_data": data,
            "on_part_end": part_end,
        }


class V1Routes:
    """The Files and Batch routes over ``jobs`` (see the module's docstring).

    Args:
        jobs: the job commands of :class:`~raytask.server.jobs.Jobs`.
        config: app-wide settings (the largest file).
        guarded: wraps a handler in the app's limits, token check and error answers.
    """

    def __init__(self, jobs: Any, config: AppConfig, guarded: Callable[[Any], Any]) -> None:
        self.jobs, self.config, self._guarded = jobs, config, guarded

    @staticmethod
    def _owner(request: Request) -> str | None:
        return caller_of(request).owner

    # -- files -------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        media, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if media != b"multipart/form-data" or not boundary:
            raise MalformedRequestError(
                "POST /v1/files takes multipart/form-data with a 'file' and purpose=batch"
            )
        declared = request.headers.get("content-length")
        limit = self.config.max_file_bytes
        if declared is not None and DIGITS.fullmatch(declared) and int(declared) > limit + PIECE:
            raise PayloadTooLargeError(f"the file is larger than max_file_bytes={limit}")
        form, upload = _Form(), None
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if form.filename is not None and upload is None:
                    upload = await self.jobs.file_open(form.filename, "batch", self._owner(request))
                if upload is not None and len(form.pending) >= PIECE:
                    await self.jobs.file_write(upload, bytes(form.pending))
                    form.pending.clear()
            parser.finalize()
            if upload is None:
                raise InvalidInputError("the form has no 'file' part")
            purpose = form.fields.get("purpose")
            if purpose != "batch":
                raise InvalidInputError(f"purpose must be 'batch', not {purpose!r}")
            await self.jobs.file_write(upload, bytes(form.pending))
            return JSONResponse(await self.jobs.file_close(upload))
        except BaseException as exc:
            if upload is not None:
                await self.jobs.file_abort(upload)
            if isinstance(exc, ValueError):  # python-multipart's parse errors
                raise MalformedRequestError(f"the multipart body is malformed: {exc}") from None
            raise

    async def list_files(self, request: Request) -> Response:
        purpose = request.query_params.get("purpose")
        data = await self.jobs.file_list(self._owner(request), purpose)
        return JSONResponse({"object": "list", "data": data, "has_more": False})

    async def get_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        return JSONResponse(await self.jobs.file_get(file_id, self._owner(request)))

    async def content(self, request: Request) -> Response:
        """A file's bytes, streamed from the manager a piece at a time; ``Range: bytes=A-B``
        (one range) answers 206 with those bytes, 416 past the end."""
        file_id, owner = request.path_params["file_id"], self._owner(request)
        size = (await self.jobs.file_get(file_id, owner))["bytes"]
        start, end, status = 0, size, 200
        wanted = _RANGE.fullmatch(request.headers.get("range", ""))
        if wanted is not None:
            start, status = int(wanted.group(1)), 206
            end = min(size, int(wanted.group(2)) + 1) if wanted.group(2) else size
            if start >= size or end <= start:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        first = await self.jobs.file_read(file_id, start, min(PIECE, end - start), owner)

        async def pieces() -> AsyncIterator[bytes]:
            piece, offset = first, start
            while piece:
                yield piece
                offset += len(piece)
                if offset < end:
                    piece = await self.jobs.file_read(
                        file_id, offset, min(PIECE, end - offset), owner
                    )
                else:
                    piece = b""

        headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return StreamingResponse(
            pieces(), status_code=status, media_type="application/jsonl", headers=headers
        )

    async def delete_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        return JSONResponse(await self.jobs.file_delete(file_id, self._owner(request)))

    # -- batches -----------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        raw = await read_body(request, self.config.max_request_bytes)
        body = parse_body(BatchRequest, raw, "v1/batches")
        _metadata_ok(body.metadata)
        job = await self.jobs.batch_create(
            body.input_file_id,
            body.endpoint,
            body.completion_window,
            body.metadata,
            body.priority,
            self._owner(request),
            caller_of(request).tenant,
        )
        return JSONResponse(job)

    async def get_batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        return JSONResponse(await self.jobs.batch_get(batch_id, self._owner(request)))

    async def cancel(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        return JSONResponse(await self.jobs.batch_cancel(batch_id, self._owner(request)))

    async def list_batches(self, request: Request) -> Response:
        limit = request.query_params.get("limit", "20")
        if not DIGITS.fullmatch(limit) or not 1 <= int(limit) <= MAX_LIST:
            raise InvalidInputError(f"limit must be an integer from 1 to {MAX_LIST}")
        after = request.query_params.get("after")
        page = await self.jobs.batch_list(after, int(limit), self._owner(request))
        return JSONResponse(page)

    def routes(self) -> list[Route]:
        """Every ``/v1`` route, behind the app's guard."""
        table = (
            ("/v1/files", self.upload, "POST"),
            ("/v1/files", self.list_files, "GET"),
            ("/v1/files/{file_id}", self.get_file, "GET"),
            ("/v1/files/{file_id}", self.delete_file, "DELETE"),
            ("/v1/files/{file_id}/content", self.content, "GET"),
            ("/v1/batches", self.create, "POST"),
            ("/v1/batches", self.list_batches, "GET"),
            ("/v1/batches/{batch_id}", self.get_batch, "GET"),
            ("/v1/batches/{batch_id}/cancel", self.cancel, "POST"),
        )
        return [
            Route(path, self._guarded(handler), methods=[method]) for path, handler, method in table
        ]


__all__ = ["PIECE", "BatchRequest", "V1Routes"]
