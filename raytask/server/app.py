"""``raytask.app``: turn bound model deployments into a Serve application with task routes."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from ..core.config import AppConfig
from ..core.endpoint import discover
from ..core.errors import ConfigError
from ..core.names import INGRESS_NAME
from . import compat
from .batch import with_runner
from .ingress import Ingress


def app(
    *models: Application,
    config: AppConfig | dict[str, Any] | None = None,
    **settings: Any,
) -> Application:
    """Build a Serve application serving the raytask routes of ``models``.

    The application's ingress deployment (named ``RaytaskIngress``) serves the HTTP routes
    and creates the app's detached task manager actor on start; each model deployment
    keeps its own options (``num_gpus``, autoscaling, ...) and is what runs the tasks.

    Args:
        models: bound deployments (``MyModel.bind(...)``) whose class has
            ``@raytask.task`` / ``@raytask.api`` methods.
        config: an :class:`AppConfig`, or a dict of its fields (YAML ``args``).
        settings: single :class:`AppConfig` fields, overriding ``config``.

    Returns:
        An application for ``serve.run(...)`` or a YAML ``import_path``.

    Raises:
        ConfigError: no models, a model without marked methods, a function deployment,
            two endpoints with one name, or an invalid setting.

    Example::

        app = raytask.app(ImageGeneration.bind(), max_queue_size=1000)
    """
    cfg = AppConfig.parse(config, **settings)
    if not models:
        raise ConfigError("raytask.app needs at least one bound deployment")
    wrapped, described, sizes, names = [], [], {}, set()
    for model in models:
        deployment, cls = _model(model, cfg, names)
        options: dict[str, Any] = {"func_or_class": with_runner(cls)}
        if "graceful_shutdown_wait_loop_s" not in _configured(deployment):
            # A stopping replica checks for requests still running every 0.5 s, not 2 s:
            # a local stop takes seconds (the user's own setting, in code or YAML, wins).
            options["graceful_shutdown_wait_loop_s"] = 0.5
        runnable = deployment.options(**options)
        wrapped.append(runnable.bind(*deployment.init_args, **deployment.init_kwargs))
        described.append((deployment.name, cls))
        # (max_ongoing_requests, num_gpus): dispatch limits, and gpu_s in usage
        gpus = float((deployment.ray_actor_options or {}).get("num_gpus") or 0.0)
        sizes[deployment.name] = (deployment.max_ongoing_requests, gpus)
    ingress = serve.deployment(
        Ingress,
        name=INGRESS_NAME,
        num_replicas=cfg.ingress_num_replicas,
        max_ongoing_requests=cfg.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus},
        # Its requests are short (long-polls end within MAX_WAIT_S and clients retry 503s):
        # on a stop, check for them every 0.5 s rather than Serve's 2 s.
        graceful_shutdown_wait_loop_s=0.5,
        # raytask writes its own access lines, with the endpoint and the task id, when
        # `access_log` is on (Serve's show neither: "POST /{name}/submit 200").
        logging_config={"enable_access_log": False},
    )
    return ingress.bind(described, sizes, cfg, *wrapped)


def _model(model: Application, cfg: AppConfig, names: set[str]) -> tuple[Any, type]:
    """A model's deployment and class, checked: a class with marked methods whose endpoint
    names are not in ``names`` yet (they are added)."""
    if not isinstance(model, Application):
        raise ConfigError(f"expected a bound deployment (Model.bind()), got {model!r}")
    deployment = compat.bound_deployment(model)
    cls = deployment.func_or_class
    if not isinstance(cls, type):
        raise ConfigError(f"deployment {deployment.name} must be a class to have task methods")
    endpoints = discover(cls, deployment.name, cfg.task_defaults)
    if not endpoints:
        raise ConfigError(f"{cls.__name__} has no method marked with @raytask.task or @raytask.api")
    for endpoint in endpoints:
        if endpoint.name in names:
            raise ConfigError(f"two endpoints are named {endpoint.name!r}")
        names.add(endpoint.name)
    return deployment, cls


def _configured(deployment: Any) -> set[str]:
    """The options the user set on ``deployment`` (Serve keeps their names)."""
    config = getattr(deployment, "_deployment_config", None)
    return set(getattr(config, "user_configured_option_names", ()) or ())
