"""The one exception tree of raytask, shared by the server and the clients.

::

    RaytaskError
    ├── InvalidTransitionError            a state change the state machine forbids
    ├── ConfigError                       a bad decorator option or app config
    └── HTTPError                         anything that maps to an HTTP status
        ├── MalformedRequestError   400   not JSON, not an object, bad task id
        ├── TaskNotCompletedError   400   get() on a pending / in-progress task
        ├── TaskNotFoundError       404   unknown task id
        ├── EndpointNotFoundError   404   unknown route or endpoint
        ├── TaskConflictError       409   cancel of a finished task, retry of an unfinished one
        │   └── TaskCancelledError  409   get() on a cancelled task
        ├── TaskExpiredError        410   the result outlived its TTL
        ├── PayloadTooLargeError    413   request body over ``max_request_bytes``
        ├── InvalidInputError       422   input failed validation (``detail`` lists why)
        ├── QueueFullError          429   ``max_queue_size`` reached (``retry_after_s``)
        └── TaskFailedError         500   the task raised or was lost for good

Every constructor passes all its arguments to ``super().__init__`` so that the errors
pickle across Ray processes, and :func:`error_from_body` turns an HTTP error body back
into the same class on the client side.
"""

from __future__ import annotations

from typing import Any


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


class HTTPError(RaytaskError):
    """An error with an HTTP status code; its JSON body is ``{"error": message}``.

    Args:
        message: human-readable reason, sent as the body's ``error`` field.
        detail: optional JSON-able detail (for example pydantic's validation errors).
    """

    status_code: int = 500

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message

    def to_body(self) -> dict[str, Any]:
        """The JSON error body the HTTP layer sends for this error."""
        body: dict[str, Any] = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class MalformedRequestError(HTTPError):
    """The request is not well formed: not JSON, not an object, a bad task id."""

    status_code = 400


class TaskNotCompletedError(HTTPError):
    """The task has no result yet (it is pending or in progress)."""

    status_code = 400


class TaskNotFoundError(HTTPError):
    """No task has this id."""

    status_code = 404


class EndpointNotFoundError(HTTPError):
    """No route or endpoint has this name."""

    status_code = 404


class TaskConflictError(HTTPError):
    """The task is in a state that does not allow the operation."""

    status_code = 409


class TaskCancelledError(TaskConflictError):
    """The task was cancelled, so it has no result."""


class TaskExpiredError(HTTPError):
    """The task finished longer than its TTL ago; its result is gone."""

    status_code = 410


class PayloadTooLargeError(HTTPError):
    """The request body is larger than the configured limit."""

    status_code = 413


class InvalidInputError(HTTPError):
    """The input does not match the endpoint's signature."""

    status_code = 422


class QueueFullError(HTTPError):
    """The task queue is full; try again after ``retry_after_s`` seconds."""

    status_code = 429

    def __init__(self, message: str, detail: Any = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message, detail)
        self.args = (message, detail, retry_after_s)
        self.retry_after_s = retry_after_s


class TaskFailedError(HTTPError):
    """The task raised an exception, timed out or lost its replica too often."""

    status_code = 500


_BY_STATUS: dict[int, type[HTTPError]] = {
    400: MalformedRequestError,
    404: TaskNotFoundError,
    409: TaskConflictError,
    410: TaskExpiredError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    429: QueueFullError,
    500: TaskFailedError,
}


def error_from_body(status_code: int, body: Any) -> HTTPError:
    """Rebuild the raytask error for an HTTP error response.

    Args:
        status_code: the response's status code.
        body: the decoded JSON body (``{"error": ..., "detail": ...}``), or any text.

    Returns:
        An instance of the matching :class:`HTTPError` subclass (``HTTPError`` itself
        for codes raytask does not use).
    """
    if isinstance(body, dict) and "error" in body:
        message, detail = str(body["error"]), body.get("detail")
    else:
        message, detail = str(body), None
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
