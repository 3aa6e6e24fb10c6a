"""Parsing the query strings, headers and bodies of the task-control routes.

Each function raises the 4xx :class:`~raytask.core.errors.HTTPError` a bad value deserves and
returns plain values, so the route handlers stay short (SPEC §7 and the long-poll of §2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ..core.bodies import ItemError
from ..core.config import AppConfig, SubmitOptions
from ..core.endpoint import MAX_BATCH
from ..core.errors import (
    HeadersTooLargeError,
    HTTPError,
    InvalidInputError,
    MalformedRequestError,
    PayloadTooLargeError,
    URLTooLongError,
    validation_reasons,
)
from ..core.status import BENTOML_SPELLING, TaskStatus
from ..core.usage import UsageQuery
from ..core.webhooks import check_url
from ..core.wire import (
    ATTEMPT,
    CURSOR,
    DEFAULT_LIST_LIMIT,
    DIGITS,
    FROM,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_PATTERN,
    LAST_EVENT_ID,
    LIMIT,
    MAX_WAIT_S,
    STATUS,
    USAGE_GROUPS,
    WAIT_S,
)

_STATUS_VALUES = frozenset({s.value for s in TaskStatus} | set(BENTOML_SPELLING.values()))
_FROM_BENTOML = {v: k.value for k, v in BENTOML_SPELLING.items()}
M = TypeVar("M", bound=BaseModel)


def idempotency_key(request: Request) -> str | None:
    """The submit's ``Idempotency-Key`` header: 1-255 visible ASCII characters."""
    values = request.headers.getlist(IDEMPOTENCY_KEY)
    if not values:
        return None
    if len(values) > 1 or not IDEMPOTENCY_KEY_PATTERN.fullmatch(values[0]):
        raise MalformedRequestError(
            f"{IDEMPOTENCY_KEY} must be one value of 1 to 255 visible ASCII characters"
        )
    return values[0]


