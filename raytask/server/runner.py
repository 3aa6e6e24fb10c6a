"""The replica side of a task: how a model replica runs one attempt.

:func:`run_attempt` runs one task method on the deployment's instance and returns its
value, or a small :class:`AttemptFailed` when the method raised; a sync method runs in a
thread of its own that a cancel interrupts. :mod:`raytask.server.batch` runs the attempts
the manager sends in one request with it and streams back how each ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.chunks import ChunkLog
from ..core.endpoint import Endpoint, check_result, discover, encode_chunk
from ..core.progress import ProgressReporter

MAX_ERROR_CHARS = 8_192


@dataclass(frozen=True)
class AttemptFailed:
    """What ``__raytask_run__`` returns when the method raised: ``"ExcType: message"``."""

    error: str


@dataclass(frozen=True)
class Streamed:
    """What a generator attempt returns when its chunks went to ``emit``: how many."""

    count: int


async def _stream(endpoint: Endpoint, bound: Any, kwargs: dict[str, Any], emit: Any) -> int:
    """Run a generator method, handing each yielded value to ``emit`` as JSON (a chunk
    with no JSON form fails the attempt here); a sync generator runs in its own thread (a
    cancel interrupts it there)."""
    if inspect.isasyncgenfunction(bound):
        count = 0
        async for value in bound(**kwargs):
            emit(encode_chunk(value))
            count += 1
        return count
    loop = asyncio.get_running_loop()

    def pump(**call_kwargs: Any) -> int:
        count = 0
        for value in bound(**call_kwargs):
            loop.call_soon_threadsafe(emit, encode_chunk(value))
            count += 1
        return count

    pump.__name__ = endpoint.method
    return int(await call_in_thread(pump, kwargs))


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
    emit: Callable[[Any], None] | None = None,
) -> Any:
    """Run ``instance.method(**kwargs)`` as one task attempt; failures become values.

    With a ``reporter``, :func:`raytask.report_progress` inside the method reaches it. A
    generator method's chunks go to ``emit`` as they come, as JSON (it returns
    :class:`Streamed`); without ``emit`` it returns the list of them, as values.
    """
    token = reporter.activate() if reporter is not None else None
    try:
        endpoint = _endpoints_of(type(instance))[method]
        call_kwargs = endpoint.to_call_kwargs(kwargs)
        bound = getattr(instance, method)
        if endpoint.streams:
            if emit is not None:
                return Streamed(await _stream(endpoint, bound, call_kwargs, emit))
            log = ChunkLog(0)
            await _stream(endpoint, bound, call_kwargs, lambda chunk: log.extend((chunk,)))
            return log.values()
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


def manager_of(app_name: str) -> Any:
    """The task manager actor of ``app_name`` (looked up once per replica process)."""
    manager = _MANAGERS.get(app_name)
    if manager is None:
        import ray

        from ..core.names import NAMESPACE, manager_name

        manager = _MANAGERS[app_name] = ray.get_actor(manager_name(app_name), namespace=NAMESPACE)
    return manager


def progress_sender(app_name: str, task_id: str, attempt_no: int) -> Callable[..., None]:
    """Send one attempt's progress reports to its app's task manager (fire and forget)."""

    def send(fraction: float | None, message: str | None) -> None:
        manager_of(app_name).report_progress.remote(task_id, attempt_no, fraction, message)

    return send
