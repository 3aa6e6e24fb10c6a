"""Tenants on a real local Ray + Serve (SPEC 12), through the real HTTP proxy: a tenant
behind another's long backlog is not starved, ``max_running`` holds across two model
replicas, usage survives a manager SIGKILL, and ``/usage`` is each tenant's own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from ray import serve

import raytask
from tests.apps import Demo

from ..support import ROOT, wait_for
from .conftest import App, Cluster
from .test_durability import kill_manager
from .test_readme import run_shell_blocks, shell_blocks

pytestmark = pytest.mark.e2e

TOKENS = {
    "alice": "alice-e2e-tenant-0001",
    "bob": "bob-e2e-tenant-000002",
    "carol": "carol-e2e-tenant-0003",
    "dave": "dave-e2e-tenant-000004",
}
ADMIN = "admin-e2e-tenant-00005"


def readme_config() -> dict[str, Any]:
    """The README's "Sharing a cluster" config."""
    text = (ROOT / "README.md").read_text()
    marker = "<!-- tenants-config -->\n```yaml\n"
    start = text.index(marker) + len(marker)
    return yaml.safe_load(text[start : text.index("```", start)])


@pytest.fixture(scope="module")
def tenants_app(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The README's config, two model replicas, and the tests' tenants (alice may run two
    tasks at once, app-wide)."""
    readme = readme_config()
    config = {
        **readme,
        "api_tokens": {**TOKENS, **readme["api_tokens"]},
        "admin_tokens": [ADMIN, *readme["admin_tokens"]],
        "tenants": {**readme["tenants"], "alice": {"max_running": 2}},
        "journal": str(tmp_path_factory.mktemp("journal") / "j.db"),
        "sweep_interval_s": 0.5,
    }
    serve.run(
        raytask.app(Demo.options(num_replicas=2).bind(), config=config),
        name="tenants",
        route_prefix="/tenants",
    )
    app = App(cluster, "tenants", deployed=True)
    yield app
    app.close()


def client(app: App, tenant: str) -> httpx.Client:
    token = ADMIN if tenant == "admin" else TOKENS[tenant]
    return httpx.Client(base_url=app.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def submit_many(http: httpx.Client, endpoint: str, bodies: list[dict[str, Any]]) -> list[str]:
    response = http.post(f"/{endpoint}/submit_many", json=bodies)
    assert response.status_code == 200, response.text
    return [task["task_id"] for task in response.json()["tasks"]]


def status(http: httpx.Client, endpoint: str, task_id: str) -> dict[str, Any]:
    response = http.get(f"/{endpoint}/status", params={"task_id": task_id})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_tenant_behind_another_tenants_backlog_runs_at_once(tenants_app: App) -> None:
    with client(tenants_app, "bob") as bob, client(tenants_app, "carol") as carol:
        backlog = submit_many(bob, "sleep", [{"seconds": 0.5}] * 1000)
        wait_for(lambda: status(bob, "sleep", backlog[0])["status"] == "success", 60, "bob's first")
        submitted = time.monotonic()
        task_id = carol.post("/sleep/submit", json={"seconds": 0.01}).json()["task_id"]
        first = status(carol, "sleep", task_id)
        # one turn: at most the tasks that share it, never bob's backlog
        assert first["status"] != "pending" or first["queue_position"] <= 1, first
        done = wait_for(
            lambda: (s := status(carol, "sleep", task_id))["status"] == "success" and s,
            30,
            "carol's task",
        )
        waited = time.monotonic() - submitted
        pending = sum(status(bob, "sleep", t)["status"] == "pending" for t in backlog[-100:])
    assert pending == 100, "bob's backlog had drained: the test proved nothing"
    assert waited < 10 and done["queue_s"] < 5, (waited, done)
    with client(tenants_app, "admin") as admin:
        admin.post("/sleep/cancel_many", json={"status": "pending"})


def test_max_running_holds_across_two_replicas_and_others_run_beside(tenants_app: App) -> None:
    with client(tenants_app, "alice") as alice, client(tenants_app, "bob") as bob:
        alices = submit_many(alice, "sleep", [{"seconds": 1.0}] * 6)
        bobs = submit_many(bob, "sleep", [{"seconds": 1.0}] * 4)
        peak = {"alice": 0, "bob": 0}
        stop = threading.Event()

        def watch() -> None:
            with client(tenants_app, "admin") as admin:
                while not stop.is_set():
                    tenants = admin.get("/queue").json()["tenants"]
                    for name in peak:
                        running = tenants.get(name, {}).get("running", 0)
                        peak[name] = max(peak[name], running)
                    time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for http, ids in ((alice, alices), (bob, bobs)):
                for task_id in ids:
                    wait_for(
                        lambda: status(http, "sleep", task_id)["status"] == "success",  # noqa: B023
                        60,
                        "every task",
                    )
        finally:
            stop.set()
            watcher.join()
    assert peak["alice"] == 2, peak  # capped app-wide, though two replicas had room
    assert peak["bob"] >= 3, peak  # bob's ran beside alice's, not behind them


def test_usage_survives_a_manager_sigkill_and_counts_each_task_once(tenants_app: App) -> None:
    with client(tenants_app, "dave") as dave:
        ids = submit_many(dave, "sleep", [{"seconds": 0.5}] * 8)
        wait_for(
            lambda: sum(status(dave, "sleep", t)["status"] == "success" for t in ids) >= 2,
            60,
            "some of dave's tasks to finish",
        )
        kill_manager(tenants_app)

        def finished() -> bool:
            try:
                return all(status(dave, "sleep", t)["status"] == "success" for t in ids)
            except AssertionError:  # a 503 while the manager restarts
                return False

        wait_for(finished, 90, "dave's tasks to finish after the restart")
        rows = dave.get("/usage", params={"group_by": "tenant,endpoint"}).json()["usage"]
    assert [(r["tenant"], r["endpoint"], r["tasks"], r["succeeded"]) for r in rows] == [
        ("dave", "sleep", 8, 8)
    ]
    assert rows[0]["run_s"] >= 8 * 0.5
    kill_manager(tenants_app)  # and once more, with nothing running: the rows come back
    with client(tenants_app, "dave") as dave:
        again = wait_for(
            lambda: (
                (r := dave.get("/usage", params={"group_by": "tenant,endpoint"})).is_success
                and r.json()["usage"]
            ),
            60,
            "usage after the restart",
        )
    assert again == rows


def test_usage_is_each_tenants_own_and_app_wide_numbers_are_the_admins(tenants_app: App) -> None:
    with client(tenants_app, "carol") as carol:
        (task_id,) = submit_many(carol, "noop", [{}])
        wait_for(lambda: status(carol, "noop", task_id)["status"] == "success", 60, "carol's")
        own = carol.get("/usage").json()["usage"]
        assert {r["tenant"] for r in own} == {"carol"}
        assert carol.get("/usage", params={"tenant": "dave"}).status_code == 403
        assert carol.get("/queue").status_code == 403
        assert carol.get("/metrics").status_code == 403
    with client(tenants_app, "admin") as admin:
        everyone = {r["tenant"] for r in admin.get("/usage").json()["usage"]}
        metrics = admin.get("/metrics").text
    assert {"carol"} < everyone
    assert 'raytask_tenant_tasks_total{tenant="carol",endpoint="noop",status="success"}' in (
        metrics
    )


def test_the_readme_curl_example_of_usage_runs_as_written(tenants_app: App) -> None:
    (block,) = shell_blocks("<!-- tenants-curl -->\n```bash\n")
    base, _, prefix = tenants_app.url.removeprefix("http://").partition("/")
    run_shell_blocks([block], f"http://{base}", f"/{prefix}")
