"""Webhook options over HTTP: what submit takes and refuses (delivery: unit and e2e tiers)."""

from __future__ import annotations

import httpx
import pytest

from raytask.core.config import AppConfig
from raytask.core.webhooks import new_secret

from .conftest import ServedBackend
from .test_routes import assert_error


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=10, webhook_secret=new_secret())


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"webhook_url": "http://127.0.0.1:9000/hook"}, "loopback, private"),
        ({"webhook_url": "http://169.254.169.254/"}, "loopback, private"),
        ({"webhook_url": "http://localhost/"}, "loopback, private"),
        ({"webhook_url": "ftp://example.com/"}, "invalid task options"),
        ({"webhook_url": "https://example.com/", "webhook_events": "done"}, "webhook_events"),
        ({"webhook_url": "https://example.com/", "webhook_events": ""}, "webhook_events"),
    ],
)
async def test_bad_webhook_options_are_422_and_queue_nothing(
    client: httpx.AsyncClient, backend: ServedBackend, params: dict, fragment: str
) -> None:
    response = await client.post("/wordcount/submit", json={"text": "x"}, params=params)
    assert_error(response, 422, fragment)
    assert backend.table.pending_count == 0


async def test_a_public_url_is_taken_and_status_shows_no_delivery_yet(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    params = {"webhook_url": "https://hooks.example.com/raytask", "webhook_events": "failed"}
    response = await client.post("/wordcount/submit", json={"text": "x"}, params=params)
    assert response.status_code == 200, response.text
    record = backend.table.get(response.json()["task_id"])
    assert record.options.webhook_url == params["webhook_url"]
    assert record.options.webhook_events == ("failed",)
    assert response.json()["webhook"] is None  # no event has fired yet


async def test_without_a_secret_webhooks_are_refused(backend: ServedBackend) -> None:
    from raytask.server.routes import Routes

    config = AppConfig()
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(
            "/wordcount/submit", json={"text": "x"}, params={"webhook_url": "https://a.example/"}
        )
    assert_error(response, 422, "no webhook secret")
