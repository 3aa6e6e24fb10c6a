"""The replica side of a task: how a model replica runs one attempt.

:func:`with_runner` subclasses the user's deployment class with one extra method,
``__raytask_run__``, which the task manager calls through a ``DeploymentHandle``. It
returns the method's value, or a small :class:`AttemptFailed` when the method raised.
The value lands in Ray's object store, owned by the manager (the caller).

The manager tells the two apart without deserialising a large result: a failure is always
small (its message is capped), so an object too large to be inlined must be a value,
and a small object is cheap to read.

(A streaming call yielding a verdict and then the value would be tidier, but Ray maps
each streamed object into the caller's memory, so the manager's RSS would grow by every
result's size; a plain return does not touch the caller's memory.)
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.endpoint import Endpoint, check_result, discover
from ..core.progress import ProgressReporter

RUN_METHOD = "__raytask_run__"
MAX_ERROR_CHARS = 8_192


@dataclass(frozen=True)
class AttemptFailed:
    """What ``__raytask_run__`` returns when the method raised: ``"ExcType: message"``."""

    error: str


class _Interrupted(BaseException):
    """Raised inside a sync method's thread when its task is cancelled."""


def _interrupt(thread: threading.Thread) -> None:
    # Lands at the thread's next bytecode boundary: a long C call (a forward pass,
    # time.sleep) finishes first, then the method stops.
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(_Interrupted)
        )


async def call_in_thread(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run a sync method in its own thread; cancelling the await interrupts the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            outcome(value)

    def run() -> None:
        try:
            result = func(**kwargs)
        except _Interrupted:
            return
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, result)

    # The thread runs in a copy of this context: raytask.report_progress finds its reporter.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(run,), name=f"raytask-{func.__name__}", daemon=True
    )
    thread.start()
    try:
        return await future
    except asyncio.CancelledError:
        _interrupt(thread)
        raise


_ENDPOINTS: dict[type, dict[str, Endpoint]] = {}


def _endpoints_of(cls: type) -> dict[str, Endpoint]:
    if cls not in _ENDPOINTS:
        _ENDPOINTS[cls] = {e.method: e for e in discover(cls, deployment="")}
    return _ENDPOINTS[cls]


async def run_attempt(
    instance: Any,
    method: str,
    kwargs: dict[str, Any],
    reporter: ProgressReporter | None = None,
) -> Any:
    """Run ``instance.method(**kwargs)`` as one task attempt; failures become values.

    With a ``reporter``, :func:`raytask.report_progress` inside the method reaches it.
    """
    token = reporter.activate() if reporter is not None else None
    try:
        endpoint = _endpoints_of(type(instance))[method]
        call_kwargs = endpoint.to_call_kwargs(kwargs)
        bound = getattr(instance, method)
        if endpoint.is_async:
            value = await bound(**call_kwargs)
        else:
            value = await call_in_thread(bound, call_kwargs)
        # A value HTTP cannot carry fails here, with its reason, rather than as a
        # "success" whose every get answers 500.
        check_result(value)
        return value
    except Exception as exc:
        return AttemptFailed(f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    finally:
        if reporter is not None:
            reporter.close()
            reporter.deactivate(token)


_MANAGERS: dict[str, Any] = {}


def _progress_sender(app_name: str, task_id: str, attempt_no: int) -> Callable[..., None]:
    """Send one attempt's progress reports to its app's task manager (fire and forget)."""
    import ray

    from ..core.names import NAMESPACE, manager_name

    def send(fraction: float | None, message: str | None) -> None:
        manager = _MANAGERS.get(app_name)
        if manager is None:
            manager = _MANAGERS[app_name] = ray.get_actor(
                manager_name(app_name), namespace=NAMESPACE
            )
        manager.report_progress.remote(task_id, attempt_no, fraction, message)

    return send


def with_runner(cls: type) -> type:
    """A subclass of the deployment class ``cls`` that also has ``__raytask_run__``."""

    async def __raytask_run__(
        self: Any,
        method: str,
        kwargs: dict[str, Any],
        context: tuple[str, str, int] | None = None,
    ) -> Any:
        # context: (app name, task id, attempt number), for progress reports
        reporter = None
        if context is not None:
            reporter = ProgressReporter(_progress_sender(*context), asyncio.get_running_loop())
        return await run_attempt(self, method, kwargs, reporter)

    return type(cls.__name__, (cls,), {RUN_METHOD: __raytask_run__, "__doc__": cls.__doc__})
