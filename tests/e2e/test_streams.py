"""Streaming output on a real Ray (SPEC 10): chunks reach the reader while the task runs, in
order; a reader resumes with Last-Event-ID; cancel ends the stream; every client streams."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

import raytask

from .conftest import App, Cluster

pytestmark = pytest.mark.e2e

TEXT = "one two three four five six seven eight"


def read_events(
    http: httpx.Client, path: str, task_id: str, stop_after: int | None = None, **headers: str
) -> list[tuple[str, str | None, Any, float]]:
    """``(event, id, data, seconds since the request)`` as they arrive (``stop_after``:
    close the connection after that many outputs)."""
    got: list[tuple[str, str | None, Any, float]] = []
    start = time.monotonic()
    params = {"task_id": task_id}
    with http.stream("GET", f"{path}/stream", params=params, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "":
                if "event" in fields:
                    data = json.loads(fields["data"])
                    got.append((fields["event"], fields.get("id"), data, time.monotonic() - start))
                    outputs = sum(1 for e in got if e[0] == "output")
                    if fields["event"] == "done" or outputs == stop_after:
                        return got
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return got


def check_live_stream(http: httpx.Client, prefix: str = "") -> None:
    """A generator task's chunks arrive while it runs (the first long before its end), in
    order, then ``done``; also what the HAProxy test checks through HAProxy."""
    response = http.post(f"{prefix}/words/submit", json={"text": TEXT, "delay_s": 0.4})
    task_id = response.json()["task_id"]
    got = read_events(http, f"{prefix}/words", task_id)
    outputs = [(i, d, t) for e, i, d, t in got if e == "output"]
    assert [(i, d) for i, d, _ in outputs] == [(str(n), w) for n, w in enumerate(TEXT.split())]
    first_s, done_s = outputs[0][2], got[-1][3]
    assert got[-1][0] == "done" and got[-1][2]["status"] == "success"
    assert done_s - first_s > 2.0, got  # not held back and sent at the end (8 x 0.4 s)


def test_chunks_arrive_while_the_task_runs(main_app: App) -> None:
    check_live_stream(main_app.http)
    # and the array is its result
    task_id = main_app.submit("words", {"text": "a b", "delay_s": 0})
    main_app.wait_status("words", task_id, "success")
    assert main_app.http.get("/words/get", params={"task_id": task_id}).json() == ["a", "b"]


def test_a_reader_resumes_after_its_last_event_id(main_app: App) -> None:
    task_id = main_app.submit("words", {"text": TEXT, "delay_s": 0.2})
    first = read_events(main_app.http, "/words", task_id, stop_after=3)
    assert [d for e, _, d, _ in first if e == "output"] == TEXT.split()[:3]
    rest = read_events(main_app.http, "/words", task_id, **{"Last-Event-ID": "2"})
    assert [d for e, _, d, _ in rest if e == "output"] == TEXT.split()[3:]  # exactly the rest
    assert rest[-1][0] == "done"


def test_cancel_mid_stream_ends_it_with_done(main_app: App) -> None:
    task_id = main_app.submit("words", {"text": TEXT * 10, "delay_s": 0.2})
    read_events(main_app.http, "/words", task_id, stop_after=1)
    main_app.http.post("/words/cancel", params={"task_id": task_id})
    got = read_events(main_app.http, "/words", task_id)
    assert got[-1][0] == "done" and got[-1][2]["status"] == "cancelled"


def test_every_client_streams(main_app: App) -> None:
    with raytask.SyncHTTPClient(main_app.url) as client:
        task = client.words.submit(text=TEXT, delay_s=0.05)
        assert list(task.stream()) == TEXT.split()
        assert task.last_state is not None and task.last_state.chunks == 8

    async def from_async() -> list[Any]:
        async with raytask.AsyncHTTPClient(main_app.url) as client:
            task = await client.words.submit(text=TEXT, delay_s=0.05)
            return [chunk async for chunk in task.stream()]

    assert asyncio.run(from_async()) == TEXT.split()
    in_cluster = raytask.get_client("main").words.submit(text=TEXT, delay_s=0.05)
    assert list(in_cluster.stream()) == TEXT.split()


def sync_call_events(http: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    """``(event, id, data, seconds since the request)`` of a streamed synchronous call."""
    got, fields, start = [], {}, time.monotonic()
    headers = {"Accept": "text/event-stream"}
    with http.stream("POST", path, json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line == "" and "event" in fields:
                data = json.loads(fields["data"])
                got.append((fields["event"], fields.get("id"), data, time.monotonic() - start))
                fields = {}
            elif line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return got


def test_the_synchronous_call_of_a_generator_answers_the_array_or_streams_it(
    main_app: App,
) -> None:
    response = main_app.http.post("/words", json={"text": "to be", "delay_s": 0})
    assert response.status_code == 200 and response.json() == ["to", "be"]
    got = sync_call_events(main_app.http, "/words", {"text": TEXT, "delay_s": 0.3})
    assert [(e, i, d) for e, i, d, _ in got[:-1]] == [
        ("output", str(n), w) for n, w in enumerate(TEXT.split())
    ]
    assert got[-1][:3] == ("done", None, {"status": "success", "chunks": 8, "error": None})
    assert got[-1][3] - got[0][3] > 1.5  # each chunk as it came (8 x 0.3 s)
    failed = sync_call_events(main_app.http, "/ticks", {"count": 5, "fail_at": 2})
    assert [e for e, *_ in failed] == ["output", "output", "done"]
    assert failed[-1][2]["status"] == "failure"
    assert "RuntimeError: failed before chunk 2" in failed[-1][2]["error"]


def test_a_stream_past_its_limit_ends_the_task_with_stream_too_large(cluster: Cluster) -> None:
    app = App(cluster, "streamcap", max_stream_chunks=3)
    try:
        task_id = app.submit("words", {"text": TEXT * 20, "delay_s": 0.02})
        state = app.wait_status("words", task_id, "failure")
        assert state["error"].startswith("StreamTooLarge") and state["attempts"] == 1
        got = read_events(app.http, "/words", task_id)
        assert got[-1][0] == "done" and got[-1][2]["status"] == "failure"
        # the app goes on: the next task runs
        quick = app.submit("words", {"text": "a", "delay_s": 0})
        app.wait_status("words", quick, "success", timeout_s=30)
    finally:
        app.close()
