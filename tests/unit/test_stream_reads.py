"""The in-cluster clients' stream reads (raytask.client.streaming): across a manager
restart they ask again in the attempt they read, and a newer attempt is a reset."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import raytask
from raytask.client.streaming import StreamEvents, aread_reads, read_reads
from raytask.core.errors import ServiceUnavailableError
from raytask.core.messages import StreamRead
from raytask.core.state import TaskState


def read(status: str, attempt: int, start: int, chunks: list[bytes]) -> StreamRead:
    state = TaskState(task_id="a" * 32, status=status, chunks=start + len(chunks))
    return StreamRead(state, attempt, start, chunks, False)


class Manager:
    """Answers scripted reads; an exception in the script is raised (the manager away)."""

    def __init__(self, script: list[Any]) -> None:
        self.script, self.asked = script, []

    def ask(self, start: int, attempt: int | None) -> StreamRead:
        self.asked.append((start, attempt))
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aask(self, start: int, attempt: int | None) -> StreamRead:
        return self.ask(start, attempt)


AWAY = ServiceUnavailableError("the task manager is unavailable (ActorUnavailableError)")


def test_a_read_the_restarting_manager_cannot_answer_is_asked_again_where_it_was() -> None:
    manager = Manager(
        [
            read("in_progress", 1, 0, [b'"a"', b'"b"']),
            AWAY,
            AWAY,
            read("failure", 1, 2, [b'"c"']),  # back: the rest of attempt 1, then its end
        ]
    )
    reader = StreamEvents()
    assert list(read_reads(manager.ask, reader)) == ["a", "b", "c"]
    assert manager.asked == [(0, None), (2, 1), (2, 1), (2, 1)]
    assert reader.state is not None and reader.state.status == "failure"


def test_a_newer_attempt_after_the_restart_is_a_reset_and_too_many_failures_raise() -> None:
    manager = Manager([read("in_progress", 1, 0, [b"1"]), AWAY, read("in_progress", 2, 0, [])])
    got = []
    with pytest.raises(raytask.StreamReset) as reset:
        for chunk in read_reads(manager.ask, StreamEvents()):
            got.append(chunk)
    assert got == [1] and reset.value.attempt == 2
    gone = Manager([AWAY, AWAY, AWAY])
    with pytest.raises(ServiceUnavailableError):
        list(read_reads(gone.ask, StreamEvents(), reconnects=2))


def test_the_async_reads_ask_again_too() -> None:
    manager = Manager([AWAY, read("success", 1, 0, [b'{"x":1}'])])

    async def chunks() -> list[Any]:
        return [chunk async for chunk in aread_reads(manager.aask, StreamEvents())]

    assert asyncio.run(chunks()) == [{"x": 1}] and manager.asked == [(0, None), (0, None)]


def test_the_in_cluster_task_backends_read_a_stream_through_the_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    from raytask.client.manager_calls import AsyncManagerTasks, ManagerTasks

    reads = [read("in_progress", 1, 0, [b'"a"', b'"b"']), read("success", 1, 2, [])]

    class Handle:
        """A manager handle: ``stream.remote`` gives the next scripted read (as its ref)."""

        class stream:
            @staticmethod
            def remote(task_id: str, start: int, attempt: int | None, wait_s: float) -> Any:
                return reads[min(start // 2, 1)]

    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)  # the "ref" is the answer
    assert list(ManagerTasks(Handle()).stream("a" * 32, StreamEvents())) == ["a", "b"]

    class AsyncHandle:
        class stream:
            @staticmethod
            def remote(task_id: str, start: int, attempt: int | None, wait_s: float) -> Any:
                async def answer() -> StreamRead:
                    return reads[min(start // 2, 1)]

                return answer()

    async def collect() -> list[Any]:
        chunks = AsyncManagerTasks(AsyncHandle()).stream("a" * 32, StreamEvents())
        return [chunk async for chunk in chunks]

    assert asyncio.run(collect()) == ["a", "b"]
