"""Run ``serve run CONFIG`` as a user would: a subprocess that starts its own local Ray."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from ..support import ROOT, free_port, wait_for


@contextlib.contextmanager
def serve_run(
    config_name: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[httpx.Client]:
    """``serve run configs/CONFIG_NAME`` on a free loopback port; yields a client on it.

    The config changes only in its HTTP host and port, and in what ``edit`` (given the
    parsed YAML) changes. Everything the subprocess starts is in its own process session
    and is stopped with it.
    """
    with serve_process(config_name, tmp_path, env, edit) as (_process, http, _log):
        yield http


@contextlib.contextmanager
def serve_process(
    config_name: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    launcher: bool = False,
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    """`serve_run`, yielding the process and its log too; with ``launcher``, as `make run` does."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "configs" / config_name).read_text())
    if edit is not None:
        edit(config)
    port = free_port()
    config["http_options"].update(host="127.0.0.1", port=port)
    config_path = tmp_path / config_name
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"{config_name}.log"
    full_env = {
        **os.environ,
        "RAY_ADDRESS": "local",
        "RAY_AUTH_MODE": "disabled",
        "RAYTASK_HOME": str(tmp_path / "raytask-home"),  # this test's own journals
        **(env or {}),
    }
    if launcher:
        command = [sys.executable, "-m", "raytask.server.launcher", str(config_path)]
    else:
        command = [str(Path(sys.executable).parent / "serve"), "run", str(config_path)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            def ready() -> bool:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, 300, f"serve run {config_name} to become ready")
            yield process, http, log_path
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
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


def run_task(http: httpx.Client, route: str, body: dict[str, Any], timeout_s: float = 120) -> Any:
    """Submit, wait for success, and return the result of one task."""
    return http.get(
        f"{route}/get", params={"task_id": finish_task(http, route, body, timeout_s)["task_id"]}
    ).json()


def finish_task(
    http: httpx.Client, route: str, body: dict[str, Any], timeout_s: float = 120
) -> dict[str, Any]:
    """Submit one task, wait for its success, and return its status answer."""
    response = http.post(f"{route}/submit", json=body)
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]

    def succeeded() -> dict[str, Any] | None:
        state = http.get(f"{route}/status", params={"task_id": task_id}).json()
        assert state["status"] != "failure", state
        return state if state["status"] == "success" else None

    return wait_for(succeeded, timeout_s, f"task {task_id} to succeed")
