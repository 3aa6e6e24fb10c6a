"""Tenants over HTTP (SPEC 12), in process: named tokens, quotas' 429s, usage and who may
read it, the app-wide numbers for admins only, and the Python clients' ``usage()``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import raytask
from raytask.core.config import AppConfig
from raytask.server.routes import Routes

from ..support import FakeClock
from .conftest import InProcessServer, ServedBackend
from .test_routes import assert_error
from .test_tokens import bearer

ALICE, BOB, CAROL, ADMIN = "alice-token-0001", "bob-token-000002", "carol-token-0003", "a" * 20


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(
        max_queue_size=1000,
        retry_after_s=3,
        api_tokens={"alice": ALICE, "bob": BOB, "carol": CAROL},
        admin_tokens=[ADMIN],
        token_isolation=True,
        tenants={
            "default": {"max_pending": 50},
            "bob": {"max_pending": 2},
            "carol": {"submits_per_s": 1},
        },
    )


@pytest.fixture
def http(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The conftest's in-process client, on this module's config."""
    return client


async def submit(http: httpx.AsyncClient, token: str, n: int = 1) -> list[str]:
    ids = []
    for i in range(n):
        response = await http.post(
            "/wordcount/submit", json={"text": f"w{i}"}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
        ids.append(response.json()["task_id"])
    return ids


async def test_each_task_belongs_to_its_tokens_tenant(
    http: httpx.AsyncClient, backend: ServedBackend
) -> None:
    (alice,) = await submit(http, ALICE)
    (admin,) = await submit(http, ADMIN)
    many = await http.post("/wordcount/submit_many", json=[{"text": "x"}], headers=bearer(BOB))
    bobs = many.json()["tasks"][0]["task_id"]
    tenants = {t: backend.table.get(t).tenant for t in (alice, admin, bobs)}
    assert tenants == {alice: "alice", admin: "admin", bobs: "bob"}
    retried_from = await submit(http, ALICE)
    await backend.drain()
    retry = await http.post(f"/wordcount/retry?task_id={retried_from[0]}", headers=bearer(ALICE))
    assert backend.table.get(retry.json()["task_id"]).tenant == "alice"


async def test_the_admin_token_sees_every_tenants_tasks(
    http: httpx.AsyncClient, backend: ServedBackend
) -> None:
    (alice,) = await submit(http, ALICE)
    assert (await http.get(f"/wordcount/status?task_id={alice}", headers=bearer(ADMIN))).is_success
    assert_error(await http.get(f"/wordcount/status?task_id={alice}", headers=bearer(BOB)), 404)


async def test_status_answers_say_the_seconds_spent(
    http: httpx.AsyncClient, backend: ServedBackend, clock: FakeClock
) -> None:
    (task_id,) = await submit(http, ALICE)
    clock.advance(2.5)
    status = (await http.get(f"/wordcount/status?task_id={task_id}", headers=bearer(ALICE))).json()
    assert (status["queue_s"], status["run_s"], status["gpu_s"]) == (2.5, 0, 0)
    await backend.drain()
    status = (await http.get(f"/wordcount/status?task_id={task_id}", headers=bearer(ALICE))).json()
    assert status["status"] == "success" and status["queue_s"] == 2.5


async def test_max_pending_is_429_tenant_queue_full_for_that_tenant_only(
    http: httpx.AsyncClient, backend: ServedBackend
) -> None:
    await submit(http, BOB, 2)
    response = await http.post("/wordcount/submit", json={"text": "x"}, headers=bearer(BOB))
    body = assert_error(response, 429, "max_pending=2")
    assert body["code"] == "tenant_queue_full" and response.headers["retry-after"] == "3"
    too_many = await http.post(
        "/wordcount/submit_many", json=[{"text": "x"}] * 3, headers=bearer(ALICE)
    )
    assert too_many.is_success  # alice's own room (the default entry's 50)
    assert backend.table.pending_count == 5


async def test_submits_per_s_is_429_rate_limited_with_retry_after(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await submit(http, CAROL, 2)  # the bucket: twice the rate
    response = await http.post("/wordcount/submit", json={"text": "x"}, headers=bearer(CAROL))
    body = assert_error(response, 429, "submits_per_s=1")
    assert body["code"] == "rate_limited" and response.headers["retry-after"] == "1"
    await submit(http, ALICE, 5)  # the others are untouched
    clock.advance(1)
    await submit(http, CAROL)


async def test_usage_is_each_tenants_own_and_the_admins_all(
    http: httpx.AsyncClient, backend: ServedBackend, clock: FakeClock
) -> None:
    await submit(http, ALICE, 3)
    await submit(http, BOB, 1)
    clock.advance(4)
    await backend.drain()
    own = (await http.get("/usage", headers=bearer(ALICE))).json()["usage"]
    assert [(r["tenant"], r["endpoint"], r["tasks"], r["succeeded"]) for r in own] == [
        ("alice", "wordcount", 3, 3)
    ]
    assert own[0]["queue_s_p50"] == pytest.approx(4, rel=0.05) and own[0]["hour"].endswith("Z")
    assert_error(await http.get("/usage?tenant=bob", headers=bearer(ALICE)), 403, "own")
    everyone = await http.get("/usage?group_by=tenant", headers=bearer(ADMIN))
    rows = everyone.json()["usage"]
    assert [(r["tenant"], r["tasks"], r["endpoint"], r["hour"]) for r in rows] == [
        ("alice", 3, None, None),
        ("bob", 1, None, None),
    ]
    bob = await http.get("/usage?tenant=bob&since=2000-01-01T00:00:00", headers=bearer(ADMIN))
    assert [r["tenant"] for r in bob.json()["usage"]] == ["bob"]
    before = await http.get("/usage?until=2000-01-01T00:00:00Z", headers=bearer(ADMIN))
    assert before.json()["usage"] == []


@pytest.mark.parametrize(
    ("query", "fragment"),
    [("group_by=tenant,day", "group_by"), ("since=yesterday", "ISO-8601"), ("until=1e9", "until")],
)
async def test_a_bad_usage_query_is_422(http: httpx.AsyncClient, query: str, fragment: str) -> None:
    assert_error(await http.get(f"/usage?{query}", headers=bearer(ADMIN)), 422, fragment)


async def test_app_wide_numbers_are_for_admin_tokens_only(
    http: httpx.AsyncClient, backend: ServedBackend
) -> None:
    await submit(http, ALICE, 2)
    await backend.drain()
    for path in ("/queue", "/metrics"):
        assert_error(await http.get(path, headers=bearer(ALICE)), 403, "admin_tokens")
    queue = (await http.get("/queue", headers=bearer(ADMIN))).json()
    assert queue["tenants"]["alice"]["endpoints"]["wordcount"]["success"] == 2
    metrics = (await http.get("/metrics", headers=bearer(ADMIN))).text
    assert "# TYPE raytask_tenant_tasks_total counter" in metrics
    assert 'raytask_tenant_tasks_total{tenant="alice",endpoint="wordcount",status="success"} 2' in (
        metrics
    )
    assert 'raytask_tenant_run_seconds_total{tenant="alice",endpoint="wordcount"} 0' in metrics
    assert 'raytask_tenant_gpu_seconds_total{tenant="alice",endpoint="wordcount"} 0' in metrics


async def test_without_isolation_anyone_reads_everything(
    backend: ServedBackend, config: AppConfig
) -> None:
    open_config = config.model_copy(update={"token_isolation": False})
    app = Routes(list(backend.endpoints.values()), backend, open_config).asgi_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://raytask"
    ) as http:
        await submit(http, BOB)
        await backend.drain()
        assert (await http.get("/queue", headers=bearer(ALICE))).is_success
        rows = (await http.get("/usage", headers=bearer(ALICE))).json()["usage"]
        assert [r["tenant"] for r in rows] == ["bob"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_python_clients_read_usage(
    kind: str, server: InProcessServer, backend: ServedBackend
) -> None:
    import asyncio

    backend.table.usage.count("alice", "wordcount", raytask.TaskStatus.SUCCESS, 1.8e9, 1, 2, 0)
    backend.table.usage.count("bob", "wordcount", raytask.TaskStatus.FAILURE, 1.8e9, 1, 3, 0)
    headers = bearer(ADMIN)
    if kind == "sync":
        with raytask.SyncHTTPClient(
            "http://raytask", transport=server.sync_transport(), headers=headers
        ) as client:
            rows: Any = client.usage(group_by=["tenant"], tenant="bob")
    else:

        async def read() -> Any:
            async with raytask.AsyncHTTPClient(
                "http://raytask", transport=server.async_transport(), headers=headers
            ) as client:
                return await client.usage(group_by=["tenant"], tenant="bob")

        rows = asyncio.run(read())
    assert rows == [
        {
            "tenant": "bob",
            "endpoint": None,
            "hour": None,
            "tasks": 1,
            "succeeded": 0,
            "failed": 1,
            "cancelled": 0,
            "run_s": 3.0,
            "gpu_s": 0.0,
            "queue_s_p50": pytest.approx(1, rel=0.05),
            "queue_s_p99": pytest.approx(1, rel=0.05),
        }
    ]
