"""Task control (SPEC §7) on a real local Ray + Serve, through the real HTTP proxy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

import raytask

from ..support import wait_for
from .conftest import App, Cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def control_app(cluster: Cluster) -> Iterator[App]:
    """One task at a time, so later submits queue behind a running one."""
    app = App(cluster, "control", sweep_interval_s=0.5, max_in_flight=1)
    yield app
    app.close()


@pytest.fixture
def gate(control_app: App) -> Iterator[str]:
    """A long task holding the app's only slot; cancelled (the slot frees) at the end."""
    task_id = control_app.submit("block", {"seconds": 60, "tag": "gate"})
    control_app.wait_running("gate")
    yield task_id
    control_app.clean()


def started(state: dict) -> datetime:
    return datetime.fromisoformat(state["executed_at"])


def test_a_high_priority_task_runs_before_fifty_queued_ones(control_app: App, gate: str) -> None:
    response = control_app.http.post(
        "/wordcount/submit_many", json=[{"text": f"low {i}"} for i in range(50)]
    )
    assert response.status_code == 200, response.text
    low = [task["task_id"] for task in response.json()["tasks"]]
    high = control_app.submit("wordcount", {"text": "urgent"}, priority=10)
    queued = control_app.status("wordcount", high)
    assert queued["priority"] == 10 and queued["queue_position"] == 0
    assert control_app.status("wordcount", low[49])["queue_position"] == 50
    control_app.http.post("/block/cancel", params={"task_id": gate})  # the slot frees
    first = control_app.wait_status("wordcount", high, "success")
    for task_id in low:
        state = control_app.wait_status("wordcount", task_id, "success")
        assert started(state) > started(first)


def test_a_queue_deadline_expires_a_queued_task(control_app: App, gate: str) -> None:
    task_id = control_app.submit("wordcount", {"text": "in a hurry"}, max_queue_s=1)
    state = control_app.wait_status("wordcount", task_id, "cancelled", timeout_s=30)
    assert state["error"].startswith("expired:") and state["attempts"] == 0
    assert state["queue_position"] is None


def test_the_same_idempotency_key_twice_gives_one_task(control_app: App) -> None:
    headers = {"Idempotency-Key": "e2e-key-1"}
    ids = []
    for _ in range(2):
        response = control_app.http.post(
            "/wordcount/submit", json={"text": "once only"}, headers=headers
        )
        assert response.status_code == 200, response.text
        ids.append(response.json()["task_id"])
    assert ids[0] == ids[1]
    control_app.wait_status("wordcount", ids[0], "success")
    third = control_app.http.post("/wordcount/submit", json={"text": "once only"}, headers=headers)
    assert third.json()["task_id"] == ids[0]  # done, not expired: still the same task
    other = control_app.http.post("/wordcount/submit", json={"text": "changed"}, headers=headers)
    assert other.status_code == 409
    listed = control_app.http.get("/wordcount/tasks", params={"limit": 1000}).json()["tasks"]
    assert sum(task["task_id"] == ids[0] for task in listed) == 1


def test_a_long_task_shows_its_progress_mid_run(control_app: App) -> None:
    task_id = control_app.submit("steps", {"count": 10, "seconds": 0.3})

    def midway() -> dict | None:
        state = control_app.status("steps", task_id)
        progress = state["progress"]
        if state["status"] == "in_progress" and progress and 0 < progress["fraction"] < 1:
            return progress
        return None

    progress = wait_for(midway, 30, "progress to show mid-run")
    assert progress["message"].startswith("step ") and progress["message"].endswith(" of 10")
    final = control_app.wait_status("steps", task_id, "success")
    assert final["progress"]["fraction"] > progress["fraction"]


def test_listing_pages_through_250_tasks_then_purging_them(control_app: App, gate: str) -> None:
    # The gate holds the only slot: all 250 stay pending, listed and then purged.
    response = control_app.http.post("/noop/submit_many", json=[{}] * 250)
    ids = [task["task_id"] for task in response.json()["tasks"]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while len(seen) < 250:
        params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = control_app.http.get("/noop/tasks", params=params).json()
        seen += [task["task_id"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        pages += 1
    assert seen[:250] == ids[::-1] and pages == 3
    everywhere = control_app.http.get("/tasks", params={"endpoint": "noop", "limit": 250}).json()
    assert [task["task_id"] for task in everywhere["tasks"]] == ids[::-1]
    purged = control_app.http.post("/noop/cancel_many", json={"status": "pending"}).json()
    assert purged == {"cancelled": 250}
    left = control_app.http.get("/noop/tasks", params={"status": "pending"}).json()
    assert left["tasks"] == []
    assert control_app.status("block", gate)["status"] == "in_progress"  # another endpoint's


def test_submit_many_of_1000_no_op_tasks_completes(main_app: App) -> None:
    response = main_app.http.post("/noop/submit_many", json=[{}] * 1000)
    assert response.status_code == 200, response.text
    ids = [task["task_id"] for task in response.json()["tasks"]]
    assert len(set(ids)) == 1000

    def all_done() -> bool:
        answer = main_app.http.post("/status_many", json={"task_ids": ids}).json()["tasks"]
        assert all(task.get("status") != "failure" for task in answer)
        return all(task.get("status") == "success" for task in answer)

    wait_for(all_done, 180, "1000 submitted tasks to succeed")


def test_the_in_cluster_client_has_options_listing_and_progress(control_app: App) -> None:
    client = raytask.get_client("control")
    task = client.steps.options(priority=3, idempotency_key="cluster-key").submit(
        count=5, seconds=0.3
    )
    again = client.steps.options(idempotency_key="cluster-key").submit(count=5, seconds=0.3)
    assert again.id == task.id
    assert task.get_state().priority == 3

    def reported() -> bool:
        state = task.get_state()
        return state.progress is not None and state.status is raytask.TaskStatus.IN_PROGRESS

    wait_for(reported, 30, "progress through the in-cluster client")
    assert task.progress is not None and 0 < (task.progress.fraction or 0) <= 1
    assert task.get(timeout=60) == 5
    newest = next(iter(client.steps.list(limit=1)))
    assert newest.task_id == task.id and newest.status is raytask.TaskStatus.SUCCESS


def test_a_long_poll_get_answers_when_the_task_finishes(main_app: App) -> None:
    task_id = main_app.submit("sleep", {"seconds": 1.0})
    start = time.monotonic()
    response = main_app.http.get("/sleep/get", params={"task_id": task_id, "wait_s": 30})
    took = time.monotonic() - start
    assert response.status_code == 200, response.text
    # (asyncio may wake a timer up to its clock's resolution early: 0.9998 s is a second)
    assert response.json() >= 0.99 and took < 15  # held about a second, not 30
    pending = main_app.submit("block", {"seconds": 30, "tag": "held"})
    start = time.monotonic()
    answer = main_app.http.get("/block/status", params={"task_id": pending, "wait_s": 1})
    assert answer.json()["status"] in ("pending", "in_progress")
    assert time.monotonic() - start >= 0.9  # held for its wait_s, then the current state
    with raytask.SyncHTTPClient(main_app.url) as client:
        assert client.sleep.submit(seconds=0.5).get(timeout=30) >= 0.49
