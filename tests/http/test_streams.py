"""Streaming output over HTTP (SPEC 10), in process: the events of ``GET /NAME/stream``,
resume, the errors before any event, and the clients' ``task.stream()``.

(The in-process transport hands the whole body over once the stream ends, so these read
finished tasks; chunks reaching a reader while the task runs are the e2e tier's.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import raytask

from .conftest import ServedBackend
from .test_clients import run
from .test_routes import assert_error, submit

WORDS = "the quick brown fox"


def events(text: str) -> list[tuple[str, str | None, Any]]:
    """``(event, id, data)`` of an SSE body, pings left out."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "event" in fields:
            found.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    return found


async def streamed(client: httpx.AsyncClient, backend: ServedBackend) -> str:
    task_id = await submit(client, "words", {"text": WORDS, "delay_s": 0})
    await backend.drain()
    return task_id


async def test_a_generator_tasks_chunks_then_done(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await streamed(client, backend)
    response = await client.get("/words/stream", params={"task_id": task_id.upper()})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"  # proxies must not hold chunks
    got = events(response.text)
    assert got[:-1] == [("output", str(i), w) for i, w in enumerate(WORDS.split())]
    kind, _, done = got[-1]
    assert kind == "done" and done["status"] == "success" and done["chunks"] == 4
    result = await client.get("/words/get", params={"task_id": task_id})
    assert result.json() == WORDS.split()  # the result is the array of the chunks
    status = await client.get("/words/status", params={"task_id": task_id})
    assert status.json()["chunks"] == 4


async def test_resume_after_last_event_id_or_from(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await streamed(client, backend)
    after = await client.get(
        "/words/stream", params={"task_id": task_id}, headers={"Last-Event-ID": "1"}
    )
    assert [(e, i) for e, i, _ in events(after.text)] == [
        ("output", "2"),
        ("output", "3"),
        ("done", None),
    ]
    from_3 = await client.get("/words/stream", params={"task_id": task_id, "from": 3})
    assert [d for e, _, d in events(from_3.text) if e == "output"] == ["fox"]


async def test_a_task_that_is_not_a_generator_sends_only_done(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "wordcount", {"text": "a b a"})
    await backend.drain()
    got = events((await client.get("/wordcount/stream", params={"task_id": task_id})).text)
    assert [e for e, _, _ in got] == ["done"] and got[0][2]["chunks"] is None


async def test_errors_before_any_event_are_json(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await streamed(client, backend)
    assert_error(await client.get("/words/stream"), 400, "task_id")
    assert_error(await client.get("/words/stream", params={"task_id": "f" * 32}), 404)
    assert_error(await client.get("/noop/stream", params={"task_id": task_id}), 404, "'words'")
    for params, headers in (
        ({"from": "-1"}, {}),
        ({"from": "x"}, {}),
        ({}, {"Last-Event-ID": "a"}),
    ):
        response = await client.get(
            "/words/stream", params={"task_id": task_id, **params}, headers=headers
        )
        assert_error(response, 422, "chunk index")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_clients_stream_the_chunks_and_keep_the_final_state(
    kind: str, server: Any, backend: ServedBackend
) -> None:
    transport = server.sync_transport() if kind == "sync" else server.async_transport()
    cls = raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient
    client = cls("http://raytask", transport=transport)
    task = run(client.words.submit(text=WORDS, delay_s=0))
    run(backend.drain())
    stream = task.stream()
    assert (list(stream) if kind == "sync" else run(stream)) == WORDS.split()
    assert task.last_state is not None and task.last_state.chunks == 4
    assert run(task.get()) == WORDS.split()


class ScriptedReads:
    """A backend whose stream reads are given in advance (the rest of it is not used)."""

    def __init__(self, reads: list[Any]) -> None:
        self.reads = reads
        self.asked: list[tuple[int, int | None]] = []

    async def stream(self, task_id: str, start: int, attempt: int | None, *rest: Any) -> Any:
        self.asked.append((start, attempt))
        return self.reads.pop(0)


def read_of(status: str, attempt: int, start: int, chunks: list[Any]) -> Any:
    from raytask.core.messages import StreamRead
    from raytask.core.state import TaskState

    state = TaskState(task_id="a" * 32, status=status, chunks=start + len(chunks))
    return StreamRead(state, attempt, start, chunks, False)


async def test_a_lost_attempt_is_a_reset_then_the_new_attempts_chunks_from_0() -> None:
    from raytask.server.events import Reads

    backend = ScriptedReads(
        [
            read_of("in_progress", 1, 2, ["c"]),
            read_of("in_progress", 2, 0, ["A", "B"]),  # the replica died: attempt 2 streams
            read_of("success", 2, 2, []),
        ]
    )
    reads = Reads(backend, "a" * 32, None, "words", bentoml=False)  # type: ignore[arg-type]
    first = read_of("in_progress", 1, 0, ["a", "b"])
    sent = [(e.event, e.id, e.data) async for e in reads.events(first)]
    assert sent == [
        ("output", "0", '"a"'),
        ("output", "1", '"b"'),
        ("output", "2", '"c"'),
        ("reset", None, '{"attempt": 2}'),
        ("output", "0", '"A"'),
        ("output", "1", '"B"'),
        ("done", None, sent[-1][2]),
    ]
    assert json.loads(sent[-1][2])["status"] == "success"
    # each read asked for what came next: where it was, in the attempt it knew
    assert backend.asked == [(2, 1), (3, 1), (2, 2)]
