"""Reads at the ingress (issue 28) on a real Ray: two ingress replicas, each with its copy
of the task states, behind Serve's proxy (which spreads requests over both).

Reads of running and finished tasks make no call to the manager, nor does a stream reader
once the task runs; a write acknowledged
through either replica is read through both at once; a manager SIGKILL and an ingress
replica SIGKILL each leave no stale answer.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from ..support import wait_for
from .conftest import App, Cluster
from .test_durability import kill_manager
from .test_streams import check_live_stream

pytestmark = pytest.mark.e2e

READS = ("status", "status_many", "wait", "result")


@pytest.fixture(scope="module")
def two_ingress(cluster: Cluster) -> Iterator[App]:
    app = App(cluster, "copies", ingress_num_replicas=2, sweep_interval_s=0.5)
    wait_for(lambda: app.stats()["copies"] == 2, 60, "both ingress replicas to follow")
    yield app
    app.close()


def read_calls(app: App) -> int:
    calls = app.stats()["calls"]
    return sum(calls.get(name, 0) for name in READS)


def http_retrying(app: App, method: str, path: str, **kwargs: Any) -> Any:
    """A request retried on 503 (the manager restarting), as the clients do."""

    def attempt() -> Any:
        response = app.http.request(method, path, **kwargs)
        return None if response.status_code == 503 else response

    return wait_for(attempt, 60, f"{method} {path} to be answered")


def finished(app: App, count: int) -> list[str]:
    ids = [app.submit("wordcount", {"text": f"w{i} w{i} x"}) for i in range(count)]
    for task_id in ids:
        app.wait_status("wordcount", task_id, "success")
    return ids


def ingress_pids(app: App) -> list[int]:
    title = f"ServeReplica:{app.name}:RaytaskIngress"
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(title in part for part in p.info["cmdline"] or ())
    ]


def test_reads_of_finished_tasks_make_no_manager_call(two_ingress: App) -> None:
    app = two_ingress
    ids = finished(app, 10)
    time.sleep(1.0)  # the groups after the polls' direct answers have come
    before = read_calls(app)
    for _ in range(3):
        for task_id in ids:
            assert app.status("wordcount", task_id)["status"] == "success"
            got = app.http.get("/wordcount/get", params={"task_id": task_id, "wait_s": 5})
            assert got.status_code == 200 and got.json()["words"] == 3
        many = app.http.post("/status_many", json={"task_ids": ids}).json()
        assert {t["status"] for t in many["tasks"]} == {"success"}
    assert read_calls(app) == before, app.stats()["calls"]  # 70 reads, on both replicas


def test_a_long_poll_get_wakes_when_the_task_finishes(two_ingress: App) -> None:
    app = two_ingress
    for _ in range(4):
        task_id = app.submit("sleep", {"seconds": 1.0})
        started = time.monotonic()
        got = app.http.get("/sleep/get", params={"task_id": task_id, "wait_s": 30})
        took = time.monotonic() - started
        assert got.status_code == 200 and got.json() >= 0.99  # (the seconds it slept)
        assert 0.99 <= took < 2.0, took


def test_a_live_stream_is_read_from_the_copies(two_ingress: App) -> None:
    """Each chunk reaches the reader as it comes (check_live_stream), and of its long-polls
    only those before the task has streamed go to the manager (9 of them, one a chunk,
    when every read went to the manager; 3 here, one more for a copy slow to follow)."""
    app = two_ingress
    for _ in range(2):  # (Serve's proxy spreads the readers over both replicas)
        before = app.stats()["calls"].get("stream", 0)
        check_live_stream(app.http)  # 8 chunks 0.4 s apart, then done
        assert app.stats()["calls"].get("stream", 0) - before <= 4


def cancel_and_read(app: App, task_id: str) -> list[str]:
    answer = app.http.post("/nap/cancel", params={"task_id": task_id})
    assert answer.json()["status"] == "cancelled", answer.text
    return [app.status("nap", task_id)["status"] for _ in range(4)]


def delete_and_read(app: App, task_id: str) -> list[int]:
    answer = app.http.post("/wordcount/delete_many", json={"task_ids": [task_id]})
    assert answer.json()["deleted"] == 1, answer.text
    reads = [app.http.get("/wordcount/status", params={"task_id": task_id}) for _ in range(4)]
    return [r.status_code for r in reads]


def test_a_write_acknowledged_through_one_replica_is_read_through_both(two_ingress: App) -> None:
    app = two_ingress
    done = finished(app, 12)
    running = [app.submit("nap", {"seconds": 60, "tag": f"copies-{i}"}) for i in range(8)]
    for task_id in running:
        app.wait_status("nap", task_id, "in_progress")
    time.sleep(1.0)  # both copies hold them all
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        cancels = list(pool.map(lambda t: cancel_and_read(app, t), running))
        deletes = list(pool.map(lambda t: delete_and_read(app, t), done))
    assert all(reads == ["cancelled"] * 4 for reads in cancels), cancels
    assert all(reads == [404] * 4 for reads in deletes), deletes


def test_a_manager_sigkill_leaves_no_stale_answer(two_ingress: App) -> None:
    app = two_ingress
    kept, gone = finished(app, 2)
    running = app.submit("nap", {"seconds": 60, "tag": "copies-restart"})
    app.wait_status("nap", running, "in_progress")
    time.sleep(1.0)
    kill_manager(app)
    # At once after the restart: writes through either replica, read through both.
    deleted = http_retrying(app, "POST", "/wordcount/delete_many", json={"task_ids": [gone]})
    assert deleted.json()["deleted"] == 1
    cancelled = http_retrying(app, "POST", "/nap/cancel", params={"task_id": running})
    assert cancelled.json()["status"] == "cancelled"
    for _ in range(8):
        assert app.http.get("/wordcount/status", params={"task_id": gone}).status_code == 404
        assert app.status("nap", running)["status"] == "cancelled"
        got = app.http.get("/wordcount/get", params={"task_id": kept})
        assert got.status_code == 200 and got.json()["words"] == 3
    wait_for(lambda: app.stats()["copies"] == 2, 30, "both copies to follow the new manager")


def test_an_ingress_sigkill_leaves_no_stale_answer(two_ingress: App) -> None:
    app = two_ingress
    done = finished(app, 3)
    pids = ingress_pids(app)
    assert len(pids) == 2, pids
    os.kill(pids[0], signal.SIGKILL)
    # The other replica answers meanwhile; a write waits out the dead copy's lease at most.
    started = time.monotonic()
    deleted = http_retrying(app, "POST", "/wordcount/delete_many", json={"task_ids": done[:1]})
    assert deleted.json()["deleted"] == 1 and time.monotonic() - started < 10
    wait_for(lambda: len(ingress_pids(app)) == 2, 120, "Serve to replace the replica")
    wait_for(lambda: app.stats()["copies"] == 2, 60, "the new replica's copy to follow")
    for _ in range(8):
        response = app.http.get("/wordcount/status", params={"task_id": done[0]})
        assert response.status_code == 404
        assert app.status("wordcount", done[1])["status"] == "success"
    deleted = app.http.post("/wordcount/delete_many", json={"task_ids": done[1:]})
    assert deleted.json()["deleted"] == 2
    for task_id in done[1:]:
        codes = {app.http.get("/wordcount/status", params={"task_id": task_id}).status_code}
        assert codes == {404}
