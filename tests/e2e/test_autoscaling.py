"""Model replicas scale on the task backlog: from zero, up under load, back to zero."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import raytask

from ..support import wait_for
from .conftest import App, Cluster
from .fake_cluster import replica_states

pytestmark = pytest.mark.e2e

AUTOSCALING = {
    "min_replicas": 0,
    "max_replicas": 3,
    "initial_replicas": 0,
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 3,
    "downscale_to_zero_delay_s": 3,
    "metrics_interval_s": 0.5,
    # Serve's default, 10x the delay to zero: without Serve's requests in the policy, the
    # replicas flapped 0, 1, 0, 1 after the last task (Serve's cold-start path; see the policy)
    "look_back_period_s": 30,
    "policy": {
        "policy_function": "raytask.autoscaling:QueueDepthPolicy",
        "policy_kwargs": {"target_tasks_per_replica": 2, "refresh_interval_s": 0.25},
    },
}


def running_replicas(app: str) -> int:
    return replica_states(app).get("RUNNING", 0)


def controller_log() -> str:
    """The Serve controller's log of the session cluster: where the policy logs."""
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    return "".join(path.read_text(errors="replace") for path in logs.glob("controller_*.log"))


@pytest.fixture(scope="module")
def scaled(cluster: Cluster) -> Iterator[App]:
    from ray import serve

    from tests.apps import Demo

    model = Demo.options(max_ongoing_requests=2, autoscaling_config=AUTOSCALING).bind()
    serve.run(raytask.app(model, sweep_interval_s=0.5), name="scaled", route_prefix="/scaled")
    app = App(cluster, "scaled", prefix="/scaled", deployed=True)
    yield app
    app.close()


def test_scale_from_zero_then_up_under_backlog_then_back_to_zero(scaled: App) -> None:
    wait_for(lambda: running_replicas("scaled") == 0, 60, "the app to start with no replica")

    start = time.monotonic()
    first = scaled.submit("sleep", {"seconds": 0.1})
    scaled.wait_status("sleep", first, "success", timeout_s=120)
    from_zero_s = time.monotonic() - start
    assert running_replicas("scaled") >= 1

    # 12 slow tasks, 2 per replica wanted: the policy asks for 6, Serve caps it at 3
    tasks = [scaled.submit("sleep", {"seconds": 3}) for _ in range(12)]
    samples: list[tuple[float, int, int]] = []

    def sample() -> tuple[int, int]:
        replicas, pending = running_replicas("scaled"), scaled.stats()["pending"]
        samples.append((round(time.monotonic() - start, 1), replicas, pending))
        return replicas, pending

    def scaled_up() -> bool:
        replicas, pending = sample()
        return replicas > 1 and pending > 0

    def drained() -> bool:
        sample()
        stats = scaled.stats()
        return stats["pending"] == 0 and stats["in_flight"].get("Demo", 0) == 0

    wait_for(scaled_up, 90, "more than one replica while tasks are queued")
    wait_for(drained, 180, "the backlog to drain")
    for task_id in tasks:
        scaled.wait_status("sleep", task_id, "success", timeout_s=60)
    peak = max(replicas for _, replicas, _ in samples)

    def back_to_zero() -> bool:
        return sample()[0] == 0

    wait_for(back_to_zero, 120, "the idle deployment to scale to zero")
    # and it stays there: Serve's cold-start path brings no replica back (see the policy)
    from_zero = "Upscaling Deployment(name='Demo', app='scaled') from 0"
    upscales_from_zero = controller_log().count(from_zero)
    time.sleep(5)
    assert running_replicas("scaled") == 0
    assert controller_log().count(from_zero) == upscales_from_zero
    print(f"from zero: submit -> success in {from_zero_s:.1f} s; peak {peak} replicas")
    print("t(s), running replicas, pending tasks:", samples[:: max(1, len(samples) // 25)])
    assert 1 < peak <= 3
    # the numbers the policy used are in the controller log
    assert any(
        "raytask autoscaling scaled/Demo:" in line and "replicas wanted" in line
        for line in controller_log().splitlines()
    )
