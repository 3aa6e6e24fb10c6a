"""``serve run configs/*.yaml``, started as subprocesses the way a user starts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from .serve_run import run_task, serve_run

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


def test_serve_run_app_yaml_serves_the_model_and_the_demo(tmp_path: Path) -> None:
    with serve_run("app.yaml", tmp_path) as http:
        (vector,) = run_task(http, "/embed", {"texts": ["serve run works"]})
        assert len(vector) == 384
        result = run_task(http, "/demo/wordcount", {"text": "serve run works, serve run"})
        assert result == {"words": 5, "top": ["run", "serve", "works,"]}
        assert http.post("/demo/describe", json={"prompt": "hi"}).status_code == 200
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
