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
    return StreamRead(state, attempt, start, [json.dumps(c).encode() for c in chunks], False)


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
        ("reset", None, '{"attempt":2}'),
        ("output", "0", '"A"'),
        ("output", "1", '"B"'),
        ("done", None, sent[-1][2]),
    ]
    assert json.loads(sent[-1][2])["status"] == "success"
    # each read asked for what came next: where it was, in the attempt it knew
    assert backend.asked == [(2, 1), (3, 1), (2, 2)]


async def test_a_reader_resuming_an_older_attempt_gets_a_reset_first() -> None:
    from raytask.server.events import Reads

    backend = ScriptedReads([read_of("success", 2, 1, [])])
    reads = Reads(backend, "a" * 32, None, "words", bentoml=False)  # type: ignore[arg-type]
    first = read_of("in_progress", 2, 0, ["A"])  # it asked for attempt 1 from 5: attempt 2 runs
    sent = [(e.event, e.id, e.data) async for e in reads.events(first, 1)]
    assert [(e, i) for e, i, _ in sent] == [("reset", None), ("output", "0"), ("done", None)]
    assert json.loads(sent[0][2]) == {"attempt": 2} and backend.asked == [(1, 2)]
    # a pending task's reader expects its next attempt: no reset when that one starts
    backend = ScriptedReads([read_of("in_progress", 1, 0, ["a"]), read_of("success", 1, 1, [])])
    reads = Reads(backend, "a" * 32, None, "words", bentoml=False)  # type: ignore[arg-type]
    sent = [(e.event, e.id, e.data) async for e in reads.events(read_of("pending", 0, 0, []), 1)]
    assert [e for e, _, _ in sent] == ["output", "done"] and backend.asked == [(0, 1), (1, 1)]


async def test_the_stream_says_its_attempt_and_checks_the_one_asked_for(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "words", {"text": WORDS, "delay_s": 0})
    await backend.drain()
    answer = await client.get("/words/stream", params={"task_id": task_id})
    assert answer.headers["raytask-attempt"] == "1"
    again = await client.get("/words/stream", params={"task_id": task_id, "attempt": 1, "from": 3})
    assert [e for e, _, _ in events(again.text)] == ["output", "done"]  # same attempt: resumed
    other = await client.get("/words/stream", params={"task_id": task_id, "attempt": 7, "from": 3})
    got = events(other.text)  # an attempt it is not in: a reset, then attempt 1 from 0
    assert got[0] == ("reset", None, {"attempt": 1}) and [i for _, i, _ in got[1:5]] == list("0123")
    for bad in ("0", "x", "-1"):
        response = await client.get("/words/stream", params={"task_id": task_id, "attempt": bad})
        assert_error(response, 422, "attempt")


class DroppingServer:
    """The app, but its streams are scripted per request: each answer is ``(attempt,
    events, drop)``; ``drop`` cuts the connection after the events (requests are kept)."""

    def __init__(
        self, app: httpx.BaseTransport, answers: list[tuple[int, list[Any], bool]]
    ) -> None:
        self.app, self.answers, self.requests = app, answers, []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/stream"):
            return self.app.handle_request(request)  # the schema the client reads first
        self.requests.append(dict(request.url.params))
        attempt, sent, drop = self.answers.pop(0)

        def body() -> Any:
            for event, event_id, data in sent:
                lines = [f"event: {event}"] + ([f"id: {event_id}"] if event_id else [])
                yield ("\n".join([*lines, f"data: {json.dumps(data)}"]) + "\n\n").encode()
            if drop:
                raise httpx.RemoteProtocolError("peer closed connection")

        headers = {"content-type": "text/event-stream", "raytask-attempt": str(attempt)}
        return httpx.Response(200, headers=headers, content=body())


def test_a_client_reconnects_where_it_was_in_its_attempt_and_raises_a_reset(
    server: Any,
) -> None:
    done = {"task_id": "a" * 32, "status": "success", "chunks": 1}
    server = DroppingServer(
        server.sync_transport(),
        [
            (1, [("output", "0", "a"), ("output", "1", "b")], True),  # dropped mid-stream
            (1, [("output", "2", "c")], True),  # resumed in attempt 1; dropped again
            (1, [("reset", None, {"attempt": 2})], False),  # attempt 1 was lost meanwhile
            (2, [("output", "0", "A"), ("done", None, done)], False),  # stream() again
        ],
    )
    client = raytask.SyncHTTPClient("http://raytask", transport=httpx.MockTransport(server.handle))
    task = client.words.task("a" * 32)
    got = []
    with pytest.raises(raytask.StreamReset) as reset:
        for chunk in task.stream():
            got.append(chunk)
    assert got == ["a", "b", "c"] and reset.value.attempt == 2
    assert list(task.stream()) == ["A"]
    assert [(r.get("from"), r.get("attempt")) for r in server.requests] == [
        (None, None),
        ("2", "1"),
        ("3", "1"),
        (None, None),
    ]


async def test_a_sync_call_streams_its_chunks_when_asked_for_events(
    client: httpx.AsyncClient,
) -> None:
    sse = {"Accept": "text/event-stream"}
    plain = await client.post("/words", json={"text": WORDS, "delay_s": 0})
    assert plain.json() == WORDS.split()  # no Accept: the JSON array
    answer = await client.post("/words", json={"text": WORDS, "delay_s": 0}, headers=sse)
    assert answer.headers["content-type"].startswith("text/event-stream")
    got = events(answer.text)
    assert got[:-1] == [("output", str(i), w) for i, w in enumerate(WORDS.split())]
    assert got[-1] == ("done", None, {"status": "success", "chunks": 4, "error": None})
    failed = events(
        (await client.post("/ticks", json={"count": 5, "fail_at": 2}, headers=sse)).text
    )
    assert [(e, i) for e, i, _ in failed] == [("output", "0"), ("output", "1"), ("done", None)]
    assert (
        failed[-1][2]["status"] == "failure" and "failed before chunk 2" in failed[-1][2]["error"]
    )
    assert_error(await client.post("/words", json={"text": 3}, headers=sse), 422, "text")
    counted = await client.post("/wordcount", json={"text": "a b"}, headers=sse)
    assert counted.json()["words"] == 2  # not a generator: its JSON answer as ever


async def test_the_document_declares_the_stream_route_and_the_streamed_call(
    client: httpx.AsyncClient,
) -> None:
    doc = (await client.get("/openapi.json")).json()
    stream = doc["paths"]["/words/stream"]["get"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    names = {p["name"] for p in stream["parameters"]}
    assert {"task_id", "from", "attempt", "Last-Event-ID"} <= names
    call = doc["paths"]["/words"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(call)
    counted = doc["paths"]["/wordcount"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" not in counted  # not a generator
