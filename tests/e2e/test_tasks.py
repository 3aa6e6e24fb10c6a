"""The task lifecycle on a real local Ray + Serve, through the real HTTP proxy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal

import httpx
import pytest

import raytask

from ..support import wait_for
from .conftest import App, Cluster, rss_bytes

pytestmark = pytest.mark.e2e


def pattern(size_mb: float) -> bytes:
    size = int(size_mb * 1024 * 1024)
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def test_submit_success_get(main_app: App) -> None:
    task_id = main_app.submit("wordcount", {"text": "to be or not to be", "top": 2})
    state = main_app.wait_status("wordcount", task_id, "success")
    assert state["attempts"] == 1 and state["completed_at"] >= state["created_at"]
    response = main_app.http.get("/wordcount/get", params={"task_id": task_id})
    assert response.status_code == 200
    assert response.json() == {"words": 6, "top": ["be", "to"]}


def test_async_method_task(main_app: App) -> None:
    task_id = main_app.submit("sleep", {"seconds": 0.2})
    main_app.wait_status("sleep", task_id, "success")
    assert main_app.http.get("/sleep/get", params={"task_id": task_id}).json() >= 0.19


def test_exception_is_failure_and_get_500(main_app: App) -> None:
    task_id = main_app.submit("fail", {"message": "model exploded"})
    state = main_app.wait_status("fail", task_id, "failure")
    assert state["error"] == "ValueError: model exploded" and state["attempts"] == 1
    response = main_app.http.get("/fail/get", params={"task_id": task_id})
    assert response.status_code == 500
    assert "ValueError: model exploded" in response.json()["error"]


def test_retry_new_id_same_inputs_original_untouched(main_app: App) -> None:
    original = main_app.submit("fail", {"message": "again"})
    main_app.wait_status("fail", original, "failure")
    response = main_app.http.post("/fail/retry", params={"task_id": original})
    assert response.status_code == 200
    new = response.json()["task_id"]
    assert new != original
    state = main_app.wait_status("fail", new, "failure")
    assert state["error"] == "ValueError: again" and state["retry_of"] == original
    assert main_app.status("fail", original)["status"] == "failure"


def test_short_ttl_then_410(main_app: App) -> None:
    task_id = main_app.submit("wordcount", {"text": "brief"}, ttl_s=1)
    seen = []

    def gone() -> bool:
        # Any legal state on the way (it may finish and expire between two polls), then 410:
        # only a finished task has a TTL, so a 410 also says it finished.
        response = main_app.http.get("/wordcount/status", params={"task_id": task_id})
        if response.status_code == 410:
            return True
        assert response.status_code == 200, response.text
        seen.append(response.json()["status"])
        assert seen[-1] in ("pending", "in_progress", "success"), seen
        return False

    wait_for(gone, 30, "the result to expire")
    response = main_app.http.get("/wordcount/get", params={"task_id": task_id})
    assert response.status_code == 410 and "expired" in response.json()["error"]


def test_unknown_id_is_404(main_app: App) -> None:
    response = main_app.http.get("/wordcount/status", params={"task_id": "0" * 32})
    assert response.status_code == 404 and "not found" in response.json()["error"]


def test_bad_input_is_422_and_nothing_is_queued(main_app: App) -> None:
    before = main_app.stats()["counts"]
    for body in ({"text": 12}, {"txt": "typo"}, {}):
        response = main_app.http.post("/wordcount/submit", json=body)
        assert response.status_code == 422 and response.json()["detail"]
    response = main_app.http.post(
        "/wordcount/submit", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert main_app.stats()["counts"] == before


def test_sync_endpoint_and_schema(main_app: App) -> None:
    response = main_app.http.post("/describe", json={"prompt": "hello world"})
    assert response.status_code == 200 and response.text.startswith("2 words")
    response = main_app.http.post("/fail", json={"message": "now"})
    assert response.status_code == 500 and "ValueError: now" in response.json()["error"]
    routes = {r["name"]: r for r in main_app.http.get("/schema.json").json()["routes"]}
    assert routes["wordcount"]["route"] == "/main/wordcount" and routes["wordcount"]["is_task"]
    assert main_app.http.get("/readyz").status_code == 200


def test_cancel_queued_and_running(small_app: App) -> None:
    running = small_app.submit("block", {"seconds": 60, "tag": "running"})
    small_app.wait_running("running")
    queued = small_app.submit("noop")
    assert small_app.status("noop", queued)["status"] == "pending"

    response = small_app.http.post("/noop/cancel", params={"task_id": queued})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    response = small_app.http.put("/block/cancel", params={"task_id": running})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    # the replica's thread really stops, long before its 60 s, and never reaches its end
    small_app.wait_stopped("running")
    assert small_app.status("block", running)["status"] == "cancelled"
    queued_state = small_app.status("noop", queued)
    assert queued_state["status"] == "cancelled" and queued_state["attempts"] == 0  # never ran
    assert small_app.http.get("/block/get", params={"task_id": running}).status_code == 409
    # the slot is free again: the next task runs
    after = small_app.submit("noop")
    small_app.wait_status("noop", after, "success", timeout_s=30)


def test_cancel_a_running_async_task_stops_it(main_app: App) -> None:
    task_id = main_app.submit("nap", {"seconds": 60, "tag": "async-http"})
    main_app.wait_running("async-http")
    response = main_app.http.post("/nap/cancel", params={"task_id": task_id})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    main_app.wait_stopped("async-http")  # at its next await, not after 60 s
    assert main_app.http.get("/nap/get", params={"task_id": task_id}).status_code == 409


def test_a_task_of_a_batch_is_cancelled_alone(main_app: App) -> None:
    before = main_app.stats()["dispatched"]
    inputs = [{"seconds": s, "tag": f"batch-{tag}"} for tag, s in (("a", 2), ("b", 60), ("c", 2))]
    response = main_app.http.post("/nap/submit_many", json=inputs)
    assert response.status_code == 200, response.text
    first, middle, last = (task["task_id"] for task in response.json()["tasks"])
    for tag in "abc":
        main_app.wait_running(f"batch-{tag}")
    after = main_app.stats()["dispatched"]
    assert (after["batches"] - before["batches"], after["attempts"] - before["attempts"]) == (1, 3)

    response = main_app.http.post("/nap/cancel", params={"task_id": middle})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    main_app.wait_stopped("batch-b")  # stopped on the replica, long before its 60 s
    assert {"batch-a", "batch-c"} <= set(main_app.work()["running"])  # the others run on
    for task_id in (first, last):
        main_app.wait_status("nap", task_id, "success", timeout_s=30)
    assert main_app.status("nap", middle)["status"] == "cancelled"


def test_queue_full_is_429(small_app: App) -> None:
    running = small_app.submit("block", {"seconds": 60})
    small_app.wait_status("block", running, "in_progress")
    queued = [small_app.submit("noop") for _ in range(2)]

    # Five submits at once for the one place left: the ingress joins concurrent submits
    # into one manager call, and each answer must still be its own.
    async def five() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=small_app.url, timeout=30) as http:
            return await asyncio.gather(*(http.post("/noop/submit", json={}) for _ in range(5)))

    answers = asyncio.run(five())
    assert sorted(r.status_code for r in answers) == [200, 429, 429, 429, 429]
    queued += [r.json()["task_id"] for r in answers if r.status_code == 200]
    response = small_app.http.post("/noop/submit", json={})
    assert response.status_code == 429 and "queue is full" in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1
    assert small_app.stats()["pending"] == 3
    client = raytask.get_client("small")
    with pytest.raises(raytask.QueueFullError):
        client.noop.submit_many([{}, {}])
    assert small_app.stats()["pending"] == 3
    # queued first: cancelling the running one frees the slot for them
    for name, task_id in [*(("noop", t) for t in queued), ("block", running)]:
        response = small_app.http.post(f"/{name}/cancel", params={"task_id": task_id})
        assert response.status_code == 200, (small_app.status(name, task_id), small_app.stats())


def test_replica_killed_mid_task_is_requeued_and_completes(small_app: App) -> None:
    pid = small_app.http.post("/pid", json={}).json()
    task_id = small_app.submit("block", {"seconds": 3, "tag": "killed"})
    small_app.wait_running("killed")  # this task, not one an earlier test left behind
    os.kill(pid, signal.SIGKILL)
    state = small_app.wait_status("block", task_id, "success", timeout_s=120)
    assert state["attempts"] == 2, state
    assert small_app.http.post("/pid", json={}).json() != pid


def test_large_result_intact_and_manager_rss_flat(main_app: App) -> None:
    manager_pid = main_app.stats()["pid"]
    warm = main_app.submit("blob", {"size_mb": 1})
    main_app.wait_status("blob", warm, "success")
    before = rss_bytes(manager_pid)
    task_id = main_app.submit("blob", {"size_mb": 50})
    main_app.wait_status("blob", task_id, "success")
    response = main_app.http.get("/blob/get", params={"task_id": task_id})
    after = rss_bytes(manager_pid)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(pattern(50)).digest()
    growth = after - before
    print(
        f"manager RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (+{growth / 2**20:.2f})"
    )
    assert growth < 10 * 2**20, f"manager RSS grew by {growth / 2**20:.1f} MiB for a 50 MiB result"


def test_results_larger_than_the_object_store_are_all_retrievable(
    main_app: App, cluster: Cluster
) -> None:
    from .conftest import OBJECT_STORE_BYTES

    size_mb, count = 40, 5
    assert size_mb * count * 2**20 > OBJECT_STORE_BYTES
    task_ids = [main_app.submit("blob", {"size_mb": size_mb}) for _ in range(count)]
    for task_id in task_ids:
        main_app.wait_status("blob", task_id, "success", timeout_s=120)
    expected = hashlib.sha256(pattern(size_mb)).digest()
    for task_id in task_ids:
        response = main_app.http.get("/blob/get", params={"task_id": task_id})
        assert response.status_code == 200
        assert hashlib.sha256(response.content).digest() == expected
    spilled = [p for p in cluster.spill_dir.rglob("*") if p.is_file()]
    assert spilled, "nothing was spilled although the results exceed the object store"


def test_timeout_fails_the_task_and_stops_it(main_app: App) -> None:
    body = {"seconds": 60, "tag": "timed-out"}
    task_id = main_app.submit("block", body, timeout_s=3, max_attempts=1)
    main_app.wait_running("timed-out")
    state = main_app.wait_status("block", task_id, "failure", timeout_s=30)
    assert "timed out after 3 s" in state["error"] and state["attempts"] == 1
    main_app.wait_stopped("timed-out")


def test_timeout_is_retried_while_attempts_remain(main_app: App) -> None:
    task_id = main_app.submit("block", {"seconds": 60}, timeout_s=1, max_attempts=2)
    state = main_app.wait_status("block", task_id, "failure", timeout_s=30)
    assert state["attempts"] == 2
    assert state["error"] == "timed out after 1 s (gave up after 2 attempts)"


def test_queue_and_metrics_on_a_real_cluster(main_app: App) -> None:
    task_id = main_app.submit("wordcount", {"text": "counted"})
    main_app.wait_status("wordcount", task_id, "success")
    queue = main_app.http.get("/queue").json()
    assert queue["app"] == "main" and queue["endpoints"]["wordcount"]["success"] >= 1
    assert queue["deployments"]["Demo"]["limit"] >= 1
    text = main_app.http.get("/metrics").text
    assert 'raytask_tasks{app="main",endpoint="wordcount",status="success"}' in text
    # the manager's background loops are still alive: a new task is dispatched and done
    after = main_app.submit("noop")
    main_app.wait_status("noop", after, "success")


def test_queue_numbers_reach_rays_prometheus_export(main_app: App) -> None:
    # The manager's ray.util.metrics gauges, as Ray's metrics agent exports them (prefix ray_)
    import ray

    task_id = main_app.submit("wordcount", {"text": "exported"})
    main_app.wait_status("wordcount", task_id, "success")
    port = ray.nodes()[0]["MetricsExportPort"]

    def exported() -> list[str]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return [
            line
            for line in text.splitlines()
            if line.startswith("ray_raytask_tasks{")
            and 'app="main"' in line
            and 'endpoint="wordcount"' in line
            and 'status="success"' in line
            and float(line.rsplit(" ", 1)[1]) >= 1
        ]

    # Ray's agent exports about every 10 s
    assert wait_for(exported, 90, "raytask_tasks in Ray's Prometheus export")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "ray_raytask_oldest_pending_age_seconds{" in text
    assert "ray_raytask_in_flight{" in text
