"""The lines of a batch job (SPEC §11): request lines checked and parsed, result lines made.

An input line is ``{"custom_id", "method": "POST", "url": "/NAME", "body": {kwargs}}``;
its body is checked by the endpoint's own input model (:meth:`Endpoint.validate_json`), so
a line is taken exactly when a ``POST /NAME/submit`` with that body would be.
:func:`check_file` reads a whole file once, in bounded memory (custom ids are compared by
8-byte digests, and only digests seen twice are compared again by value), so a job that
would fail on line 9,000,000 fails before its first line runs.

Output and error lines are made as bytes, with the result's JSON spliced in as the
replica's encoder made it (:func:`raytask.core.endpoint.encode_result`): text results are
JSON strings, binary ones (bytes, images) base64 strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy  # Ray's own dependency

from ..core.endpoint import Endpoint, encode_result
from ..core.errors import HTTPError, ResultEncodingError

MAX_LINES = 10_000_000
"""The most lines one file may hold."""
MAX_ERRORS = 1_000
"""The most line errors a failed job lists."""
MAX_CUSTOM_ID = 512
"""The longest ``custom_id``, in characters."""


class LineError(Exception):
    """A line that does not parse or validate: its ``code`` and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def parse_line(raw: bytes, url: str, endpoint: Endpoint) -> tuple[str, dict[str, Any]]:
    """``(custom_id, kwargs)`` of one request line of a job on ``url``.

    Raises:
        LineError: the line is not such a request.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise LineError("invalid_json_line", f"the line is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LineError("invalid_request", "the line must be a JSON object")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
        raise LineError(
            "invalid_custom_id", f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters"
        )
    extra = sorted(set(data) - {"custom_id", "method", "url", "body"})
    if extra:
        raise LineError("invalid_request", f"unknown fields {extra[:5]}")
    if data.get("method") != "POST":
        raise LineError("invalid_method", "method must be 'POST'")
    if data.get("url") != url:
        raise LineError("mismatched_url", f"url must be the batch's endpoint {url!r}")
    body = data.get("body", {})
    if not isinstance(body, dict):
        raise LineError(
            "invalid_body", f"body must be a JSON object of {endpoint.name}'s arguments"
        )
    try:
        return custom_id, endpoint.validate_json(json.dumps(body).encode())
    except HTTPError as exc:
        raise LineError("invalid_body", exc.message) from None


def lines(src: BinaryIO, start: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """``(number, offset, raw)`` of each non-blank line from ``src``'s position (which is
    the start of line ``start``)."""
    offset, number = src.tell(), start
    for raw in src:
        if raw.strip():
            yield number, offset, raw
        offset += len(raw)
        number += 1


def _digest(custom_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "little")


def check_file(path: Path, url: str, endpoint: Endpoint) -> tuple[int, list[dict[str, Any]]]:
    """Check every line of a job's input file: ``(requests, errors)``, errors as
    ``{"code", "message", "line"}``, at most :data:`MAX_ERRORS` of them."""
    errors: list[dict[str, Any]] = []

    def error(code: str, message: str, number: int | None) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append({"code": code, "message": message, "line": number})

    digests = array("Q")
    total = 0
    with open(path, "rb") as src:
        for number, _, raw in lines(src):
            total += 1
            if total > MAX_LINES:
                error("too_many_lines", f"a file may hold at most {MAX_LINES} requests", number)
                break
            try:
                custom_id, _ = parse_line(raw, url, endpoint)
            except LineError as exc:
                error(exc.code, exc.message, number)
                continue
            digests.append(_digest(custom_id))
    if total == 0:
        error("empty_file", "the file holds no request line", None)
    elif not errors:
        for number, custom_id in _duplicates(path, digests):
            error("duplicate_custom_id", f"custom_id {custom_id[:64]!r} is used twice", number)
    return total, errors


def _duplicates(path: Path, digests: array[int]) -> Iterator[tuple[int, str]]:
    """The lines whose custom_id an earlier line has (their digests are compared first,
    sorted; only lines with a repeated digest are read again)."""
    ordered = numpy.sort(numpy.frombuffer(digests, dtype=numpy.uint64))  # 8 bytes a line
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return
    seen: set[str] = set()
    with open(path, "rb") as src:
        for number, _, raw in lines(src):
            custom_id = json.loads(raw)["custom_id"]
            if _digest(custom_id) in repeated:
                if custom_id in seen:
                    yield number, custom_id
                seen.add(custom_id)


# -- result lines ---------------------------------------------------------------


def _json(value: Any) -> bytes:
    """Compact JSON, as raytask's answers are."""
    return json.dumps(value, separators=(",", ":")).encode()


def _json_body(value: Any) -> bytes:
    body, media_type = encode_result(value)
    if media_type == "application/json":
        return body
    if media_type.startswith("text/"):
        return _json(body.decode())
    return _json(base64.b64encode(body).decode())


def output_line(line_id: str, custom_id: str, task_id: str, value: Any) -> bytes:
    """The output line of a success (raises :class:`ResultEncodingError` if the value has
    no JSON form: the caller writes an error line instead)."""
    body = _json_body(value)
    head = _json({"id": line_id, "custom_id": custom_id})[:-1]
    return (
        head
        + b',"response":{"status_code":200,"request_id":'
        + _json(task_id)
        + b',"body":'
        + body
        + b'},"error":null}\n'
    )


def error_line(
    line_id: str,
    custom_id: str,
    code: str,
    message: str,
    task_id: str | None = None,
    status_code: int = 500,
) -> bytes:
    """The error line of a request that failed (``task_id``: it ran as that task) or never
    ran (``batch_cancelled``, ``batch_expired``)."""
    response = None
    if task_id is not None:
        body = {"error": {"code": code, "message": message}}
        response = {"status_code": status_code, "request_id": task_id, "body": body}
    data = {
        "id": line_id,
        "custom_id": custom_id,
        "response": response,
        "error": {"code": code, "message": message},
    }
    return _json(data) + b"\n"


__all__ = [
    "MAX_ERRORS",
    "MAX_LINES",
    "LineError",
    "ResultEncodingError",
    "check_file",
    "error_line",
    "lines",
    "output_line",
    "parse_line",
]
