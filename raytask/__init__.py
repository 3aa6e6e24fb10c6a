"""raytask: BentoML-style async task endpoints on Ray Serve.

Mark a method of a Serve deployment with ``@raytask.task`` and build the app with
``raytask.app(Model.bind())``: it gets ``submit / status / get / cancel / retry`` routes,
a detached task manager actor, and results kept in Ray's object store for a TTL.

The package has three layers, one per place the code runs (README, "Layout"):

- :mod:`raytask.core`: the pure core (task table, dispatcher, states, errors, config);
  no Ray and no HTTP imports.
- :mod:`raytask.server`: what runs in the cluster (app builder, ingress, routes, task
  manager actor, replica runner, autoscaling policy, the one Serve-compat module).
- :mod:`raytask.client`: what runs in the user's process (the HTTP clients, task handles,
  the in-cluster client).

``pip install raytask`` installs the HTTP clients without Ray; the names that need Ray
(``app``, ``get_client``, ``QueueDepthPolicy``...) are imported on first use and, without
``raytask[serve]`` installed, raise an ``ImportError`` that names the extra.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .client.endpoints import AsyncEndpoint, SyncEndpoint
from .client.handles import AsyncTask, Task
from .client.http import AsyncHTTPClient, SyncHTTPClient
from .client.jobs import AsyncJob, Job, JobState
from .core.config import AppConfig, SubmitOptions, TaskOptions
from .core.decorators import api, task
from .core.errors import (
    ConfigError,
    EndpointNotFoundError,
    HeadersTooLargeError,
    HTTPError,
    InvalidInputError,
    InvalidTransitionError,
    MalformedRequestError,
    MethodNotAllowedError,
    NotFoundError,
    OriginRefusedError,
    PayloadTooLargeError,
    QueueFullError,
    RaytaskError,
    ResultEncodingError,
    RouteNotFoundError,
    ServerUnreachableError,
    ServiceUnavailableError,
    StreamReset,
    TaskCancelledError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotCompletedError,
    TaskNotFoundError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    URLTooLongError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from .core.progress import report_progress
from .core.state import Progress, TaskState
from .core.status import TaskStatus
from .core.webhooks import verify_webhook

if _TYPE_CHECKING:
    from .client.cluster import (
        AsyncClusterClient,
        AsyncClusterTask,
        ClusterClient,
        ClusterTask,
        get_async_client,
        get_client,
    )
    from .server.app import app
    from .server.autoscaling import QueueDepthPolicy

__version__ = "0.1.0"

# Names that need Ray: imported on first use, so a client-only install can `import raytask`.
_NEEDS_RAY: dict[str, str] = {
    "app": "raytask.server.app",
    "QueueDepthPolicy": "raytask.server.autoscaling",
    "AsyncClusterClient": "raytask.client.cluster",
    "AsyncClusterTask": "raytask.client.cluster",
    "ClusterClient": "raytask.client.cluster",
    "ClusterTask": "raytask.client.cluster",
    "get_async_client": "raytask.client.cluster",
    "get_client": "raytask.client.cluster",
}

_SERVE_EXTRA_HINT = 'install the server side with: pip install "raytask[serve]"'


def __getattr__(name: str) -> _Any:
    module_name = _NEEDS_RAY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'raytask' has no attribute {name!r}")
    try:
        module = _importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("ray", "starlette"):
            raise
        raise ImportError(
            f"raytask.{name} needs Ray Serve ({exc.name} is missing): {_SERVE_EXTRA_HINT}",
            name=exc.name,
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "AppConfig",
    "AsyncClusterClient",
    "AsyncClusterTask",
    "AsyncEndpoint",
    "AsyncHTTPClient",
    "AsyncJob",
    "AsyncTask",
    "ClusterClient",
    "ClusterTask",
    "ConfigError",
    "EndpointNotFoundError",
    "HTTPError",
    "HeadersTooLargeError",
    "InvalidInputError",
    "InvalidTransitionError",
    "Job",
    "JobState",
    "MalformedRequestError",
    "MethodNotAllowedError",
    "NotFoundError",
    "OriginRefusedError",
    "PayloadTooLargeError",
    "Progress",
    "QueueDepthPolicy",
    "QueueFullError",
    "RaytaskError",
    "ResultEncodingError",
    "RouteNotFoundError",
    "ServerUnreachableError",
    "ServiceUnavailableError",
    "StreamReset",
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
    "TaskState",
    "TaskStatus",
    "URLTooLongError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "__version__",
    "api",
    "app",
    "get_async_client",
    "get_client",
    "report_progress",
    "task",
    "verify_webhook",
]
