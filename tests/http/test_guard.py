"""Media types and origins (SPEC §2): what a web page in a browser may make an app do.

The app here has no tokens, the default: the case where a page on any site could
otherwise cancel a queue with a form post or a ``text/plain`` fetch (no preflight).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from raytask.core.config import AppConfig
from raytask.core.status import TaskStatus
from raytask.server.routes import Routes

from ..support import JSON
from .conftest import ServedBackend
from .test_routes import assert_error, submit

EVIL = "https://evil.example"
PARTNER = "https://app.partner.example"


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=100, cors_allow_origins=(PARTNER,))


@pytest.fixture
async def page(backend: ServedBackend, config: AppConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://raytask:8000") as client:
        yield client


def pending(backend: ServedBackend) -> int:
    return backend.table.counts().get("block", {}).get(TaskStatus.PENDING.value, 0)


async def test_a_text_plain_or_form_post_is_415_and_changes_nothing(
    page: httpx.AsyncClient, backend: ServedBackend
) -> None:
    for _ in range(3):
        await submit(page, "block", {"seconds": 1})
    purge = b'{"status": "pending"}'
    for media_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = {"content-type": media_type}
        response = await page.post("/block/cancel_many", content=purge, headers=headers)
        body = assert_error(response, 415, "Content-Type: application/json")
        assert body["code"] == "unsupported_media_type"
        form = await page.post("/block/submit", content=b"seconds=1", headers=headers)
        assert_error(form, 415)
    no_type = await page.post("/block/submit", content=b'{"seconds": 1}')
    assert_error(no_type, 415)
    assert pending(backend) == 3 and len(backend.table) == 3
    ok = await page.post("/block/cancel_many", content=purge, headers=JSON)
    assert ok.json() == {"cancelled": 3}
    charset = {"content-type": "application/json; charset=utf-8"}
    assert (await page.post("/block/submit", content=b"{}", headers=charset)).status_code == 200


async def test_an_empty_body_needs_no_type(page: httpx.AsyncClient) -> None:
    task_id = await submit(page, "block", {"seconds": 1})
    response = await page.put("/block/cancel", params={"task_id": task_id})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


async def test_a_foreign_origin_may_not_change_state(
    page: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(page, "block", {"seconds": 1})
    for origin in (EVIL, "null", "http://raytask:8001", "http://raytask.evil.example:8000"):
        headers = {"origin": origin, **JSON}
        refused = await page.post("/block/cancel_many", json={"status": "pending"}, headers=headers)
        assert assert_error(refused, 403, "cors_allow_origins")["code"] == "origin_refused"
        cancel = await page.post("/block/cancel", params={"task_id": task_id}, headers=headers)
        assert_error(cancel, 403)
        assert_error(await page.post("/block/submit", json={}, headers=headers), 403)
    assert pending(backend) == 1
    read = await page.get("/block/status", params={"task_id": task_id}, headers={"origin": EVIL})
    assert read.status_code == 200  # a read: the browser keeps it from the page (no CORS)
    assert "access-control-allow-origin" not in read.headers
    same = await page.post("/block/submit", json={}, headers={"origin": "http://raytask:8000"})
    assert same.status_code == 200  # the app's own pages (the dashboard)
    assert (await page.post("/block/submit", json={})).status_code == 200  # programs


async def test_a_listed_origin_gets_cors_answers_preflight_included(
    page: httpx.AsyncClient,
) -> None:
    preflight = await page.options(
        "/block/submit",
        headers={
            "origin": PARTNER,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == PARTNER
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
    submitted = await page.post("/block/submit", json={}, headers={"origin": PARTNER})
    assert submitted.status_code == 200
    assert submitted.headers["access-control-allow-origin"] == PARTNER
    exposed = submitted.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed and "raytask-attempt" in exposed  # a stream's attempt
    evil = await page.options(
        "/block/submit",
        headers={"origin": EVIL, "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in evil.headers
