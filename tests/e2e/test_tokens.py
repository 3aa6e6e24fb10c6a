"""API tokens on a real local Ray + Serve, through the real HTTP proxy."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import raytask

from ..support import wait_for
from .conftest import App, Cluster

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice-e2e-token-0001", "bob-e2e-token-00002"


@pytest.fixture(scope="module")
def tokens_app(cluster: Cluster) -> Iterator[App]:
    app = App(cluster, "tokens", api_tokens=[ALICE, BOB], token_isolation=True)
    yield app
    app.close()


def client(app: App, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=app.url, headers=headers, timeout=60)


def test_every_protected_route_answers_401_without_a_token(tokens_app: App) -> None:
    with client(tokens_app, ALICE) as alice, client(tokens_app, None) as anyone:
        document = alice.get("/openapi.json").json()
        prefix = "/tokens"
        checked = 0
        for path, operations in document["paths"].items():
            route = path.removeprefix(prefix).replace("{name}", "wordcount") or "/"
            route = route.replace("{asset}", "app.js")
            for method in operations:
                response = anyone.request(method.upper(), route, json={})
                if route in ("/livez", "/healthz", "/readyz", "/dashboard", "/dashboard/app.js"):
                    assert response.status_code == 200, route
                    continue
                assert response.status_code == 401, (method, route, response.text)
                assert response.json()["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
                checked += 1
        assert checked > 40


def test_token_isolation_hides_tasks_across_tokens(tokens_app: App) -> None:
    with raytask.SyncHTTPClient(tokens_app.url, token=ALICE) as alice:
        task = alice.wordcount.submit(text="only alice sees this")
        assert task.get(timeout=60) == {"words": 4, "top": ["alice", "only", "sees"]}
    with raytask.SyncHTTPClient(tokens_app.url, token=BOB) as bob:
        theirs = bob.wordcount.task(task.id)
        with pytest.raises(raytask.TaskNotFoundError):
            theirs.get_status()
        with pytest.raises(raytask.TaskNotFoundError):
            theirs.get()
        assert task.id not in [s.task_id for s in bob.wordcount.list()]
        mine = bob.wordcount.submit(text="bob")
        wait_for(lambda: mine.get_status().finished, 60, "bob's task")
        assert [s.task_id for s in bob.wordcount.list()] == [mine.id]
