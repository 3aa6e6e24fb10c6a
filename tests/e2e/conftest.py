"""End to end on a real local Ray + Serve: one cluster for the whole test session.

The cluster is started with ``ray.init`` by this process, so ``ray.shutdown`` stops
exactly the processes it started. Its object store is kept small (150 MB) so the
large-result tests make Ray spill to a directory of the test session.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ..support import free_port, wait_for

T = TypeVar("T")
OBJECT_STORE_BYTES = 150 * 1024 * 1024


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
    _start_serve(port)
    try:
        yield Cluster(url=f"http://127.0.0.1:{port}", spill_dir=spill_dir)
    finally:
        serve.shutdown()
        ray.shutdown()


def _start_serve(port: int, tries: int = 3) -> None:
    """``serve.start``, tried again when its proxy did not start in time: on a machine busy
    with other work a new worker process can take longer than Serve's fixed 60 s wait, and
    Serve then kills the proxy (the test suite must pass beside a CPU hog)."""
    import ray
    from ray import serve

    for attempt in range(1, tries + 1):
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            return
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            if attempt == tries:
                raise
            print(f"serve.start: the proxy did not start ({type(exc).__name__}); again")


def deploy(cluster: Cluster, name: str, prefix: str, **settings: Any) -> str:
    """Deploy the demo app as ``name`` at ``prefix`` and return its base URL."""
    from ray import serve

    from tests.apps import build

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
        self.settings = settings
        prefix = prefix or f"/{name}"
        # Its own journal, which no other test reads.
        settings.setdefault(
            "journal", str(Path(tempfile.mkdtemp(prefix=f"journal-{name}-")) / "j.db")
        )
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

    def work(self) -> dict[str, list[str]]:
        """The demo replica's tagged ``block``/``nap`` calls: running now, and finished."""
        response = self.http.post("/work", json={})
        assert response.status_code == 200, response.text
        return response.json()

    def wait_running(self, tag: str, timeout_s: float = 30) -> None:
        """Wait until the call tagged ``tag`` runs on the replica."""
        wait_for(lambda: tag in self.work()["running"], timeout_s, f"{tag} to run")

    def wait_stopped(self, tag: str, timeout_s: float = 20) -> None:
        """Wait until the call tagged ``tag`` stopped on the replica; it must not have run
        to its end (a cancel that only changed the status would fail here)."""
        wait_for(lambda: tag not in self.work()["running"], timeout_s, f"{tag} to stop")
        assert tag not in self.work()["finished"], f"{tag} ran to its end: it was not stopped"

    def clean(self, timeout_s: float = 60) -> None:
        """Cancel every unfinished task and wait until nothing runs, so that what one test
        leaves behind cannot reach the next."""
        import ray

        ray.get(self.manager.cancel_many.remote(None, None, ["pending", "in_progress"]))

        def idle() -> bool:
            stats = self.stats()
            return (
                stats["pending"] == 0
                and not any(stats["in_flight"].values())
                and not self.work()["running"]
                and self.http.post("/blocking", json={}).json() == 0
            )

        wait_for(idle, timeout_s, f"app {self.name} to be idle")

    def close(self) -> None:
        from ray import serve

        self.http.close()
        serve.delete(self.name)


SHARED_APPS = ("main_app", "small_app", "root_app")


@pytest.fixture(autouse=True)
def _leave_shared_apps_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, the shared apps it used are idle again (nothing queued or running)."""
    yield
    for name in SHARED_APPS:
        if name in request.fixturenames:
            request.getfixturevalue(name).clean()


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