def wait_s_of(request: Request) -> float:
    """The long-poll's ``wait_s`` (0 without one): a number of seconds from 0 to 60."""
    text = request.query_params.get(WAIT_S.name)
    if text is None:
        return 0.0
    try:
        wait_s = float(text)
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= MAX_WAIT_S:  # NaN fails both comparisons
        raise InvalidInputError(f"wait_s must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return wait_s


def stream_attempt(request: Request) -> int | None:
    """The attempt a resumed stream read (``attempt=N``), or None."""
    text = request.query_params.get(ATTEMPT.name)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", text) or text.strip("0") == "":
        raise InvalidInputError(f"{ATTEMPT.name} must be an attempt number (1 to 999999999)")
    return int(text)


def stream_start(request: Request) -> int:
    """Where a stream starts: ``from=N``, else ``Last-Event-ID: N`` (resume after N), else 0."""
    text = request.query_params.get(FROM.name)
    after = request.headers.get(LAST_EVENT_ID.name)
    if text is None and after is None:
        return 0
    value = text if text is not None else after
    if value is None or not re.fullmatch(r"[0-9]{1,9}", value):
        name = FROM.name if text is not None else LAST_EVENT_ID.name
        raise InvalidInputError(f"{name} must be a chunk index (0 to 999999999)")
    return int(value) + (0 if text is not None else 1)


def item_error(task_id: str, error: HTTPError) -> ItemError:
    """The ``status_many`` entry of an id that has no status answer."""
    return ItemError(task_id=task_id, error=str(error), status_code=error.status_code)


def parse_body(model: type[M], body: bytes, route: str) -> M:
    """``body`` as ``model`` (400 if not JSON, 422 naming each bad field)."""
    try:
        return model.model_validate_json(body.strip() or b"null")
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise MalformedRequestError("request body is not valid JSON") from None
        reasons = validation_reasons(errors, "body")
        raise InvalidInputError(f"invalid body for {route}: {reasons}", errors) from None


@dataclass(frozen=True)
class ListQuery:
    """The query of a listing: statuses, page size and cursor."""

    statuses: list[str] | None
    limit: int
    cursor: int | None

    @classmethod
    def parse(cls, request: Request) -> ListQuery:
        params = request.query_params
        statuses = [s for value in params.getlist(STATUS.name) for s in value.split(",") if s]
        wrong = [s for s in statuses if s not in _STATUS_VALUES]
        if wrong:
            raise InvalidInputError(
                f"unknown status {wrong[0][:40]!r}: use {', '.join(sorted(_STATUS_VALUES))}"
            )
        limit_text = params.get(LIMIT.name, str(DEFAULT_LIST_LIMIT))
        if not DIGITS.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_BATCH:
            raise InvalidInputError(f"limit must be an integer from 1 to {MAX_BATCH}")
        cursor_text = params.get(CURSOR.name)
        if cursor_text is not None and not DIGITS.fullmatch(cursor_text):
            raise InvalidInputError("malformed cursor: pass back a next_cursor as it came")
        return cls(
            [_FROM_BENTOML.get(s, s) for s in statuses] or None,
            int(limit_text),
            None if cursor_text is None else int(cursor_text),
        )


def usage_query(request: Request) -> UsageQuery:
    """The query of ``GET /usage`` (SPEC 12): filters, time range and grouping."""
    params = request.query_params
    groups = [g for value in params.getlist("group_by") for g in value.split(",") if g]
    wrong = [g for g in groups if g not in USAGE_GROUPS]
    if wrong:
        raise InvalidInputError(
            f"unknown group_by {wrong[0][:40]!r}: use {', '.join(USAGE_GROUPS)}"
        )
    return UsageQuery(
        params.get("tenant"),
        params.get("endpoint"),
        _instant(params, "since"),
        _instant(params, "until"),
        tuple(dict.fromkeys(groups)) or USAGE_GROUPS,
    )


def _instant(params: Any, name: str) -> float | None:
    """An ISO-8601 query parameter as epoch seconds (no zone: UTC)."""
    text = params.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"{name} must be an ISO-8601 time, like 2026-12-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def submit_options(request: Request, config: AppConfig) -> SubmitOptions:
    """The per-submit options of a submit's query string, checked against the app's
    caps (and a webhook URL against its network rules and secret)."""
    params = {k: v for k, v in request.query_params.items()}
    try:
        options = SubmitOptions.model_validate(params)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        reasons = validation_reasons(detail, "query")
        raise InvalidInputError(
            f"invalid task options in the query string: {reasons}", detail
        ) from None
    config.check_submit(options)
    if options.webhook_url is not None:
        check_url(options.webhook_url, config.webhook_allow_private_networks)
        try:
            secret = config.resolved_webhook_secret()
        except ValueError as exc:
            raise InvalidInputError(f"the app's webhook secret is unusable: {exc}") from None
        if secret is None:
            raise InvalidInputError(
                "this app has no webhook secret to sign webhooks with: set webhook_secret "
                "in its config or RAYTASK_WEBHOOK_SECRET"
            )
    return options


def check_limits(request: Request, config: AppConfig) -> None:
    """Refuse a request whose URL or headers pass the app's limits."""
    url = len(request.scope.get("raw_path") or request.url.path.encode()) + len(
        request.scope.get("query_string", b"")
    )
    if url > config.max_url_bytes:
        raise URLTooLongError(f"path and query are longer than {config.max_url_bytes} bytes")
    headers = request.scope["headers"]
    if len(headers) > config.max_headers:
        raise HeadersTooLargeError(f"more than {config.max_headers} headers")
    if sum(len(name) + len(value) for name, value in headers) > config.max_header_bytes:
        raise HeadersTooLargeError(f"headers are larger than {config.max_header_bytes} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused past ``limit`` bytes (declared or read)."""
    declared = request.headers.get("content-length")
    if declared is not None and DIGITS.fullmatch(declared) and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
