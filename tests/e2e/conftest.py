"""End to end on a real local Ray + Serve: one cluster for the whole test session.

The cluster is started with ``ray.init`` by this process, so ``ray.shutdown`` stops
exactly the processes it started. Its object store is kept small (150 MB) so the
large-result tests make Ray spill to a directory of the test session.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")
OBJECT_STORE_BYTES = 150 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T], timeout_s: float = 60, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that start their own Ray (as a user would) run before the session cluster.
    items.sort(key=lambda item: 0 if item.get_closest_marker("own_cluster") else 1)


@dataclass
class Cluster:
    url: str
    spill_dir: Path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import ray
    from ray import serve

    spill_dir = tmp_path_factory.mktemp("spill")
    port = free_port()
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        object_spilling_directory=str(spill_dir),
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield Cluster(url=f"http://127.0.0.1:{port}", spill_dir=spill_dir)
    finally:
        serve.shutdown()
        ray.shutdown()


def deploy(cluster: Cluster, name: str, prefix: str, **settings: Any) -> str:
    """Deploy the demo app as ``name`` at ``prefix`` and return its base URL."""
    from ray import serve

    from deployments.demo import build

    serve.run(build(settings), name=name, route_prefix=prefix)
    return f"{cluster.url}{prefix}".rstrip("/")


class App:
    """A deployed demo app: an HTTP client on it and its manager actor."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        prefix: str | None = None,
        deployed: bool = False,
        **settings: Any,
    ) -> None:
        """Deploy the demo app with raytask ``settings`` (or, with ``deployed``, attach
        to an app the caller deployed itself)."""
        import ray

        from raytask.core.names import NAMESPACE, manager_name

        self.name = name
        prefix = prefix or f"/{name}"
        self.url = (
            f"{cluster.url}{prefix}" if deployed else deploy(cluster, name, prefix, **settings)
        )
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.manager = ray.get_actor(manager_name(name), namespace=NAMESPACE)

    def stats(self) -> dict[str, Any]:
        import ray

        return ray.get(self.manager.stats.remote())

    def submit(self, endpoint: str, body: dict[str, Any] | None = None, **params: Any) -> str:
        response = self.http.post(f"/{endpoint}/submit", json=body or {}, params=params)
        assert response.status_code == 200, response.text
        return response.json()["task_id"]

    def status(self, endpoint: str, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/{endpoint}/status", params={"task_id": task_id})
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(
        self, endpoint: str, task_id: str, want: str, timeout_s: float = 60
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            state = self.status(endpoint, task_id)
            return state if state["status"] == want else None

        return wait_for(probe, timeout_s, f"task {task_id} to be {want}")

    def close(self) -> None:
        from ray import serve

        self.http.close()
        serve.delete(self.name)


@pytest.fixture(scope="session")
def main_app(cluster: Cluster) -> Iterator[App]:
    app = App(cluster, "main", sweep_interval_s=0.5)
    yield app
    app.close()


@pytest.fixture(scope="session")
def small_app(cluster: Cluster) -> Iterator[App]:
    """One task at a time and a queue of three: for cancel, 429 and replica death."""
    app = App(cluster, "small", sweep_interval_s=0.5, max_in_flight=1, max_queue_size=3)
    yield app
    app.close()


@pytest.fixture(scope="session")
def root_app(cluster: Cluster) -> Iterator[App]:
    """The demo app at ``/``, as the seed page's snippets and BentoML's client expect."""
    app = App(cluster, "root", prefix="/")
    yield app
    app.close()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


os.environ.setdefault("RAY_AUTH_MODE", "disabled")
