"""``serve run configs/*.yaml``, started as subprocesses the way a user starts them."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from ..support import wait_for
from .seed import check_seed_snippets
from .serve_run import finish_task, run_task, serve_process, serve_run
from .test_clients import check_bentoml_session, run_bentoml_driver
from .test_readme import check_first_screen
from .test_streams import check_live_stream

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


def demo_ttl(ttl_s: float) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        (demo,) = [a for a in config["applications"] if a["name"] == "demo"]
        demo["args"]["task_defaults"]["ttl_s"] = ttl_s

    return edit


def test_serve_run_app_yaml_serves_the_model_and_the_demo(tmp_path: Path) -> None:
    with serve_run("app.yaml", tmp_path, edit=demo_ttl(4321)) as http:
        # first, as a newcomer would on a fresh journal: the README's first screen, as written
        check_first_screen(str(http.base_url))
        (vector,) = run_task(http, "/embed", {"texts": ["serve run works"]})
        assert len(vector) == 384
        result = run_task(http, "/demo/wordcount", {"text": "serve run works, serve run"})
        assert result == {"words": 5, "top": ["run", "serve", "works,"]}
        # the YAML `args` reach raytask.AppConfig: the demo's task TTL is what they say
        state = finish_task(http, "/demo/wordcount", {"text": "kept for 4321 s"})
        kept = datetime.fromisoformat(state["expires_at"]) - datetime.fromisoformat(
            state["completed_at"]
        )
        assert kept.total_seconds() == 4321
        assert http.post("/demo/describe", json={"prompt": "hi"}).status_code == 200
        # the demo holds what a user learns from, and no test's knob
        names = {e["name"] for e in http.get("/demo/").json()["endpoints"]}
        assert names == {
            "describe",
            "wordcount",
            "slow",
            "steps",
            "words",
            "fail",
            "long_running_image_generation",
        }
        assert http.post("/similarity", json={"a": "x", "b": "x"}).json() > 0.99


def test_gpu_config_schedules_on_a_cluster_with_a_fake_gpu(tmp_path: Path) -> None:
    # The local Ray declares one GPU it does not have: the replica is scheduled on it,
    # sees its GPU id, and (no CUDA here) keeps the model on the CPU.
    with serve_run("app-gpu.yaml", tmp_path, env={"RAY_OVERRIDE_RESOURCES": '{"GPU": 1}'}) as http:
        info = http.post("/info", json={}).json()
        assert info["gpu_ids"] == ["0"]
        assert info["device"] == "cpu"
        (vector,) = run_task(http, "/embed", {"texts": ["on a fake GPU"]})
        assert len(vector) == 384


def demo_only(config: dict[str, Any]) -> None:
    """The demo app alone (quick to start), one task at a time so later ones queue."""
    config["applications"] = [a for a in config["applications"] if a["name"] == "demo"]
    config["applications"][0]["route_prefix"] = "/"
    config["applications"][0]["import_path"] = "tests.apps:build"  # with the tests' methods
    config["applications"][0]["args"]["max_in_flight"] = 1


def test_serve_run_stopped_and_started_again_keeps_every_task(tmp_path: Path) -> None:
    with serve_run("app.yaml", tmp_path, edit=demo_only) as http:
        batch = start_batch(http, 30)  # a batch job (SPEC 11), stopped mid-job below
        done = finish_task(http, "/wordcount", {"text": "kept across restarts"})
        ids = []
        for body in ({"seconds": 30, "tag": "cut"}, {"seconds": 0.1}):  # running, then queued
            response = http.post("/block/submit", json=body)
            assert response.status_code == 200, response.text
            ids.append(response.json()["task_id"])
        queued = http.get("/block/status", params={"task_id": ids[1]}).json()
        assert queued["status"] == "pending"
    # Ctrl-C stopped serve run and its local Ray; the same journal (RAYTASK_HOME) serves again.
    with serve_run("app.yaml", tmp_path, edit=demo_only) as http:
        state = http.get("/wordcount/status", params={"task_id": done["task_id"]}).json()
        assert state["status"] == "success" and state["attempts"] == 1  # not run again
        result = http.get("/wordcount/get", params={"task_id": done["task_id"]}).json()
        assert result == {"words": 3, "top": ["across", "kept", "restarts"]}
        # The running one was cut short (by its replica stopping first, or by the
        # manager's end): it runs again, each cut counted as an attempt.
        cut = http.get("/block/status", params={"task_id": ids[0]}).json()
        assert cut["status"] in ("pending", "in_progress") and 1 <= cut["attempts"] <= 3, cut
        assert cut["error"], cut
        http.post("/block/cancel", params={"task_id": ids[0]})  # no 30 s wait
        for task_id in ids[1:]:

            def finished(task_id: str = task_id) -> bool:
                answer = http.get("/block/status", params={"task_id": task_id}).json()
                return answer["status"] == "success"

            wait_for(finished, 60, "the queued task to run after the restart")
        # The batch job goes on from its last commit: every line in its output once.
        job = wait_for(lambda: batch_ended(http, batch), 120, "the batch job to end")
        assert job["status"] == "completed", job
        assert job["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
        output = http.get(f"/v1/files/{job['output_file_id']}/content").text.splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in output) == sorted(
            f"line{i}" for i in range(30)
        )


def start_batch(http: httpx.Client, lines: int) -> str:
    """Upload a job of ``lines`` short ``block`` calls, start it, and return once a few
    lines have finished (so the job is mid-way)."""
    text = "".join(
        json.dumps(
            {
                "custom_id": f"line{i}",
                "method": "POST",
                "url": "/block",
                "body": {"seconds": 0.2, "tag": f"line{i}"},
            }
        )
        + "\n"
        for i in range(lines)
    )
    files = {"file": ("job.jsonl", text.encode())}
    uploaded = http.post("/v1/files", files=files, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    created = http.post(
        "/v1/batches", json={"input_file_id": uploaded.json()["id"], "endpoint": "/block"}
    )
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]

    def some_done() -> bool:
        counts = http.get(f"/v1/batches/{batch_id}").json()["request_counts"]
        return 3 <= counts["completed"] < lines

    wait_for(some_done, 60, "a few lines of the batch job to finish")
    return batch_id


def batch_ended(http: httpx.Client, batch_id: str) -> dict[str, Any] | None:
    job = http.get(f"/v1/batches/{batch_id}").json()
    return job if job["status"] in ("completed", "failed", "cancelled", "expired") else None


def test_make_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    # `make run` is serve run under raytask's launcher: `kill`, `docker stop` and systemd send
    # SIGTERM, which used to print Ray's native stack dump ("*** SIGTERM received") and could
    # leave Ray's processes behind. Now it is serve run's own Ctrl-C shutdown.
    with serve_process("app.yaml", tmp_path, edit=demo_only, launcher=True) as (
        process,
        http,
        log,
    ):
        assert run_task(http, "/wordcount", {"text": "one two two"})["words"] == 3
        family = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(child.name() for child in family)
        assert "raylet" in names and "gcs_server" in names, names
        port = http.base_url.port
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(120) == 0, log.read_text()[-3000:]

            def all_gone() -> bool:
                return not [p for p in family if p.is_running() and p.status() != "zombie"]

            wait_for(all_gone, 30, "every Ray process serve run started to exit")
        finally:
            for child in family:  # only if the test failed: never leave them running
                with contextlib.suppress(psutil.Error):
                    child.kill()
    output = log.read_text()
    assert "shutting down" in output
    assert "SIGTERM received" not in output and "*** " not in output, output[-3000:]
    with socket.socket() as probe:  # no one listens on the port (closed connections may linger)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_the_haproxy_ingress_serves_the_app_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # Ray 2.60's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1): HAProxy holds the port and
    # sends requests straight to the ingress replicas. The seed's snippets, BentoML's own
    # client and the protocol work through it; SIGTERM leaves no HAProxy holding the port.
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    with serve_process("app.yaml", tmp_path, env=env, edit=demo_only, launcher=True) as (
        process,
        http,
        log,
    ):
        port = http.base_url.port
        (listener,) = {
            psutil.Process(c.pid).name()
            for c in psutil.net_connections("tcp")
            if c.status == "LISTEN" and c.laddr.port == port and c.pid
        }
        assert listener == "haproxy"
        url = str(http.base_url).rstrip("/")
        check_seed_snippets(url)
        check_bentoml_session(run_bentoml_driver(url))
        check_protocol(http)
        check_live_stream(http)  # HAProxy passes each chunk on as it comes (no buffering)
        # the launcher said where the app is, once it answered
        wait_for(lambda: "raytask: all 1 apps ready" in log.read_text(), 30, "the ready line")
        ready = next(line for line in log.read_text().splitlines() if "raytask: ready:" in line)
        assert f"demo at {url}/ (endpoints: " in ready and "wordcount" in ready
        assert f"dashboard {url}/dashboard, API {url}/docs" in ready
        family = psutil.Process(process.pid).children(recursive=True)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0, log.read_text()[-3000:]
        stop_s = time.monotonic() - start
    # Serve held the HAProxy ingress replica 30 s to drain (and warned); locally it is 0.5 s
    output = log.read_text()
    assert stop_s < 10, (stop_s, output[-3000:])
    after = output[output.index("raytask: stopping (up to 60 s") :]
    assert "WARNING" not in after and "failed to shut down" not in after, after
    assert f"raytask: stopped; port {port} free" in after
    wait_for(
        lambda: not [p for p in family if p.is_running() and p.status() != "zombie"], 30, "exit"
    )
    assert not [
        c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
    ]


def check_protocol(http: httpx.Client) -> None:
    """The wire protocol's answers, briefly: submit, status, get, cancel, retry, errors."""
    done = finish_task(http, "/wordcount", {"text": "through haproxy"})
    assert http.get("/wordcount/get", params={"task_id": done["task_id"]}).json()["words"] == 2
    long = http.post("/block/submit", json={"seconds": 30}).json()["task_id"]
    assert http.put("/block/cancel", params={"task_id": long}).json()["status"] == "cancelled"
    got = http.get("/block/get", params={"task_id": long})
    assert got.status_code == 409 and got.json()["code"] == "task_cancelled"
    again = http.post("/block/retry", params={"task_id": long}).json()
    assert again["task_id"] != long and again["status"] in ("pending", "in_progress")
    http.post("/block/cancel", params={"task_id": again["task_id"]})
    assert http.get("/wordcount/status", params={"task_id": "f" * 32}).status_code == 404
    bad = http.post("/wordcount/submit", json={"text": 5})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/json"
    waited = http.get(
        "/sleep/get",
        params={
            "task_id": http.post("/sleep/submit", json={"seconds": 0.3}).json()["task_id"],
            "wait_s": 30,
        },
    )
    assert waited.status_code == 200
