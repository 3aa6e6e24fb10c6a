"""Every route's success and error answers, in process."""

from __future__ import annotations

import asyncio
import html
import inspect
import logging
import re
from typing import Any

import httpx
import pytest

from raytask.core.config import AppConfig
from raytask.server.routes import Routes

from ..support import JSON
from .conftest import ServedBackend

HEX32 = re.compile(r"[0-9a-f]{32}")


async def submit(
    client: httpx.AsyncClient, name: str, body: object = None, **params: object
) -> str:
    response = await client.post(f"/{name}/submit", json=body or {}, params=params)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and fragment in body["error"]
    return body


# -- submit -------------------------------------------------------------------


async def test_submit_returns_an_id_and_pending(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    response = await client.post("/wordcount/submit", json={"text": "a b a"})
    assert response.status_code == 200
    body = response.json()
    assert HEX32.fullmatch(body["task_id"]) and body["status"] == "pending"
    assert backend.table.pending_count == 1


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": 5}, 422, "invalid input"),
        ({}, 422, "invalid input"),
        ({"text": "x", "top": "many"}, 422, "invalid input"),
        ({"text": "x", "bogus": 1}, 422, "invalid input"),
        ([1, 2], 422, "JSON object"),
        ("just a string", 422, "JSON object"),
    ],
)
async def test_bad_input_is_4xx_and_queues_nothing(
    client: httpx.AsyncClient, backend: ServedBackend, body: object, status: int, fragment: str
) -> None:
    response = await client.post("/wordcount/submit", json=body)
    error = assert_error(response, status, fragment)
    if isinstance(body, dict):
        assert error["detail"][0]["loc"]
    assert len(backend.table) == 0


