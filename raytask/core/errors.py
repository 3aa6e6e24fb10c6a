"""The one exception tree of raytask, shared by the server and the clients.

::

    RaytaskError
    ├── InvalidTransitionError            a state change the state machine forbids
    ├── ConfigError                       a bad decorator option or app config
    ├── ResultEncodingError               a result HTTP cannot carry (its task fails)
    └── HTTPError                         anything that maps to an HTTP status
        ├── MalformedRequestError   400   not JSON, not an object, bad task id
        ├── UnauthorizedError       401   no API token, or not one of the app's
        ├── OriginRefusedError      403   a state change from a foreign web page's Origin
        ├── ForbiddenError          403   an app-wide route a tenant's token may not read
        ├── TaskNotCompletedError   400   get() on a pending / in-progress task
        ├── TaskNotFoundError       404   unknown task id
        ├── EndpointNotFoundError   404   unknown endpoint name
        │   └── RouteNotFoundError  404   a request that matches no route
        ├── MethodNotAllowedError   405   a known route, another method (``Allow`` says which)
        ├── TaskConflictError       409   cancel of a finished task, retry of an unfinished one
        │   └── TaskCancelledError  409   get() on a cancelled task
        ├── TaskExpiredError        410   the result outlived its TTL
        ├── PayloadTooLargeError    413   request body over ``max_request_bytes``
        ├── URLTooLongError         414   path and query over ``max_url_bytes``
        ├── UnsupportedMediaTypeError 415 a body that is not JSON
        ├── InvalidInputError       422   input failed validation (``detail`` lists why)
        ├── QueueFullError          429   ``max_queue_size`` reached (``retry_after_s``)
        │   ├── TenantQueueFullError 429  the tenant's ``max_pending`` reached
        │   └── RateLimitedError    429   the tenant's ``submits_per_s`` used up
        ├── HeadersTooLargeError    431   headers over ``max_header_bytes`` / ``max_headers``
        ├── TaskFailedError         500   the task raised or was lost for good
        └── ServiceUnavailableError 503   the task manager cannot be reached (``retry_after_s``)
            └── ServerUnreachableError    a client found no server at its URL (no HTTP status)
    WaitTimeoutError (also a TimeoutError) a client-side wait ran out of time
    StreamReset                         a streamed task's attempt was lost; it runs again
    WebhookVerificationError            a received webhook does not check out

Every constructor passes all its arguments to ``super().__init__`` so that the errors
pickle across Ray processes. Each HTTP error has a machine-readable ``code`` that its JSON
body carries next to ``error``; :func:`error_from_body` turns a body back into the same
class on the client side (by ``code``, or by status code for servers that send none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RaytaskError(Exception):
    """Base class of every error raytask raises."""


class InvalidTransitionError(RaytaskError):
    """A task state change that the transition table does not allow."""

    def __init__(self, task_id: str, current: str, target: str) -> None:
        super().__init__(task_id, current, target)
        self.task_id, self.current, self.target = task_id, current, target

    def __str__(self) -> str:
        return f"task {self.task_id} cannot move from {self.current} to {self.target}"


class ConfigError(RaytaskError):
    """A decorator option or an app-wide setting is invalid."""


class ResultEncodingError(RaytaskError):
    """A method returned a value with no HTTP body (a lone surrogate, an object JSON cannot
    carry): the replica reports it as the task's failure."""


