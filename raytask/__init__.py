"""raytask: BentoML-style async task endpoints on Ray Serve.

Mark a method of a Serve deployment with ``@raytask.task`` and build the app with
``raytask.app(Model.bind())``: it gets ``submit / status / get / cancel / retry`` routes,
a detached task manager actor, and results kept in Ray's object store for a TTL.
"""

from .app import app
from .config import AppConfig, SubmitOptions, TaskOptions
from .decorators import api, task
from .errors import (
    ConfigError,
    EndpointNotFoundError,
    HTTPError,
    InvalidInputError,
    InvalidTransitionError,
    MalformedRequestError,
    PayloadTooLargeError,
    QueueFullError,
    RaytaskError,
    TaskCancelledError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotCompletedError,
    TaskNotFoundError,
)
from .status import TaskStatus

__version__ = "0.1.0"

__all__ = [
    "AppConfig",
    "ConfigError",
    "EndpointNotFoundError",
    "HTTPError",
    "InvalidInputError",
    "InvalidTransitionError",
    "MalformedRequestError",
    "PayloadTooLargeError",
    "QueueFullError",
    "RaytaskError",
    "SubmitOptions",
    "TaskCancelledError",
    "TaskConflictError",
    "TaskExpiredError",
    "TaskFailedError",
    "TaskNotCompletedError",
    "TaskNotFoundError",
    "TaskOptions",
    "TaskStatus",
    "__version__",
    "api",
    "app",
    "task",
]
