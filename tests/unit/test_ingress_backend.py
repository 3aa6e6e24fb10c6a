"""The ingress's RayBackend: how Ray's errors become raytask's, with a fake manager actor.

The fake stands in for an actor handle at the one seam the backend uses (``method.remote``
returning an awaitable); the errors are Ray's real exception classes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, RayTaskError

from raytask.core.errors import (
    EndpointNotFoundError,
    ServiceUnavailableError,
    TaskFailedError,
    TaskNotFoundError,
)
from raytask.core.messages import Submit
from raytask.core.state import TaskState
from raytask.server.ingress import RayBackend

TASK_ID = "a" * 32


async def _value(value: Any) -> Any:
    if isinstance(value, BaseException):
        raise value
    return value


class Method:
    """``actor.method``: ``.remote(...)`` records the call and returns an awaitable."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        answer = self.answer(*args) if callable(self.answer) else self.answer
        return _value(answer)


class FakeManager:
    def __init__(self, **answers: Any) -> None:
        for name in (
            "submit_each",
            "status_many",
            "result",
            "cancel",
            "retry",
            "queue",
            "ping",
        ):
            setattr(self, name, Method(answers.get(name)))


class FakeHandle:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def options(self, **options: Any) -> FakeHandle:
        return self

    def remote(self, **kwargs: Any) -> Any:
        return _value(self.answer)


def state(status: str = "pending") -> TaskState:
    return TaskState.model_construct(task_id=TASK_ID, status=status)


def backend(manager: FakeManager, answer: Any = None) -> RayBackend:
    from raytask.core.endpoint import discover
    from tests.apps import Demo

    return RayBackend(manager, discover(Demo.func_or_class, "Demo"), {"Demo": FakeHandle(answer)})


async def test_answers_and_errors_returned_as_values_are_unwrapped() -> None:
    manager = FakeManager(
        submit_each=lambda items: [state() for _ in items],
        status_many=lambda ids: [TaskNotFoundError(f"task {i} not found") for i in ids],
    )
    ray_backend = backend(manager)
    assert (await ray_backend.submit(Submit("noop", {}))).task_id == TASK_ID
    with pytest.raises(TaskNotFoundError):
        await ray_backend.status(TASK_ID)


async def test_a_lost_result_is_a_task_failure() -> None:
    lost = ObjectLostError("ff" * 28, None, "")
    manager = FakeManager(result=[_value(lost)])
    with pytest.raises(TaskFailedError, match=f"the result of task {TASK_ID} was lost"):
        await backend(manager).result(TASK_ID)


async def test_a_small_result_comes_as_it_is_and_a_large_one_by_ref() -> None:
    assert await backend(FakeManager(result=[{"words": 3}])).result(TASK_ID) == {"words": 3}
    assert await backend(FakeManager(result=[_value(b"large")])).result(TASK_ID) == b"large"


async def test_a_method_error_in_a_sync_call_names_its_cause() -> None:
    error = RayTaskError("describe", "Traceback ...", ValueError("bad prompt"))
    with pytest.raises(TaskFailedError, match="describe failed: ValueError: bad prompt"):
        await backend(FakeManager(), answer=error).call("describe", {"prompt": "x"})


async def test_a_sync_call_to_an_unknown_endpoint_is_404() -> None:
    with pytest.raises(EndpointNotFoundError):
        await backend(FakeManager()).call("nope", {})


async def test_readiness_is_false_while_the_manager_is_unreachable() -> None:
    assert await backend(FakeManager(ping=True)).ready() is True
    assert await backend(FakeManager(ping=ActorDiedError())).ready() is False


@pytest.mark.parametrize(
    "error", [ActorDiedError(), ActorUnavailableError("restarting", b"\x00" * 16)]
)
async def test_every_route_answers_503_while_the_manager_is_down(error: Exception) -> None:
    down = FakeManager(
        **dict.fromkeys(("submit_each", "status_many", "result", "cancel", "retry", "queue"), error)
    )
    ray_backend = backend(down)
    calls = [
        ray_backend.submit(Submit("wordcount", {"text": "a"})),
        ray_backend.status(TASK_ID),
        ray_backend.result(TASK_ID),
        ray_backend.cancel(TASK_ID),
        ray_backend.retry(TASK_ID),
        ray_backend.queue(),
    ]
    for call in calls:
        with pytest.raises(ServiceUnavailableError, match="task manager is unavailable"):
            await call


async def test_a_manager_that_hangs_is_a_503_after_the_timeout() -> None:
    async def hang() -> None:
        await asyncio.sleep(60)

    slow = FakeManager()
    slow.status_many.remote = lambda ids: hang()  # type: ignore[method-assign]
    ray_backend = backend(slow)
    ray_backend.timeout_s = 0.05
    with pytest.raises(ServiceUnavailableError, match=r"did not answer within 0\.05 s"):
        await ray_backend.status(TASK_ID)
