"""Tasks survive the task manager's crashes: the journal on a real Ray, no mocks.

The manager's process is killed with SIGKILL (Ray restarts the actor, which reloads its
journal) while tasks are queued, running and finished.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import raytask

from ..support import missing, redis_server, wait_for
from .conftest import App, Cluster, deploy

pytestmark = pytest.mark.e2e

TEXTS = [f"word{i} " * (i + 1) for i in range(6)]


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def durable_app(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    """Two tasks at a time, so later ones wait in the manager's queue; journaled to
    SQLite (the default) or to a real redis-server of this module's own."""
    settings: dict[str, Any] = {"sweep_interval_s": 0.5, "max_in_flight": 2}
    with contextlib.ExitStack() as stack:
        if request.param == "redis":
            try:
                url = stack.enter_context(redis_server(tmp_path_factory.mktemp("redis")))
            except FileNotFoundError as exc:
                missing(f"the Redis journal is not tested here: {exc}")
            settings["journal"] = url
        app = App(cluster, f"durable-{request.param}", **settings)
        yield app
        app.close()


def kill_manager(app: App) -> float:
    """SIGKILL the manager's process; return when Ray has restarted it (seconds taken)."""
    import ray

    old = app.stats()["pid"]
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()

    def restarted() -> bool:
        try:
            return app.stats()["pid"] != old
        except ray.exceptions.RayError:
            return False

    wait_for(restarted, 60, "the task manager to restart")
    return time.monotonic() - killed


def submit_with_retries(app: App, endpoint: str, body: dict[str, Any], **params: Any) -> str:
    """A client's submit: retried on 503 (the manager restarting), as the clients do."""

    def attempt() -> str | None:
        response = app.http.post(f"/{endpoint}/submit", json=body, params=params)
        if response.status_code == 503:
            assert response.headers["retry-after"]
            return None
        assert response.status_code == 200, response.text
        return response.json()["task_id"]

    return wait_for(attempt, 60, "a submit to be taken")


def test_tasks_queued_running_and_finished_survive_three_manager_kills(
    durable_app: App,
) -> None:
    app = durable_app
    stats = app.stats()
    assert stats["journal"].startswith("sqlite:" if app.name.endswith("sqlite") else "redis:")
    assert stats["on_head_node"] is True
    finished = [app.submit("wordcount", {"text": t}) for t in TEXTS[:2]]
    for task_id in finished:
        app.wait_status("wordcount", task_id, "success")
    # Two running (the app's limit) and four queued behind them; enough attempts for
    # three kills in a row while running.
    running = [
        app.submit("block", {"seconds": 2, "tag": f"kill{i}"}, max_attempts=10) for i in range(2)
    ]
    queued = [app.submit("wordcount", {"text": t}) for t in TEXTS[2:]]
    for tag in ("kill0", "kill1"):
        app.wait_running(tag)
    assert app.status("wordcount", queued[0])["status"] == "pending"
    restarts = [kill_manager(app) for _ in range(3)]
    took = time.monotonic()
    again = submit_with_retries(app, "wordcount", {"text": "after the kills"})
    took = time.monotonic() - took
    for task_id in finished:  # their small results were journaled: not run again
        state = app.status("wordcount", task_id)
        assert state["status"] == "success" and state["attempts"] == 1, state
    for i, task_id in enumerate(finished + queued):
        app.wait_status("wordcount", task_id, "success")
        result = app.http.get("/wordcount/get", params={"task_id": task_id}).json()
        assert result["words"] == i + 1, result
    for task_id in running:
        state = app.wait_status("block", task_id, "success")
        assert 2 <= state["attempts"] <= 10  # run again after the kill that lost it
        assert app.http.get("/block/get", params={"task_id": task_id}).json() >= 2
    app.wait_status("wordcount", again, "success")
    print(f"restarts took {[round(r, 1) for r in restarts]} s; a submit {took:.1f} s after")
    assert took < 30


def test_a_poison_task_that_kills_its_replica_ends_in_failure(durable_app: App) -> None:
    task_id = durable_app.submit("crash_replica", max_attempts=2)
    state = durable_app.wait_status("crash_replica", task_id, "failure", timeout_s=120)
    assert state["attempts"] == 2 and "gave up after 2 attempts" in state["error"], state
    assert "died" in state["error"]


def test_a_redeploy_with_a_changed_config_keeps_every_task(
    durable_app: App, cluster: Cluster
) -> None:
    app = durable_app
    done = app.submit("wordcount", {"text": "before the redeploy"})
    app.wait_status("wordcount", done, "success")
    blocks = [app.submit("block", {"seconds": 1, "tag": f"redeploy{i}"}) for i in range(3)]
    assert app.status("block", blocks[2])["status"] == "pending"  # two at a time
    deploy(cluster, app.name, f"/{app.name}", **{**app.settings, "max_in_flight": 3})
    assert app.stats()["capacity"] == {"Demo": 3}  # the same manager, reconfigured
    assert app.status("wordcount", done)["status"] == "success"
    for task_id in blocks:
        app.wait_status("block", task_id, "success")


