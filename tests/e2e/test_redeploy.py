"""A redeploy that adds an endpoint, then a task-manager crash, on a real Ray.

Ray restarts a crashed actor with the arguments it was first created with: those of the
first deploy. The manager must come back with the latest deploy's endpoints, settings and
models instead, or every task of the new endpoint fails and its submits answer 500.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import raytask
from tests.apps import Demo

from .conftest import App, Cluster
from .test_durability import kill_manager, submit_with_retries

pytestmark = pytest.mark.e2e


class DemoPlus(Demo.func_or_class):  # type: ignore[misc, name-defined]
    """The demo model of the next release: one task endpoint more."""

    @raytask.task
    def added(self, n: int) -> int:
        """Twice ``n``."""
        return 2 * n


@pytest.fixture(scope="module")
def redeployed(cluster: Cluster) -> Iterator[App]:
    from ray import serve

    app = App(cluster, "redeploy", sweep_interval_s=0.5, max_in_flight=1)  # the first deploy
    model = serve.deployment(name="Demo")(DemoPlus).bind()
    serve.run(raytask.app(model, config=app.settings), name=app.name, route_prefix="/redeploy")
    yield app
    app.close()


def test_a_crash_after_a_redeploy_keeps_the_new_endpoints_tasks(
    redeployed: App, cluster: Cluster
) -> None:
    app = redeployed
    blocker = app.submit("block", {"seconds": 3, "tag": "redeploy-block"})
    app.wait_running("redeploy-block")
    queued = [app.submit("added", {"n": n}) for n in range(4)]  # behind the blocker
    assert all(app.status("added", t)["status"] == "pending" for t in queued)
    kill_manager(app)
    after = submit_with_retries(app, "added", {"n": 10})
    for n, task_id in enumerate(queued):
        state = app.wait_status("added", task_id, "success")
        assert state["error"] is None, state
        assert app.http.get("/added/get", params={"task_id": task_id}).json() == 2 * n
    app.wait_status("added", after, "success")
    app.wait_status("block", blocker, "success", timeout_s=90)
    client = raytask.get_client(app.name)  # in cluster: the models come from the manager
    assert client.added.submit(n=21).get(timeout=60) == 42
    assert app.stats()["capacity"] == {"Demo": 1}  # the settings came back too