async def test_malformed_json_is_400(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    response = await client.post("/wordcount/submit", content=b"{not json", headers=JSON)
    assert_error(response, 400, "not valid JSON")
    response = await client.post("/wordcount/submit", content=b"\xff\xfe", headers=JSON)
    assert_error(response, 400, "not valid JSON")
    assert len(backend.table) == 0


async def test_oversized_body_is_413(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    big = {"text": "x" * 10_000}
    assert_error(await client.post("/wordcount/submit", json=big), 413, "larger than 4096")

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    assert_error(await client.post("/wordcount/submit", content=chunks(), headers=JSON), 413)
    assert len(backend.table) == 0


async def test_unknown_endpoint_and_route(client: httpx.AsyncClient) -> None:
    missed = assert_error(await client.post("/nope/submit", json={}), 404, "no endpoint named")
    assert missed["code"] == "endpoint_not_found" and "/wordcount" in missed["detail"]["endpoints"]
    assert_error(await client.get("/nope/status", params={"task_id": "0" * 32}), 404)
    # a synchronous-only endpoint has no task routes
    assert_error(await client.post("/describe/submit", json={"prompt": "x"}), 404, "task endpoint")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/a/b/c"), ("GET", "/foo"), ("DELETE", "/nope"), ("GET", "/nope/submit")],
)
async def test_a_request_no_route_takes_is_404_json_saying_where_the_routes_are(
    client: httpx.AsyncClient, backend: ServedBackend, method: str, path: str
) -> None:
    backend.neighbours = [("embeddings", "/embed")]  # as Serve's controller would list it
    body = assert_error(await client.request(method, path), 404, f"no route {method} {path}")
    assert body["code"] == "route_not_found"
    assert "/wordcount" in body["detail"]["endpoints"]
    assert body["detail"]["apps"] == [{"app": "embeddings", "prefix": "/embed"}]
    assert "/embed (embeddings)" in body["error"] and "/docs" in body["error"]


async def test_an_endpoint_of_another_app_is_pointed_at_it(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    backend.neighbours = [("demo", "/demo")]
    body = assert_error(await client.post("/count/submit", json={}), 404, "no endpoint named")
    assert "other raytask apps on this server: /demo (demo)" in body["error"]


async def test_other_apps_that_cannot_be_listed_are_left_out_not_an_error(
    client: httpx.AsyncClient, backend: ServedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[tuple[str, str]]:
        raise RuntimeError("Serve's controller is away")

    monkeypatch.setattr(backend, "apps", broken)
    body = assert_error(await client.get("/nope"), 404, "no route GET /nope")
    assert body["detail"]["apps"] == [] and "other raytask apps" not in body["error"]
    page = await client.get("/")
    assert page.status_code == 200 and "dashboard" in page.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/wordcount/submit", "POST"),
        ("GET", "/wordcount", "POST"),
        ("DELETE", "/wordcount/cancel", "POST, PUT"),
        ("POST", "/readyz", "GET, HEAD"),
        ("POST", "/docs", "GET, HEAD"),
        ("PUT", "/status_many", "POST"),
    ],
)
async def test_a_wrong_method_is_405_json_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    body = assert_error(response, 405, f"takes {allow}, not {method}")
    assert body["code"] == "method_not_allowed"
    assert response.headers["allow"] == allow


async def test_a_trailing_slash_is_a_json_redirect(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    response = await client.post("/wordcount/submit/?priority=1", json={"text": "x"})
    assert response.status_code == 307
    assert response.headers["location"] == "/wordcount/submit?priority=1"
    assert response.json()["code"] == "trailing_slash"
    assert len(backend.table) == 0  # nothing queued by the miss
    followed = await client.post(response.headers["location"], json={"text": "x"})
    assert followed.status_code == 200


async def test_every_error_body_has_a_code(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get("/nowhere"),
        await client.put("/wordcount"),
        await client.get("/wordcount/status"),
        await client.get("/wordcount/status", params={"task_id": "x"}),
        await client.post("/wordcount/submit", content=b"{", headers=JSON),
        await client.get("/dashboard/nope.js"),
    ]
    for response in answers:
        assert response.status_code >= 400 and response.json()["code"], response.text


async def test_queue_full_is_429_with_retry_after(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    for _ in range(3):
        await submit(client, "noop")
    response = await client.post("/noop/submit", json={})
    assert_error(response, 429, "queue is full")
    assert response.headers["retry-after"] == "2"
    assert len(backend.table) == 3


async def test_submit_options_travel_apart_from_arguments(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "wordcount", {"text": "hi"}, ttl_s=30, max_attempts=1)
    record = backend.table.get(task_id)
    assert (record.options.ttl_s, record.options.max_attempts) == (30, 1)
    assert record.kwargs == {"text": "hi"}
    response = await client.post("/wordcount/submit", json={"text": "x"}, params={"ttl_s": -1})
    assert_error(response, 422, "task options")
    response = await client.post("/wordcount/submit", json={"text": "x"}, params={"color": "red"})
    assert_error(response, 422, "task options")
    year = {"ttl_s": 31_536_000}  # a year, past max_ttl_s (30 days by default)
    response = await client.post("/wordcount/submit", json={"text": "x"}, params=year)
    assert_error(response, 422, "max_ttl_s=2.592e+06")
    response = await client.post("/wordcount/submit_many", json=[{"text": "x"}], params=year)
    assert_error(response, 422, "max_ttl_s")
    assert len(backend.table) == 1
    kept = await submit(client, "wordcount", {"text": "a month"}, ttl_s=2_592_000)
    assert backend.table.get(kept).options.ttl_s == 2_592_000


# -- status -------------------------------------------------------------------


async def test_status_lifecycle_with_iso_times(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "wordcount", {"text": "a"})
    body = (await client.get("/wordcount/status", params={"task_id": task_id})).json()
    assert body["status"] == "pending" and body["executed_at"] is None
    assert body["created_at"] == "2027-01-15T08:00:00+00:00"
    await backend.drain()
    body = (await client.get("/wordcount/status", params={"task_id": task_id})).json()
    assert body["status"] == "success"
    for key in ("created_at", "executed_at", "completed_at", "expires_at"):
        assert body[key].endswith("+00:00")
    assert body["expires_at"] == "2027-01-16T08:00:00+00:00"  # the default TTL is 24 h


@pytest.mark.parametrize(
    ("method", "route"), [("GET", "status"), ("GET", "get"), ("PUT", "cancel"), ("POST", "retry")]
)
async def test_a_task_id_answers_only_under_its_own_endpoint(
    client: httpx.AsyncClient, backend: ServedBackend, method: str, route: str
) -> None:
    task_id = await submit(client, "noop")
    if route == "retry":
        await backend.drain()  # finished: retry would take it under its own endpoint
    response = await client.request(method, f"/wordcount/{route}", params={"task_id": task_id})
    error = assert_error(response, 404, f"task {task_id} is not a task of 'wordcount'")
    assert error["code"] == "task_not_found" and "it belongs to 'noop'" in error["error"]
    state = (await client.get("/noop/status", params={"task_id": task_id})).json()
    assert state["status"] in ("pending", "success")  # untouched (a cancel did nothing)
    assert backend.table.counts()["noop"]["cancelled"] == 0
    many = await client.post("/status_many", json={"task_ids": [task_id]})
    assert many.json()["tasks"][0]["task_id"] == task_id  # app-wide routes stay app-wide


async def test_a_task_id_is_accepted_in_any_letter_case(client: httpx.AsyncClient) -> None:
    task_id = await submit(client, "noop")
    response = await client.get("/noop/status", params={"task_id": task_id.upper()})
    assert response.status_code == 200 and response.json()["task_id"] == task_id
    many = await client.post("/status_many", json={"task_ids": [task_id.upper()]})
    assert many.json()["tasks"][0]["task_id"] == task_id
    cancelled = await client.put("/noop/cancel", params={"task_id": task_id.upper()})
    assert cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({}, 400, "missing query parameter task_id"),
        ({"task_id": ""}, 400, "missing"),
        ({"task_id": "xyz"}, 400, "malformed task_id"),
        ({"task_id": "G" * 32}, 400, "malformed"),
        ({"task_id": "A" * 32}, 404, "not found"),  # any letter case: a well-formed id
        ({"task_id": "0" * 33}, 400, "malformed"),
        ({"task_id": "0" * 32}, 404, "not found"),
    ],
)
@pytest.mark.parametrize("route", ["status", "get", "cancel", "retry"])
async def test_bad_task_ids(
    client: httpx.AsyncClient, route: str, params: dict, status: int, fragment: str
) -> None:
    method = "GET" if route in ("status", "get") else "POST"
    response = await client.request(method, f"/wordcount/{route}", params=params)
    assert_error(response, status, fragment)


async def test_bentoml_client_gets_its_spellings(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    bento = {"User-Agent": "BentoML HTTP Client/1.4.40"}
    ok, bad, gone = [await submit(client, n) for n in ("noop", "fail", "noop")]
    await client.post("/noop/cancel", params={"task_id": gone})
    await backend.drain()
    for task_id, name, ours, theirs in (
        (ok, "noop", "success", "completed"),
        (bad, "fail", "failure", "failed"),
        (gone, "noop", "cancelled", "canceled"),
    ):
        mine = await client.get(f"/{name}/status", params={"task_id": task_id})
        bentos = await client.get(f"/{name}/status", params={"task_id": task_id}, headers=bento)
        assert (mine.json()["status"], bentos.json()["status"]) == (ours, theirs)


# -- get ----------------------------------------------------------------------


async def test_get_results_by_type(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    words = await submit(client, "wordcount", {"text": "b a b"})
    blob = await submit(client, "blob", {"size_mb": 0.001})
    await backend.drain()
    response = await client.get("/wordcount/get", params={"task_id": words})
    assert response.status_code == 200 and response.json() == {"words": 3, "top": ["b", "a"]}
    response = await client.get("/blob/get", params={"task_id": blob})
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == (bytes(range(256)) * 5)[:1048]


async def test_get_before_completion_is_400(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "noop")
    response = await client.get("/noop/get", params={"task_id": task_id.upper()})
    message = assert_error(response, 400, f"task {task_id} is not completed yet")["error"]
    # an HTTP caller is told the query parameter, not a Python method
    assert f"GET /noop/get?task_id={task_id}&wait_s=30" in message
    assert "task.get" not in message
    backend.table.pop_next("noop")
    assert_error(await client.get("/noop/get", params={"task_id": task_id}), 400, "in_progress")


async def test_a_waiting_get_is_one_call_that_answers_when_the_task_finishes(
    client: httpx.AsyncClient, backend: ServedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await submit(client, "wordcount", {"text": "b a b"})
    asked: list[tuple[str, float]] = []
    result = backend.result

    async def counted(task_id: str, owner: Any, endpoint: Any, wait_s: float = 0.0) -> Any:
        asked.append((task_id, wait_s))
        return await result(task_id, owner, endpoint, wait_s)

    monkeypatch.setattr(backend, "result", counted)
    waiting = asyncio.ensure_future(
        client.get("/wordcount/get", params={"task_id": task_id, "wait_s": 30})
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held until the task finishes
    await backend.drain()
    response = await asyncio.wait_for(waiting, 5)
    assert response.json() == {"words": 3, "top": ["b", "a"]}
    assert asked == [(task_id, 30.0)]  # one call of the backend: the wait goes with it


async def test_failed_task_get_is_500_with_the_error(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "fail", {"message": "disk on fire"})
    await backend.drain()
    status = (await client.get("/fail/status", params={"task_id": task_id})).json()
    assert status["status"] == "failure" and status["error"] == "ValueError: disk on fire"
    body = assert_error(await client.get("/fail/get", params={"task_id": task_id}), 500)
    assert "ValueError: disk on fire" in body["error"] and "Traceback" not in body["error"]


# -- cancel -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_cancel_pending(
    client: httpx.AsyncClient, backend: ServedBackend, method: str
) -> None:
    task_id = await submit(client, "noop")
    response = await client.request(method, "/noop/cancel", params={"task_id": task_id})
    assert response.status_code == 200
    assert response.json()["task_id"] == task_id and response.json()["status"] == "cancelled"
    await backend.drain()
    assert (await client.get("/noop/status", params={"task_id": task_id})).json()[
        "status"
    ] == "cancelled"
    assert_error(await client.get("/noop/get", params={"task_id": task_id}), 409, "cancelled")
    assert_error(
        await client.request(method, "/noop/cancel", params={"task_id": task_id}),
        409,
        "already finished",
    )


async def test_cancel_finished_is_409(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    task_id = await submit(client, "noop")
    await backend.drain()
    assert_error(
        await client.put("/noop/cancel", params={"task_id": task_id}), 409, "already finished"
    )
    assert (await client.get("/noop/status", params={"task_id": task_id})).json()[
        "status"
    ] == "success"


# -- retry --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_retry_makes_a_new_task_with_the_same_inputs(
    client: httpx.AsyncClient, backend: ServedBackend, method: str
) -> None:
    original = await submit(client, "fail", {"message": "once"})
    assert_error(
        await client.request(method, "/fail/retry", params={"task_id": original}),
        409,
        "not finished",
    )
    await backend.drain()
    response = await client.request(method, "/fail/retry", params={"task_id": original})
    assert response.status_code == 200 and response.json()["status"] == "pending"
    new = response.json()["task_id"]
    assert new != original and HEX32.fullmatch(new)
    assert backend.table.get(new).kwargs == {"message": "once"}
    assert (await client.get("/fail/status", params={"task_id": original})).json()[
        "status"
    ] == "failure"


# -- TTL ----------------------------------------------------------------------


async def test_expired_results_are_410(
    client: httpx.AsyncClient, backend: ServedBackend, clock
) -> None:
    task_id = await submit(client, "wordcount", {"text": "x"}, ttl_s=10)
    await backend.drain()
    clock.advance(11)
    backend.table.sweep()
    for route, method in (("status", "GET"), ("get", "GET"), ("retry", "POST")):
        response = await client.request(method, f"/wordcount/{route}", params={"task_id": task_id})
        assert_error(response, 410, "expired")
    # an unknown id stays 404: never a silent pending
    assert_error(await client.get("/wordcount/status", params={"task_id": "f" * 32}), 404)


# -- synchronous calls and service routes -------------------------------------


async def test_sync_call(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    response = await client.post("/describe", json={"prompt": "two words"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert response.text == "2 words, 9 characters: 'two words'"
    response = await client.post("/wordcount", json={"text": "a"})  # task methods are callable too
    assert response.json() == {"words": 1, "top": ["a"]}
    assert_error(await client.post("/fail", json={"message": "sync"}), 500, "ValueError: sync")
    assert_error(await client.post("/describe", json={"prompt": 1}), 422)
    assert_error(await client.post("/describe", content=b"]", headers=JSON), 400)
    assert len(backend.table) == 0


async def test_schema_json_has_bentoml_discovery_shape(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema.json")).json()
    assert schema["type"] == "service"
    routes = {r["name"]: r for r in schema["routes"]}
    assert routes["wordcount"]["route"] == "/wordcount" and routes["wordcount"]["is_task"] is True
    assert routes["describe"]["is_task"] is False
    assert routes["wordcount"]["input"]["required"] == ["text"]
    assert "text" in routes["wordcount"]["input"]["properties"]
    assert routes["describe"]["output"] == {"type": "string"}


async def test_openapi_and_health(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/wordcount/submit", "/wordcount/status", "/wordcount/get", "/describe"} <= set(
        doc["paths"]
    )
    assert "/describe/submit" not in doc["paths"]
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    for path in ("/livez", "/healthz"):
        assert (await client.get(path)).json() == {"status": "alive"}


async def test_the_openapi_task_state_is_what_status_sends(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    doc = (await client.get("/openapi.json")).json()
    schema = doc["components"]["schemas"]["TaskState"]
    task_id = await submit(client, "noop")
    sent = (await client.get("/noop/status", params={"task_id": task_id})).json()
    assert set(sent) == set(schema["properties"]) == set(schema["required"])
    statuses = doc["components"]["schemas"]["TaskStatus"]["enum"]
    assert sent["status"] in statuses
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "code"}


async def test_readiness_is_503_while_the_manager_is_down(
    client: httpx.AsyncClient, backend: ServedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> bool:
        return False

    monkeypatch.setattr(backend, "ready", down)
    response = await client.get("/readyz")
    body = assert_error(response, 503, "not ready")
    assert body["code"] == "unavailable" and int(response.headers["retry-after"]) >= 1
    assert (await client.get("/livez")).status_code == 200  # the ingress itself is alive


async def test_every_error_body_carries_its_code(client: httpx.AsyncClient) -> None:
    missing = await client.get("/wordcount/status", params={"task_id": "0" * 32})
    assert assert_error(missing, 404)["code"] == "task_not_found"
    bad = await client.post("/wordcount/submit", json={"text": 5})
    assert assert_error(bad, 422)["code"] == "invalid_input"


async def test_queue_and_metrics(client: httpx.AsyncClient, backend: ServedBackend, clock) -> None:
    await submit(client, "noop")
    clock.advance(7)
    await submit(client, "noop")
    queue = (await client.get("/queue")).json()
    assert queue["endpoints"]["noop"]["pending"] == 2
    assert queue["endpoints"]["noop"]["oldest_pending_age_s"] == 7
    text = (await client.get("/metrics")).text
    assert 'raytask_tasks{app="local",endpoint="noop",status="pending"} 2' in text
    assert 'raytask_oldest_pending_age_seconds{app="local",endpoint="noop"} 7.000' in text


async def test_the_root_lists_the_endpoints_and_links(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    backend.neighbours = [("embeddings", "/embed")]
    body = (await client.get("/")).json()
    names = {e["name"]: e for e in body["endpoints"]}
    assert names["wordcount"] == {
        "name": "wordcount",
        "route": "/wordcount",
        "submit": "/wordcount/submit",
        "is_task": True,
        "params": {"text": {"type": "string"}, "top": {"type": "integer", "default": 3}},
        "doc": inspect.getdoc(backend.endpoints["wordcount"].func),
    }
    assert names["wordcount"]["doc"]  # the demo's methods have docstrings
    assert names["describe"]["is_task"] is False and names["describe"]["submit"] is None
    assert body["links"]["openapi"] == "/openapi.json" and body["links"]["docs"] == "/docs"
    assert body["links"]["embeddings: dashboard"] == "/embed/dashboard"
    for name, url in body["links"].items():
        if not name.startswith("embeddings"):  # the other app is not served here
            assert (await client.get(url)).status_code == 200, url
    page = await client.get("/", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.headers["content-type"].startswith("text/html")
    assert "<code>POST /wordcount/submit</code> (text: string, top: integer)" in page.text
    assert 'href="/queue"' in page.text and 'href="/embed/docs"' in page.text


async def test_the_docs_page_lists_every_endpoint_from_the_openapi_document(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"{method.upper()}</span> <code>{path}</code>" in page.text, path
    for name, endpoint in backend.endpoints.items():
        assert f'id="endpoint-{name}"' in page.text
        doc = inspect.getdoc(endpoint.func)
        if doc:
            assert html.escape(doc.splitlines()[0], quote=True) in page.text
    assert "<code>top</code></td><td>integer</td><td>3</td>" in page.text


async def test_access_lines_name_the_endpoint_and_the_task_when_on(
    backend: ServedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def requests(config: AppConfig) -> list[str]:
        app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
        transport = httpx.ASGITransport(app=app)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ray.serve.raytask.access"):
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                task_id = await submit(client, "wordcount", {"text": "a"})
                await client.get("/wordcount/status", params={"task_id": task_id})
                await client.get("/nope/status", params={"task_id": task_id})
        return [r.getMessage().replace(task_id, "ID") for r in caplog.records]

    assert await requests(AppConfig()) == []  # off by default: a task's only line is its failure
    lines = await requests(AppConfig(access_log=True))
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "POST /wordcount/submit 200 task=ID",
        "GET /wordcount/status 200 task=ID",
        "GET /nope/status 404 task=ID",
    ]


async def test_a_task_id_that_is_not_one_never_reaches_the_access_log(
    backend: ServedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    app = Routes(list(backend.endpoints.values()), backend, AppConfig(access_log=True))
    forged = "0" * 32 + "\nINFO fake line"
    with caplog.at_level(logging.INFO, logger="ray.serve.raytask.access"):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi_app()), base_url="http://x"
        ) as client:
            answer = await client.get("/wordcount/status", params={"task_id": forged})
            upper = await client.get("/wordcount/status", params={"task_id": "ABCDEF" * 5 + "AB"})
    assert answer.status_code == 400 and upper.status_code in (400, 404)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line and "fake" not in line for line in lines)
    assert all("task=" not in line or "task=abcdef" in line for line in lines)


async def test_the_dashboard_and_its_files_carry_the_security_headers(
    client: httpx.AsyncClient,
) -> None:
    for path in (
        "/dashboard",
        "/dashboard/app.js",
        "/dashboard/style.css",
        "/dashboard/favicon.svg",
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == "default-src 'self'"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_dashboard_links_this_apps_pages_and_the_other_apps(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    backend.neighbours = [("demo", "/demo")]
    page = (await client.get("/dashboard")).text
    assert "{{" not in page
    for url in ("/docs", "/", "/demo/dashboard", "/demo/docs"):
        assert f'href="{url}"' in page, url


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "\uff11", "1\u00b2", "9" * 40, "-1"])
async def test_integer_parameters_take_ascii_digits_only(
    client: httpx.AsyncClient, value: str
) -> None:
    for name in ("limit", "cursor"):
        response = await client.get("/tasks", params={name: value})
        assert_error(response, 422, name)


def test_submit_status_and_get_are_the_routes_tried_first(
    backend: ServedBackend, config: AppConfig
) -> None:
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    tasks = [name for name, e in backend.endpoints.items() if e.is_task]
    first = [(route.path, sorted(route.methods)) for route in app.routes[: 3 * len(tasks)]]
    assert first == [
        (f"/{name}/{op}", methods)
        for op, methods in (
            ("submit", ["POST"]),
            ("status", ["GET", "HEAD"]),
            ("get", ["GET", "HEAD"]),
        )
        for name in tasks
    ]
    assert len(app.routes) == len({(r.path, tuple(sorted(r.methods))) for r in app.routes})