class HTTPError(RaytaskError):
    """An error with an HTTP status code; its JSON body is ``{"error": message}``.

    Args:
        message: human-readable reason, sent as the body's ``error`` field.
        detail: optional JSON-able detail (for example pydantic's validation errors).
    """

    status_code: int = 500
    code: str = "error"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message

    def to_body(self) -> dict[str, Any]:
        """The JSON error body the HTTP layer sends for this error."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class MalformedRequestError(HTTPError):
    """The request is not well formed: not JSON, not an object, a bad task id."""

    status_code = 400
    code = "malformed_request"


class UnauthorizedError(HTTPError):
    """The app requires an API token (``Authorization: Bearer <token>``) and the request
    carried none, or one it does not know."""

    status_code = 401
    code = "unauthorized"


class OriginRefusedError(HTTPError):
    """A state-changing request from a web page of another origin (its ``Origin`` header
    is neither the app's own nor one of ``cors_allow_origins``): a cross-site request
    forgery, unless the app lists that origin."""

    status_code = 403
    code = "origin_refused"


class TaskNotCompletedError(HTTPError):
    """The task has no result yet (it is pending or in progress)."""

    status_code = 400
    code = "task_not_completed"


class TaskNotFoundError(HTTPError):
    """No task has this id."""

    status_code = 404
    code = "task_not_found"


class ForbiddenError(HTTPError):
    """With token isolation, a tenant's token asked for what only ``admin_tokens`` read
    (``/queue``, ``/metrics``, another tenant's usage)."""

    status_code = 403
    code = "forbidden"


class NotFoundError(HTTPError):
    """No file or batch job has this id (or it is another token's, under isolation)."""

    status_code = 404
    code = "not_found"


class EndpointNotFoundError(HTTPError):
    """No route or endpoint has this name."""

    status_code = 404
    code = "endpoint_not_found"


class RouteNotFoundError(EndpointNotFoundError):
    """No route of the app matches the request; ``detail`` lists the app's endpoints and
    the route prefixes of the other raytask apps on the same Serve instance."""

    code = "route_not_found"


class MethodNotAllowedError(HTTPError):
    """The route exists, but not for this HTTP method; ``allow`` lists the methods it takes
    (sent as the ``Allow`` header)."""

    status_code = 405
    code = "method_not_allowed"

    def __init__(self, message: str, detail: Any = None, allow: tuple[str, ...] = ()) -> None:
        super().__init__(message, detail)
        self.args = (message, detail, allow)
        self.allow = allow


class TaskConflictError(HTTPError):
    """The task is in a state that does not allow the operation."""

    status_code = 409
    code = "task_conflict"


class TaskCancelledError(TaskConflictError):
    """The task was cancelled, so it has no result."""

    code = "task_cancelled"


class TaskExpiredError(HTTPError):
    """The task finished longer than its TTL ago; its result is gone. ``owner`` is the
    owner the task had (token isolation answers other tenants 404, as for a live one)."""

    status_code = 410
    code = "task_expired"

    def __init__(self, message: str, detail: Any = None, owner: str | None = None) -> None:
        super().__init__(message, detail)
        self.args = (message, detail, owner)
        self.owner = owner


class PayloadTooLargeError(HTTPError):
    """The request body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


class URLTooLongError(HTTPError):
    """The request's path and query string are longer than the configured limit."""

    status_code = 414
    code = "url_too_long"


class UnsupportedMediaTypeError(HTTPError):
    """A ``POST``/``PUT`` body that does not say ``Content-Type: application/json``."""

    status_code = 415
    code = "unsupported_media_type"


class HeadersTooLargeError(HTTPError):
    """The request has more header bytes, or more headers, than the configured limits."""

    status_code = 431
    code = "headers_too_large"


class InvalidInputError(HTTPError):
    """The input does not match the endpoint's signature."""

    status_code = 422
    code = "invalid_input"


class QueueFullError(HTTPError):
    """The task queue is full; try again after ``retry_after_s`` seconds."""

    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, detail: Any = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message, detail)
        self.args = (message, detail, retry_after_s)
        self.retry_after_s = retry_after_s


class TenantQueueFullError(QueueFullError):
    """The tenant has its ``max_pending`` tasks queued; others may still submit."""

    code = "tenant_queue_full"


class RateLimitedError(QueueFullError):
    """The tenant submits faster than its ``submits_per_s``; ``retry_after_s`` says when
    its next submit is taken."""

    code = "rate_limited"


class TaskFailedError(HTTPError):
    """The task raised an exception, timed out or lost its replica too often."""

    status_code = 500
    code = "task_failed"


class ServiceUnavailableError(HTTPError):
    """The task manager cannot be reached now; try again after ``retry_after_s`` seconds."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, detail: Any = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message, detail)
        self.args = (message, detail, retry_after_s)
        self.retry_after_s = retry_after_s


class ServerUnreachableError(ServiceUnavailableError):
    """A client could not reach the server at ``url`` (nothing listens there, the name
    does not resolve, the connection broke): raised by the HTTP clients instead of
    httpx's transport errors, naming the URL."""

    code = "unreachable"

    def __init__(
        self, message: str, detail: Any = None, retry_after_s: float = 1.0, url: str = ""
    ) -> None:
        super().__init__(message, detail, retry_after_s)
        self.args = (message, detail, retry_after_s, url)
        self.url = url


class StreamReset(RaytaskError):
    """A streamed task lost its attempt and runs again (``attempt``: the new one's number):
    the chunks read so far are void. ``task.stream()`` again reads the new attempt's."""

    def __init__(self, message: str, attempt: int = 0) -> None:
        super().__init__(message, attempt)
        self.attempt = attempt

    def __str__(self) -> str:
        return str(self.args[0])


class WebhookVerificationError(RaytaskError):
    """A received webhook's signature, timestamp or headers do not check out
    (:func:`raytask.verify_webhook`)."""


class WaitTimeoutError(RaytaskError, TimeoutError):
    """A client-side wait (``task.get(timeout=...)``, ``client.wait``) ran out of time."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        super().__init__(message, task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return str(self.args[0])


def validation_reasons(errors: list[Any], root: str, limit: int | None = 5) -> str:
    """Pydantic's errors (taken without their input values, so no secret is repeated) as
    one line, ``loc: msg; ...``, the first ``limit`` of them; ``root`` names the whole
    value (an error with an empty location)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or root}: {e['msg']}" for e in errors[:limit])


