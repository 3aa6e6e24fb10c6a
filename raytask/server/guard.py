"""What a web page in a browser may make an app do: media types and origins (SPEC §2).

An app without tokens (the default) answers anyone who can reach it, and a browser lets any
web page send it a "simple" request: a form post, or a ``text/plain`` ``fetch`` without a
preflight. Two rules close that door, checked before any route runs:

- A ``POST``/``PUT``/``PATCH``/``DELETE`` with a body must say ``Content-Type:
  application/json`` (or another ``+json`` type); anything else is 415. A page can only
  send JSON cross-site after a CORS preflight, which the app answers only for the origins it
  lists. An empty body needs no type (``cancel`` and ``retry`` take their id in the query).
  The one exception is an upload, ``POST .../v1/files`` (SPEC §11), ``multipart/form-data``
  by OpenAI's wire: it only stores a file (nothing runs until a JSON ``POST /v1/batches``),
  and the origin rule below still holds for it.
- Such a request whose ``Origin`` header names another site than the app's own (its
  ``Host``) and none of ``cors_allow_origins`` is 403. Browsers send ``Origin`` with every
  cross-site state change; programs (curl, the Python clients) usually send none, and a
  request without one is taken.

Listed origins get CORS answers, preflight included, from Starlette's ``CORSMiddleware``.
This one is a pure ASGI class (no body is read here, no per-request task is made).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from ..core.errors import HTTPError, OriginRefusedError, UnsupportedMediaTypeError
from ..core.wire import ATTEMPT_HEADER, IDEMPOTENCY_KEY

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_HEADERS = ["Authorization", "Content-Type", IDEMPOTENCY_KEY, "Last-Event-ID"]


def origin_key(origin: str) -> str:
    """An origin as compared: ``scheme://host[:port]``, lowercase, no trailing slash."""
    return origin.strip().rstrip("/").lower()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _is_upload(path: str, content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "multipart/form-data" and path.endswith("/v1/files")


def refusal(
    method: str, headers: Headers, allowed: frozenset[str], path: str = ""
) -> HTTPError | None:
    """Why a request must be refused before it reaches a route, or None."""
    if method not in STATE_CHANGING:
        return None
    origin = headers.get("origin")
    if origin is not None and origin_key(origin) not in allowed:
        own = headers.get("host", "").lower()
        if not own or urlsplit(origin.strip()).netloc.lower() != own:
            return OriginRefusedError(
                "a web page of another origin may not change this app's state: list it in "
                "cors_allow_origins to allow it"
            )
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    content_type = headers.get("content-type", "")
    if has_body and not (_is_json(content_type) or _is_upload(path, content_type)):
        return UnsupportedMediaTypeError(
            "send the body as JSON, with 'Content-Type: application/json'"
        )
    return None


class RequestGuard:
    """ASGI middleware: answers :func:`refusal`'s error, as JSON, before any route runs.

    Args:
        app: the wrapped ASGI app.
        allowed_origins: the app's ``cors_allow_origins``.
    """

    def __init__(self, app: Any, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(map(origin_key, allowed_origins))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            error = refusal(scope["method"], Headers(scope=scope), self.allowed, scope["path"])
            if error is not None:
                response = JSONResponse(error.to_body(), status_code=error.status_code)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def middleware(allowed_origins: tuple[str, ...]) -> list[Middleware]:
    """The app's middleware, outermost first: CORS for the listed origins (so a preflight
    is answered before anything else), then the guard."""
    stack = []
    if allowed_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(allowed_origins),
                allow_methods=["GET", "POST", "PUT"],
                allow_headers=CORS_HEADERS,
                expose_headers=["Retry-After", ATTEMPT_HEADER],  # a stream's, to resume
            )
        )
    stack.append(Middleware(RequestGuard, allowed_origins=allowed_origins))
    return stack
