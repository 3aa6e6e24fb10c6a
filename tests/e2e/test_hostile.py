"""Hostile input through Serve's real proxy, and results a replica cannot send.

The HTTP tier covers every case in process; these check what only a real cluster shows:
that Serve's proxy hands the ingress's JSON answers through unchanged, and that a
replica's result HTTP cannot carry ends its task in ``failure`` (not ``success`` and a
``get`` that answers 500 forever).
"""

from __future__ import annotations

import httpx
import pytest

from ..support import JSON
from .conftest import App

pytestmark = pytest.mark.e2e


def assert_json_error(response: httpx.Response, status: int, fragment: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert fragment in body["error"], body
    return body


@pytest.mark.parametrize("kind", ["surrogate", "object"])
def test_a_result_http_cannot_carry_fails_its_task(main_app: App, kind: str) -> None:
    task_id = main_app.submit("unsendable", {"kind": kind})
    state = main_app.wait_status("unsendable", task_id, "failure")
    assert "ResultEncodingError" in state["error"] and state["attempts"] == 1
    response = main_app.http.get("/unsendable/get", params={"task_id": task_id})
    assert_json_error(response, 500, "ResultEncodingError")


def test_a_sync_call_with_such_a_result_is_a_json_500(main_app: App) -> None:
    response = main_app.http.post("/unsendable", json={"kind": "surrogate"})
    assert_json_error(response, 500, "UTF-8 cannot carry")


def test_hostile_input_through_the_proxy_is_4xx_json(main_app: App) -> None:
    before = main_app.stats()["counts"]
    post = main_app.http.post
    deep = "[" * 100_000 + "]" * 100_000
    assert_json_error(post("/wordcount/submit", content=deep, headers=JSON), 400, "recursion limit")
    huge = '{"text": "a", "top": ' + "9" * 5000 + "}"
    assert_json_error(
        post("/wordcount/submit", content=huge, headers=JSON), 400, "number out of range"
    )
    assert_json_error(
        post("/sleep/submit", content='{"seconds": NaN}', headers=JSON), 422, "invalid input"
    )
    assert_json_error(
        post("/sleep", content='{"seconds": Infinity}', headers=JSON), 422, "invalid input"
    )
    assert_json_error(post("/wordcount/submit", json={"text": "a", "top": True}), 422, "invalid")
    for query in ("ttl_s=inf", "ttl_s=1e12", "timeout_s=inf"):
        response = post(f"/wordcount/submit?{query}", json={"text": "a"})
        assert_json_error(response, 422, "invalid task options")
    headers = [(f"x-h{i}", "v") for i in range(2000)]
    assert_json_error(post("/wordcount/submit", json={}, headers=headers), 431, "headers")
    response = post("/wordcount/submit", json={}, headers={"x-big": "a" * (1 << 20)})
    assert_json_error(response, 431, "headers are larger")
    response = main_app.http.get(f"/wordcount/status?task_id={'0' * 9000}")
    assert_json_error(response, 414, "longer than")
    assert main_app.stats()["counts"] == before  # nothing was queued
