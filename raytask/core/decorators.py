"""``@raytask.task`` and ``@raytask.api``: they only mark a method.

The decorators attach a small frozen :class:`EndpointSpec` to the function and return
the function itself, so the method behaves exactly as before. Discovery happens once, when
:func:`raytask.app` builds the application.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from pydantic import ValidationError

from .config import TaskOptions
from .errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTR = "__raytask_spec__"


@dataclass(frozen=True)
class EndpointSpec:
    """What a decorator recorded about one method.

    Attributes:
        kind: ``"task"`` for an async task endpoint, ``"api"`` for a synchronous one.
        name: the route name (defaults to the method name).
        options: task options set in the decorator (only for tasks).
    """

    kind: Literal["task", "api"]
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _mark(func: F, spec: EndpointSpec) -> F:
    if not callable(func):
        raise ConfigError(f"@raytask.{spec.kind} must decorate a method, got {func!r}")
    setattr(func, SPEC_ATTR, spec)
    return func


@overload
def task(func: F) -> F: ...
@overload
def task(
    func: None = None,
    *,
    name: str | None = None,
    ttl_s: float | None = None,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
    retry_exceptions: bool | None = None,
    rerun_lost_results: bool | None = None,
    priority: int | None = None,
    max_queue_s: float | None = None,
    webhook_url: str | None = None,
    webhook_events: str | list[str] | None = None,
) -> Callable[[F], F]: ...


def task(
    func: F | None = None,
    *,
    name: str | None = None,
    ttl_s: float | None = None,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
    retry_exceptions: bool | None = None,
    rerun_lost_results: bool | None = None,
    priority: int | None = None,
    max_queue_s: float | None = None,
    webhook_url: str | None = None,
    webhook_events: str | list[str] | None = None,
) -> F | Callable[[F], F]:
    """Mark a deployment method as an async task endpoint.

    The method gets ``POST /NAME/submit``, ``GET /NAME/status``, ``GET /NAME/get``,
    ``cancel`` and ``retry`` routes, plus the synchronous ``POST /NAME``.

    Args:
        func: the method (when used bare, ``@raytask.task``).
        name: route name; defaults to the method's name.
        ttl_s: seconds a finished result is kept (default: the app's, 24 h).
        timeout_s: seconds one attempt may run (default: the app's, 1 h).
        max_attempts: attempts when the replica dies or the attempt times out.
        retry_exceptions: whether an exception from the method is retried too.
        rerun_lost_results: whether a success whose result was lost with a task-manager
            restart runs again (default) or ends in ``failure`` (for methods with side
            effects that must not repeat).
        priority: the default priority of its tasks, -10..10 (higher runs first; 0).
        max_queue_s: the default queue deadline: a task not started this many seconds
            after its submit ends ``cancelled`` with an ``expired:`` error (default: none).
        webhook_url: where its tasks' events are POSTed by default (signed webhooks).
        webhook_events: which events (default: ``completed``, ``failed``, ``cancelled``).

    Returns the method itself, marked; raises ``ConfigError`` for an option out of range.

    Example::

        @serve.deployment
        class Images:
            @raytask.task(ttl_s=3600)
            def generate(self, prompt: str) -> bytes: ...
    """
    options = _checked(
        ttl_s=ttl_s,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        retry_exceptions=retry_exceptions,
        rerun_lost_results=rerun_lost_results,
        priority=priority,
        max_queue_s=max_queue_s,
        webhook_url=webhook_url,
        webhook_events=webhook_events,
    )
    spec = EndpointSpec(kind="task", name=name, options=options)
    if func is not None:
        return _mark(func, spec)
    return lambda f: _mark(f, spec)


def _checked(**options: Any) -> dict[str, Any]:
    """The task options given (not None), checked as :class:`TaskOptions` checks them."""
    given = {key: value for key, value in options.items() if value is not None}
    try:
        TaskOptions(**given)
    except ValidationError as exc:
        raise ConfigError(f"invalid @raytask.task options: {exc}") from None
    return given


@overload
def api(func: F) -> F: ...
@overload
def api(func: None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def api(func: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark a deployment method as a plain synchronous endpoint, ``POST /NAME``.

    Args:
        func: the method (when used bare, ``@raytask.api``).
        name: route name; defaults to the method's name.

    Returns:
        The method itself, marked.

    Example::

        @raytask.api
        def describe(self, prompt: str) -> str: ...
    """
    spec = EndpointSpec(kind="api", name=name)
    if func is not None:
        return _mark(func, spec)
    return lambda f: _mark(f, spec)


def get_spec(func: Any) -> EndpointSpec | None:
    """The spec a raytask decorator attached to ``func``, if any."""
    return getattr(func, SPEC_ATTR, None)
