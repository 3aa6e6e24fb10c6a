"""``serve run configs/app.yaml``, started as a subprocess the way a user starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


def test_serve_run_config_serves_tasks(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "configs" / "app.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port  # the only change: a free port
    config_path = tmp_path / "app.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "serve-run.log"
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled"}
    serve_cli = Path(sys.executable).parent / "serve"
    with open(log_path, "wb") as log:
        # A new session, so that everything this `serve run` starts can be stopped together.
        process = subprocess.Popen(
            [str(serve_cli), "run", str(config_path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as http:

            def ready() -> bool:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, 240, "serve run to become ready")
            response = http.post("/wordcount/submit", json={"text": "serve run works, serve run"})
            assert response.status_code == 200, response.text
            task_id = response.json()["task_id"]
            wait_for(
                lambda: (
                    http.get("/wordcount/status", params={"task_id": task_id}).json()["status"]
                    == "success"
                ),
                60,
                "the task to succeed",
            )
            result = http.get("/wordcount/get", params={"task_id": task_id}).json()
            assert result == {"words": 5, "top": ["run", "serve", "works,"]}
            assert http.post("/describe", json={"prompt": "hi"}).status_code == 200
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (serve run shuts Serve and its local Ray down), then SIGKILL its group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)
