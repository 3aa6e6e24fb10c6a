"""The backlog policy's arithmetic with a fake manager: no Ray."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from raytask.autoscaling import QueueDepthPolicy, desired_replicas


@pytest.mark.parametrize(
    ("pending", "in_flight", "target", "want"),
    [
        (0, 0, 4, 0),  # no work: scale to zero (Serve applies min_replicas and delays)
        (1, 0, 4, 1),  # the first task brings a replica up
        (4, 0, 4, 1),
        (5, 0, 4, 2),
        (30, 10, 4, 10),
        (0, 3, 4, 1),  # in-flight work keeps its replica
        (7, 0, 2.5, 3),
    ],
)
def test_desired_replicas(pending: int, in_flight: int, target: float, want: int) -> None:
    assert desired_replicas(pending, in_flight, target) == want


@pytest.mark.parametrize(
    ("pending", "in_flight", "serve_requests", "want"),
    [
        (0, 0, 0.0, 0),
        (0, 0, 0.2, 1),  # direct calls alone keep a replica (Serve's average decays to 0)
        (0, 0, 9.0, 3),  # a busy synchronous endpoint scales too
        (8, 4, 4.0, 3),  # dispatched tasks are in both counts: not added twice
        (8, 4, 7.5, 4),  # tasks in flight plus direct calls
    ],
)
def test_desired_replicas_counts_serve_requests_once(
    pending: int, in_flight: int, serve_requests: float, want: int
) -> None:
    assert desired_replicas(pending, in_flight, 4, serve_requests) == want


class FakeManagerPolicy(QueueDepthPolicy):
    def __init__(self, depths: dict[str, dict[str, int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depths = depths
        self._thread = object()  # type: ignore[assignment]  # no background thread in tests

    def _fetch(self, app_name: str) -> dict[str, dict[str, int]]:
        return self.depths


def ctx(target: int = 1, deployment: str = "Model", requests: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(
        app_name="app",
        deployment_name=deployment,
        target_num_replicas=target,
        total_num_requests=requests,
        policy_state={},
    )


def test_policy_scales_on_pending_plus_in_flight() -> None:
    policy = FakeManagerPolicy(
        {"Model": {"pending": 9, "in_flight": 3}}, target_tasks_per_replica=4
    )
    policy.refresh_once("app")
    replicas, state = policy(ctx())
    assert replicas == 3
    assert state == {
        "raytask_pending": 9,
        "raytask_in_flight": 3,
        "raytask_serve_requests": 0.0,
        "raytask_desired": 3,
    }
    # 6 requests at Serve (3 of them the dispatched tasks): 9 + 6 = 15 -> 4 replicas
    assert policy(ctx(requests=6.0))[0] == 4


def test_policy_reads_its_own_deployment() -> None:
    policy = FakeManagerPolicy(
        {"A": {"pending": 40, "in_flight": 0}, "B": {"pending": 0, "in_flight": 0}},
        target_tasks_per_replica=10,
    )
    policy.refresh_once("app")
    assert policy(ctx(deployment="A"))[0] == 4
    assert policy(ctx(deployment="B"))[0] == 0


def test_without_a_fresh_reading_the_policy_keeps_the_target() -> None:
    policy = FakeManagerPolicy({"Model": {"pending": 100, "in_flight": 0}}, stale_after_s=5)
    assert policy(ctx(target=2)) == (2, {"raytask_depth": "unknown"})
    policy.refresh_once("app")
    assert policy(ctx(target=2))[0] == 25
    policy._depths["Model"] = policy._depths["Model"].__class__(100, 0, time.time() - 60)
    assert policy(ctx(target=2))[0] == 2


def test_bad_target_is_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        QueueDepthPolicy(target_tasks_per_replica=0)


def test_the_policy_never_blocks_the_controller_loop() -> None:
    """Serve calls the policy in its controller's event loop: a manager that hangs must not
    hang the call. The depth is read by a background thread; the policy reads a cache."""
    release = threading.Event()

    class HangingManager(QueueDepthPolicy):
        def _fetch(self, app_name: str) -> dict[str, dict[str, int]]:
            release.wait(30)  # a manager that does not answer
            return {"Model": {"pending": 8, "in_flight": 0}}

    policy = HangingManager(target_tasks_per_replica=4, refresh_interval_s=0.05)
    try:
        started = time.monotonic()
        for _ in range(20):
            assert policy(ctx(target=1)) == (1, {"raytask_depth": "unknown"})
        assert time.monotonic() - started < 5  # 20 calls, each far from the 30 s hang
        release.set()  # the manager answers: the next calls see its numbers
        deadline = time.monotonic() + 10
        while policy(ctx(target=1))[0] != 2:
            assert time.monotonic() < deadline, "the background read never landed"
            time.sleep(0.01)
    finally:
        release.set()
