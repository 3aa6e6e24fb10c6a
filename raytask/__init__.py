"""raytask: BentoML-style async task endpoints on Ray Serve.

Mark a method of a Serve deployment with ``@raytask.task`` and build the app with
``raytask.app(Model.bind())``: it gets ``submit / status / get / cancel / retry`` routes,
a detached task manager actor, and results kept in Ray's object store for a TTL.
"""

from .app import app
from .autoscaling import QueueDepthPolicy
from .cluster_client import AsyncClusterTask, ClusterClient, ClusterTask, get_client
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
from .handles import AsyncTask, Task
from .http_client import AsyncEndpoint, AsyncHTTPClient, SyncEndpoint, SyncHTTPClient
from .protocol import WaitTimeoutError
from .status import TaskStatus

__version__ = "0.1.0"

__all__ = [
    "AppConfig",
    "AsyncClusterTask",
    "AsyncEndpoint",
    "AsyncHTTPClient",
    "AsyncTask",
    "ClusterClient",
    "ClusterTask",
    "ConfigError",
    "EndpointNotFoundError",
    "HTTPError",
    "InvalidInputError",
    "InvalidTransitionError",
    "MalformedRequestError",
    "PayloadTooLargeError",
    "QueueDepthPolicy",
    "QueueFullError",
    "RaytaskError",
    "SubmitOptions",
    "SyncEndpoint",
    "SyncHTTPClient",
    "Task",
    "TaskCancelledError",
    "TaskConflictError",
    "TaskExpiredError",
    "TaskFailedError",
    "TaskNotCompletedError",
    "TaskNotFoundError",
    "TaskOptions",
    "TaskStatus",
    "WaitTimeoutError",
    "__version__",
    "api",
    "app",
    "get_client",
    "task",
]