def test_a_replica_lost_mid_stream_is_a_reset_then_the_new_attempts_chunks(
    durable_app: App, tmp_path: Path
) -> None:
    from .test_streams import read_events

    task_id = durable_app.submit("dies_once", {"flag": str(tmp_path / "died-once")})
    got = [
        (event, id_, data)
        for event, id_, data, _ in read_events(durable_app.http, "/dies_once", task_id)
    ]
    reset = next(n for n, (event, _, _) in enumerate(got) if event == "reset")
    assert got[:reset] == [("output", str(n), n) for n in range(3)]  # the lost attempt's
    assert got[reset][2] == {"attempt": 2}
    assert got[reset + 1 : -1] == [("output", str(n), n) for n in range(6)]  # from id 0
    assert got[-1][0] == "done" and got[-1][2]["status"] == "success"
    assert got[-1][2]["chunks"] == 6 and got[-1][2]["attempts"] == 2
    # a client's stream() raises StreamReset there; stream() again reads the new attempt
    with raytask.SyncHTTPClient(durable_app.url) as client:
        task = client.dies_once.submit(flag=str(tmp_path / "died-twice"))
        seen: list[int] = []
        with pytest.raises(raytask.StreamReset) as lost:
            for chunk in task.stream():
                seen.append(chunk)
        assert seen == [0, 1, 2] and lost.value.attempt == 2
        assert list(task.stream()) == list(range(6))


class Reader(threading.Thread):
    """A client's ``task.stream()`` of one ticks task, in a thread: the chunks' indexes it
    got, how it ended (the final state, or the reset) and the stream again after a reset."""

    def __init__(self, url: str, task_id: str, app_name: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.task_id, self.app_name = url, task_id, app_name  # app: in-cluster
        self.got: list[int] = []
        self.again: list[int] = []
        self.reset: raytask.StreamReset | None = None
        self.state: Any = None

    def run(self) -> None:
        if self.app_name is not None:  # the in-cluster client: the manager's own reads
            self.read(raytask.get_client(self.app_name).ticks.task(self.task_id))
            return
        with raytask.SyncHTTPClient(self.url) as client:
            self.read(client.ticks.task(self.task_id))

    def read(self, task: Any) -> None:
        try:
            for chunk in task.stream():  # (one by one: the test watches them come)
                self.got.append(chunk["i"])
        except raytask.StreamReset as reset:
            self.reset = reset
            self.again = [chunk["i"] for chunk in task.stream()]
        self.state = task.last_state


def test_a_manager_killed_mid_stream_loses_no_journaled_chunk_and_its_streams_resume(
    durable_app: App,
) -> None:
    """Two generator tasks stream, each to an HTTP client and an in-cluster one; the manager
    is SIGKILLed mid-stream. The clients resume where they were, in the attempt they read.
    The task with no attempt left ends ``failure``: its readers get every journaled chunk
    once, in order, then ``done``. The other runs again: its readers get a reset, and
    stream() again reads attempt 2 whole."""
    body = {"count": 80, "interval_s": 0.1}
    ids = [durable_app.submit("ticks", body, max_attempts=n) for n in (1, 2)]
    readers = [
        Reader(durable_app.url, task_id, app_name)
        for task_id in ids
        for app_name in (None, durable_app.name)
    ]
    for reader in readers:
        reader.start()
    wait_for(lambda: all(len(r.got) >= 5 for r in readers), 60, "chunks to stream")
    seen = min(len(r.got) for r in readers)
    running = [durable_app.status("ticks", task_id)["status"] for task_id in ids]
    assert running == ["in_progress"] * 2, (running, seen)
    kill_manager(durable_app)
    for reader in readers:
        reader.join(120)
        assert not reader.is_alive(), "a stream did not end after the manager restarted"
    ended, rerun = readers[:2], readers[2:]
    for reader in ended:  # no attempt left: every journaled chunk, once, in order
        assert reader.reset is None and reader.state.status == "failure", reader.app_name
        assert reader.got == list(range(len(reader.got))) and len(reader.got) >= seen
        assert reader.state.chunks == len(reader.got)
        assert reader.state.error.startswith("the task manager restarted")
    for reader in rerun:  # run again: a reset, then the new attempt from its first chunk
        assert reader.reset is not None and reader.reset.attempt == 2, reader.app_name
        assert reader.got == list(range(len(reader.got))) and reader.again == list(range(80))
        assert reader.state.status == "success" and reader.state.attempts == 2


def test_while_the_manager_is_down_routes_answer_503_with_retry_after(
    durable_app: App,
) -> None:
    """Runs last in this module: it stops the app's manager for good."""
    import ray

    ray.kill(durable_app.manager, no_restart=True)
    start = time.monotonic()
    response = durable_app.http.get("/wordcount/status", params={"task_id": "0" * 32})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "unavailable"
    response = durable_app.http.post("/wordcount/submit", json={"text": "a"})
    assert response.status_code == 503 and response.json()["code"] == "unavailable"
    assert durable_app.http.get("/readyz").status_code == 503
    assert time.monotonic() - start < 15  # fast: no hang, no Ray traceback