_HTTP_ERRORS: tuple[type[HTTPError], ...] = (
    MalformedRequestError,
    TaskNotCompletedError,
    UnauthorizedError,
    OriginRefusedError,
    ForbiddenError,
    TaskNotFoundError,
    NotFoundError,
    EndpointNotFoundError,
    RouteNotFoundError,
    MethodNotAllowedError,
    TaskConflictError,
    TaskCancelledError,
    TaskExpiredError,
    PayloadTooLargeError,
    URLTooLongError,
    UnsupportedMediaTypeError,
    InvalidInputError,
    QueueFullError,
    TenantQueueFullError,
    RateLimitedError,
    HeadersTooLargeError,
    TaskFailedError,
    ServiceUnavailableError,
)
_BY_CODE: dict[str, type[HTTPError]] = {cls.code: cls for cls in _HTTP_ERRORS}

_BY_STATUS: dict[int, type[HTTPError]] = {
    400: MalformedRequestError,
    401: UnauthorizedError,
    403: OriginRefusedError,
    404: TaskNotFoundError,
    405: MethodNotAllowedError,
    409: TaskConflictError,
    410: TaskExpiredError,
    413: PayloadTooLargeError,
    414: URLTooLongError,
    415: UnsupportedMediaTypeError,
    422: InvalidInputError,
    429: QueueFullError,
    431: HeadersTooLargeError,
    500: TaskFailedError,
    503: ServiceUnavailableError,
}


def unwrap(answer: T | HTTPError) -> T:
    """``answer``, or raise it: the task manager returns its errors as values."""
    if isinstance(answer, HTTPError):
        raise answer
    return answer


def each(items: list[Any], answer: Callable[[Any], Any]) -> list[Any]:
    """``answer(item)`` for each item, an :class:`HTTPError` standing in for its answer."""
    answers: list[Any] = []
    for item in items:
        try:
            answers.append(answer(item))
        except HTTPError as exc:
            answers.append(exc)
    return answers


def error_from_body(status_code: int, body: Any) -> HTTPError:
    """Rebuild the raytask error for an HTTP error response.

    Args:
        status_code: the response's status code.
        body: the decoded JSON body (``{"error": ..., "detail": ...}``), or any text.

    Returns:
        An instance of the matching :class:`HTTPError` subclass (``HTTPError`` itself
        for codes raytask does not use).
    """
    code = None
    if isinstance(body, dict) and "error" in body:
        message, detail, code = str(body["error"]), body.get("detail"), body.get("code")
    else:
        message, detail = str(body), None
    by_code = _BY_CODE.get(code) if isinstance(code, str) else None
    if by_code is not None and by_code.status_code == status_code:
        return by_code(message, detail)
    cls = _BY_STATUS.get(status_code, HTTPError)
    if status_code == 400 and "not completed" in message:
        cls = TaskNotCompletedError
    elif status_code == 409 and "cancelled" in message:
        cls = TaskCancelledError
    elif status_code == 404 and "endpoint" in message:
        cls = EndpointNotFoundError
    error = cls(message, detail)
    if cls is HTTPError:
        error.status_code = status_code
    return error
