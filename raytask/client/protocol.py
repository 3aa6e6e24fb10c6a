"""The client side of the wire protocol, without I/O.

Both HTTP clients build their requests and read their responses through this module, so the
sync and async clients share one logic and differ only in how they send a request and sleep.
Requests follow the wire's one declaration (:mod:`raytask.core.wire`: paths, methods and
parameter names) and answers are parsed into its models (:mod:`raytask.core.bodies`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from pydantic import TypeAdapter, ValidationError

from ..core import wire
from ..core.bodies import (
    CancelManyAnswer,
    DeleteManyAnswer,
    ItemError,
    StatusManyAnswer,
    SubmitManyAnswer,
    TaskPage,
    UsageAnswer,
)
from ..core.config import SubmitOptions
from ..core.errors import EndpointNotFoundError, HTTPError, error_from_body
from ..core.messages import NO_OPTIONS
from ..core.state import TaskState

RETRYABLE_STATUS = (429, 503)
"""Answers that mean "nothing was done, try again after ``Retry-After``"."""


@dataclass(frozen=True)
class Request:
    """One HTTP request, as plain data.

    ``absolute`` paths (the routes ``/schema.json`` lists already carry the app's route
    prefix) replace the base URL's path; the others are joined to it.
    """

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    absolute: bool = True
    headers: dict[str, str] | None = None
    hold_s: float | None = None  # a long-poll: the server may hold it this long
    files: Any = None  # a multipart upload (POST /v1/files): httpx's ``files``, with ``data``
    data: Any = None


def _wait(task_id: str, wait_s: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {wire.TASK_ID.name: task_id}
    if wait_s:
        params[wire.WAIT_S.name] = round(wait_s, 3)
    return params


def _request(name: str, route: str, **fields: Any) -> Request:
    """A request of the wire's operation ``name`` to the endpoint at ``route``."""
    op = wire.OPERATIONS[name]
    return Request(op.methods[0], route + op.path.removeprefix("/{name}"), **fields)


@dataclass(frozen=True)
class Submission:
    """Per-submit settings kept apart from the method's arguments (``.options(...)``)."""

    options: SubmitOptions = NO_OPTIONS
    idempotency_key: str | None = None

    @classmethod
    def of(cls, idempotency_key: str | None = None, **options: Any) -> Submission:
        """Validated settings.

        Raises:
            ValueError: an option is unknown or out of range, or the key is malformed.
        """
        try:
            checked = SubmitOptions(**options)
        except ValidationError as exc:
            raise ValueError(f"invalid task options: {exc}") from None
        if idempotency_key is not None and not wire.IDEMPOTENCY_KEY_PATTERN.fullmatch(
            idempotency_key
        ):
            raise ValueError("idempotency_key must be 1 to 255 visible ASCII characters")
        return cls(checked, idempotency_key)

    def merged(self, idempotency_key: str | None = None, **options: Any) -> Submission:
        """These settings with some replaced."""
        base = self.options.model_dump(exclude_none=True)
        key = idempotency_key if idempotency_key is not None else self.idempotency_key
        return Submission.of(key, **(base | options))

    def params(self) -> dict[str, Any]:
        """The options as query parameters."""
        return self.options.model_dump(exclude_none=True)

    def headers(self) -> dict[str, str] | None:
        key = self.idempotency_key
        return None if key is None else {wire.IDEMPOTENCY_KEY: key}


DEFAULT_SUBMISSION = Submission()


