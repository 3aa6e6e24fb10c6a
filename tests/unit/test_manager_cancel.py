"""The manager's cancel reaches the replica whenever it comes: no Ray, a fake Serve handle.

The fake response behaves as Serve 2.60's ``DeploymentResponse`` does when its router runs
in the caller's event loop (the manager's setting): ``cancel()`` cancels the assignment
future, and reaches the replica only if the replica result has been stored, which happens
when ``_to_object_ref()`` resumes after the assignment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from raytask.config import AppConfig, SubmitOptions, TaskOptions
from raytask.manager import EndpointRoute, TaskManager

ROUTE = EndpointRoute("block", "block", "Model", TaskOptions(), max_ongoing_requests=4)


class FakeReplicaResult:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1

    async def to_object_ref_async(self) -> str:
        return "ref"


class FakeResponse:
    def __init__(self) -> None:
        self._replica_result_future: asyncio.Future[FakeReplicaResult] = (
            asyncio.get_running_loop().create_future()
        )
        self._replica_result: FakeReplicaResult | None = None
        self._cancelled = False
        self.replica = FakeReplicaResult()

    def assign(self) -> None:
        """Serve's router has chosen a replica and sent it the request."""
        self._replica_result_future.set_result(self.replica)

    async def _to_object_ref(self) -> str:
        if self._replica_result is None:
            self._replica_result = await self._replica_result_future
        return await self._replica_result.to_object_ref_async()

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._replica_result_future.cancel()
        if self._replica_result is not None:
            self._replica_result.cancel()


class FakeHandle:
    def __init__(self) -> None:
        self.responses: list[FakeResponse] = []

    def remote(self, method: str, kwargs: dict[str, Any]) -> FakeResponse:
        self.responses.append(FakeResponse())
        return self.responses[-1]


async def running_task() -> tuple[TaskManager, FakeResponse, str]:
    manager = TaskManager("app", [ROUTE], AppConfig())
    manager._started = True  # no background loops: the test drives each step
    manager._watch_wake = asyncio.Event()
    handle = FakeHandle()
    manager._handles["Model"] = handle
    task_id = manager._submit_one("block", {"seconds": 60}, SubmitOptions())["task_id"]
    manager._dispatch()
    assert len(handle.responses) == 1
    return manager, handle.responses[0], task_id


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_cancel_between_assignment_and_its_await_still_reaches_the_replica() -> None:
    manager, response, task_id = await running_task()
    response.assign()  # the replica has the request; the manager has not resumed yet
    answer = await manager.cancel(task_id)  # runs before the manager's await resumes
    assert answer["status"] == "cancelled"
    assert response.replica.cancels == 0  # Serve's cancel() alone reached nothing
    await settle()
    assert response.replica.cancels == 1


async def test_cancel_after_assignment_reaches_the_replica_once() -> None:
    manager, response, task_id = await running_task()
    response.assign()
    await settle()
    assert manager._attempts[task_id].ref == "ref"
    await manager.cancel(task_id)
    assert response.replica.cancels == 1


async def test_cancel_before_assignment_releases_the_slot() -> None:
    manager, response, task_id = await running_task()
    assert manager._in_flight["Model"] == 1
    await manager.cancel(task_id)
    await settle()
    assert response.replica.cancels == 0  # it never reached a replica
    assert manager._in_flight["Model"] == 0