@dataclass(frozen=True)
class RemoteEndpoint:
    """An endpoint as ``/schema.json`` describes it."""

    name: str
    route: str
    is_task: bool
    params: tuple[str, ...]
    required: frozenset[str]
    open_kwargs: bool

    @classmethod
    def from_route(cls, route: dict[str, Any]) -> RemoteEndpoint:
        schema = route.get("input") or {}
        return cls(
            name=route["name"],
            route=route["route"],
            is_task=bool(route.get("is_task")),
            params=tuple(schema.get("properties") or {}),
            required=frozenset(schema.get("required") or ()),
            open_kwargs=schema.get("additionalProperties", True) is not False,
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map a Python call onto the endpoint's arguments, as Python would check them.

        Raises:
            TypeError: too many positional arguments, a duplicate, an unknown or a
                missing argument.
        """
        if len(args) > len(self.params):
            raise TypeError(
                f"{self.name}() takes {len(self.params)} positional arguments "
                f"but {len(args)} were given"
            )
        bound = dict(zip(self.params, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            if key not in self.params and not self.open_kwargs:
                raise TypeError(f"{self.name}() got an unexpected keyword argument {key!r}")
            bound[key] = value
        missing = sorted(self.required - bound.keys())
        if missing:
            raise TypeError(f"{self.name}() missing required arguments: {', '.join(missing)}")
        return bound

    # -- requests --------------------------------------------------------------

    def call(self, body: dict[str, Any]) -> Request:
        return _request("call", self.route, json=body)

    def submit(self, body: dict[str, Any], settings: Submission = DEFAULT_SUBMISSION) -> Request:
        return _request(
            "submit",
            self.route,
            params=settings.params() or None,
            json=body,
            headers=settings.headers(),
        )

    def submit_many(self, bodies: list[dict[str, Any]], settings: Submission) -> Request:
        if settings.idempotency_key is not None:
            raise ValueError("an idempotency key names one task: use submit, not submit_many")
        return _request("submit_many", self.route, params=settings.params(), json=bodies)

    def list(self, statuses: list[str] | None, limit: int, cursor: str | None) -> Request:
        params: dict[str, Any] = {wire.LIMIT.name: limit}
        if statuses:
            params[wire.STATUS.name] = ",".join(statuses)
        if cursor is not None:
            params[wire.CURSOR.name] = cursor
        return _request("list", self.route, params=params)

    def cancel_many(self, task_ids: list[str] | None, status: str | None) -> Request:
        body = {"task_ids": task_ids} if task_ids is not None else {"status": status}
        return _request("cancel_many", self.route, json=body)

    def delete_many(
        self, task_ids: list[str] | None, status: str | None, older_than_s: float | None
    ) -> Request:
        body: dict[str, Any] = {"task_ids": task_ids} if task_ids is not None else {}
        if status is not None:
            body["status"] = status
        if older_than_s is not None:
            body["older_than_s"] = older_than_s
        return _request("delete_many", self.route, json=body)

    def stream(self, task_id: str, start: int = 0, attempt: int = 0) -> Request:
        params: dict[str, Any] = {wire.TASK_ID.name: task_id}
        if start:
            params[wire.FROM.name] = start
        if attempt:
            params[wire.ATTEMPT.name] = attempt
        return _request("stream", self.route, params=params)

    def status(self, task_id: str, wait_s: float | None = None) -> Request:
        return _request("status", self.route, params=_wait(task_id, wait_s), hold_s=wait_s)

    def get(self, task_id: str, wait_s: float | None = None) -> Request:
        return _request("get", self.route, params=_wait(task_id, wait_s), hold_s=wait_s)

    def cancel(self, task_id: str) -> Request:
        return _request("cancel", self.route, params={wire.TASK_ID.name: task_id})

    def retry(self, task_id: str) -> Request:
        return _request("retry", self.route, params={wire.TASK_ID.name: task_id})


def settings_with(
    settings: Submission,
    priority: int | None,
    max_queue_s: float | None,
    idempotency_key: str | None,
    ttl_s: float | None,
    timeout_s: float | None,
    max_attempts: int | None,
) -> Submission:
    """``settings`` with the options a caller of ``.options(...)`` gave."""
    options = {
        "priority": priority,
        "max_queue_s": max_queue_s,
        "ttl_s": ttl_s,
        "timeout_s": timeout_s,
        "max_attempts": max_attempts,
    }
    return settings.merged(idempotency_key, **{k: v for k, v in options.items() if v is not None})


class WithOptions:
    """``.options(...)`` for every client's ``client.NAME``: per-submit settings kept apart
    from the method's arguments (a subclass says how to copy itself with new settings)."""

    _settings: Submission

    def _with_settings(self, settings: Submission) -> Self:
        raise NotImplementedError

    def options(
        self,
        *,
        priority: int | None = None,
        max_queue_s: float | None = None,
        idempotency_key: str | None = None,
        ttl_s: float | None = None,
        timeout_s: float | None = None,
        max_attempts: int | None = None,
    ) -> Self:
        """This endpoint with per-submit options, kept apart from the method's arguments.

        Example::

            task = client.render.options(priority=5, max_queue_s=60).submit(scene="a")

        Raises:
            ValueError: an option is out of range (priority -10..10, durations > 0) or the
                idempotency key is not 1-255 visible ASCII characters.
        """
        return self._with_settings(
            settings_with(
                self._settings,
                priority,
                max_queue_s,
                idempotency_key,
                ttl_s,
                timeout_s,
                max_attempts,
            )
        )


Page = tuple[list[TaskState], Any]
"""One page of a listing and the cursor of the next (None after the last)."""


def pages(fetch: Callable[[Any], Page]) -> Iterator[TaskState]:
    """Every task of a listing, fetching page after page with ``fetch(cursor)``."""
    cursor = None
    while True:
        page, cursor = fetch(cursor)
        yield from page
        if cursor is None:
            return


async def async_pages(fetch: Callable[[Any], Awaitable[Page]]) -> AsyncIterator[TaskState]:
    """:func:`pages` for a fetch that is awaited."""
    cursor = None
    while True:
        page, cursor = await fetch(cursor)
        for state in page:
            yield state
        if cursor is None:
            return


def statuses_of(status: str | Iterable[str] | None) -> list[str] | None:
    """The ``status=`` of a listing as a list of state names."""
    if status is None:
        return None
    return [status] if isinstance(status, str) else [str(s) for s in status]


SCHEMA = Request("GET", "/schema.json", absolute=False)


def status_many(task_ids: list[str]) -> Request:
    """``POST /status_many`` (relative to the app's URL)."""
    op = wire.OPERATIONS["status_many"]
    return Request(op.methods[0], op.path, json={"task_ids": task_ids}, absolute=False)


def usage(
    tenant: str | None = None,
    endpoint: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    group_by: Iterable[str] | None = None,
) -> Request:
    """``GET /usage`` (relative to the app's URL); times as ISO-8601 (naive: UTC)."""
    op = wire.OPERATIONS["usage"]
    params: dict[str, Any] = {"tenant": tenant, "endpoint": endpoint}
    for name, moment in (("since", since), ("until", until)):
        params[name] = moment.isoformat() if isinstance(moment, datetime) else moment
    params["group_by"] = None if group_by is None else ",".join(group_by)
    kept = {k: v for k, v in params.items() if v is not None}
    return Request(op.methods[0], op.path, params=kept, absolute=False)


def decode_usage(status_code: int, body: bytes) -> list[dict[str, Any]]:
    """The rows of a ``GET /usage`` answer, as plain dicts (SPEC 12's fields)."""
    check(status_code, body)
    return [row.model_dump() for row in UsageAnswer.model_validate_json(body).usage]


def decode_status_many(status_code: int, body: bytes) -> list[TaskState | HTTPError]:
    """Each entry of a ``status_many`` answer: a state, or the error it stands for."""
    check(status_code, body)
    return [
        error_from_body(entry.status_code, entry.model_dump())
        if isinstance(entry, ItemError)
        else entry
        for entry in StatusManyAnswer.model_validate_json(body).tasks
    ]


def decode_page(status_code: int, body: bytes) -> tuple[list[TaskState], str | None]:
    """The tasks and the next cursor of a listing page."""
    check(status_code, body)
    page = TaskPage.model_validate_json(body)
    return page.tasks, page.next_cursor


def decode_queued(status_code: int, body: bytes) -> list[str]:
    """The task ids of a ``submit_many`` answer, in input order."""
    check(status_code, body)
    return [task.task_id for task in SubmitManyAnswer.model_validate_json(body).tasks]


def decode_cancelled(status_code: int, body: bytes) -> int:
    """How many tasks a ``cancel_many`` answer says it cancelled."""
    check(status_code, body)
    return CancelManyAnswer.model_validate_json(body).cancelled


def decode_deleted(status_code: int, body: bytes) -> DeleteManyAnswer:
    """A ``delete_many`` answer: how many tasks were deleted and skipped."""
    check(status_code, body)
    return DeleteManyAnswer.model_validate_json(body)


def parse_schema(status_code: int, body: bytes) -> dict[str, RemoteEndpoint]:
    """The endpoints of a ``/schema.json`` response."""
    check(status_code, body)
    routes = json.loads(body)["routes"]
    return {r["name"]: RemoteEndpoint.from_route(r) for r in routes}


def lookup(endpoints: dict[str, RemoteEndpoint], name: str, task: bool = False) -> RemoteEndpoint:
    """The endpoint ``name``; with ``task``, it must be a task endpoint."""
    endpoint = endpoints.get(name)
    if endpoint is None:
        known = ", ".join(sorted(endpoints)) or "none"
        raise EndpointNotFoundError(f"no endpoint named {name!r} (endpoints: {known})")
    if task and not endpoint.is_task:
        raise EndpointNotFoundError(f"{name!r} is not a task endpoint: call it directly")
    return endpoint


def check(status_code: int, body: bytes) -> None:
    """Raise the raytask error an error response stands for."""
    if status_code < 400:
        return
    try:
        decoded: Any = json.loads(body)
    except ValueError:
        decoded = body.decode(errors="replace")
    raise error_from_body(status_code, decoded)


def decode_result(status_code: int, content_type: str, body: bytes) -> Any:
    """A result body as JSON, text or bytes, by its content type."""
    check(status_code, body)
    if content_type.startswith("application/json"):
        return json.loads(body)
    if content_type.startswith("text/"):
        return body.decode()
    return body


def as_type_of(value: Any, as_type: Any) -> Any:
    """``value`` validated into ``as_type`` (with pydantic), or unchanged when it is None."""
    if as_type is None:
        return value
    return TypeAdapter(as_type).validate_python(value)


def decode_state(status_code: int, body: bytes) -> TaskState:
    """The :class:`TaskState` of a submit, status, cancel or retry answer."""
    check(status_code, body)
    return TaskState.model_validate_json(body)


def retry_delay(
    status_code: int, retry_after: str | None, retries_done: int, max_retries: int
) -> float | None:
    """Seconds to wait before sending a request again, or None to take the answer.

    A 429 (queue full) or 503 (task manager unreachable) means nothing was done: wait
    what its ``Retry-After`` says (1 s when it says nothing usable, at most 60 s), up to
    ``max_retries`` times.
    """
    if status_code not in RETRYABLE_STATUS or retries_done >= max_retries:
        return None
    try:
        delay = float(retry_after) if retry_after is not None else 1.0
    except ValueError:  # an HTTP date: rare, and not worth parsing
        delay = 1.0
    return min(max(delay, 0.0), 60.0) if delay == delay else 1.0
