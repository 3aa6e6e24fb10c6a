"""API tokens and token isolation over HTTP, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import raytask
from raytask.core.config import AppConfig
from raytask.core.errors import ConfigError
from raytask.server.routes import Routes

from .conftest import InProcessServer, ServedBackend
from .test_routes import assert_error

ALICE, BOB = "alice-token-0001", "bob-token-000002"


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=100, api_tokens=(ALICE, BOB), token_isolation=True)


@pytest.fixture
async def anyone(backend: ServedBackend, config: AppConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://raytask"
    ) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PUBLIC = ("/livez", "/healthz", "/readyz", "/dashboard", "/dashboard/{asset}")


def example(path: str) -> str:
    return path.replace("{name}", "wordcount").replace("{asset}", "app.js")


async def test_every_protected_route_is_401_without_a_token(anyone: httpx.AsyncClient) -> None:
    document = (await anyone.get("/openapi.json", headers=bearer(ALICE))).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            response = await anyone.request(method.upper(), example(path), json={})
            if path in PUBLIC:  # no data: the dashboard's page asks for the token itself
                assert response.status_code == 200, path
                assert "security" not in operation
                continue
            assert_error(response, 401, "API token")
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "401" in operation["responses"] and operation["security"] == [{"bearer": []}]
            checked += 1
    assert checked > 40


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-known-token"},
        {"Authorization": f"Basic {ALICE}"},
        {"Authorization": "Bearer "},
        {"Authorization": ALICE},
    ],
)
async def test_wrong_tokens_are_401(anyone: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_error(await anyone.get("/queue", headers=headers), 401)


async def test_each_token_sees_only_its_own_tasks(
    anyone: httpx.AsyncClient, backend: ServedBackend
) -> None:
    submitted = await anyone.post(
        "/wordcount/submit", json={"text": "alice's"}, headers=bearer(ALICE)
    )
    task_id = submitted.json()["task_id"]
    assert "owner" not in submitted.json()  # the owner is never sent
    params = {"task_id": task_id}
    as_bob = bearer(BOB)
    for method, route in [
        ("GET", "/wordcount/status"),
        ("GET", "/wordcount/get"),
        ("GET", "/wordcount/stream"),  # JSON, before any event
        ("POST", "/wordcount/cancel"),
        ("POST", "/wordcount/retry"),
    ]:
        response = await anyone.request(method, route, params=params, headers=as_bob)
        assert_error(response, 404, "not found")
    many = await anyone.post("/status_many", json={"task_ids": [task_id]}, headers=as_bob)
    assert many.json()["tasks"][0]["status_code"] == 404
    listed = await anyone.get("/wordcount/tasks", headers=as_bob)
    assert listed.json()["tasks"] == []
    purge = await anyone.post("/wordcount/cancel_many", json={"status": "pending"}, headers=as_bob)
    assert purge.json() == {"cancelled": 0}
    by_id = await anyone.post(
        "/wordcount/cancel_many", json={"task_ids": [task_id]}, headers=as_bob
    )
    assert by_id.json() == {"cancelled": 0}
    mine = await anyone.get("/wordcount/status", params=params, headers=bearer(ALICE))
    assert mine.json()["status"] == "pending"
    # idempotency keys are per token too: bob's "k" is not alice's "k"
    keyed = {"Idempotency-Key": "k"}
    a = await anyone.post("/wordcount/submit", json={"text": "x"}, headers=bearer(ALICE) | keyed)
    b = await anyone.post("/wordcount/submit", json={"text": "y"}, headers=as_bob | keyed)
    assert a.status_code == b.status_code == 200 and a.json()["task_id"] != b.json()["task_id"]


async def test_another_tenants_expired_id_is_404_like_a_live_one(
    anyone: httpx.AsyncClient, backend: ServedBackend, clock: Any
) -> None:
    submitted = await anyone.post(
        "/wordcount/submit", json={"text": "alice's"}, params={"ttl_s": 10}, headers=bearer(ALICE)
    )
    task_id = submitted.json()["task_id"]
    await backend.drain()
    clock.advance(11)
    backend.table.sweep()
    params = {"task_id": task_id}
    routes = [("GET", "status"), ("GET", "get"), ("POST", "cancel"), ("POST", "retry")]
    for method, route in routes:
        theirs = await anyone.request(
            method, f"/wordcount/{route}", params=params, headers=bearer(BOB)
        )
        assert_error(theirs, 404, "not found")  # a 410 would say that the id existed
        own = await anyone.request(
            method, f"/wordcount/{route}", params=params, headers=bearer(ALICE)
        )
        assert_error(own, 410, "expired")
    many = await anyone.post("/status_many", json={"task_ids": [task_id]}, headers=bearer(BOB))
    assert many.json()["tasks"][0]["status_code"] == 404
    many = await anyone.post("/status_many", json={"task_ids": [task_id]}, headers=bearer(ALICE))
    assert many.json()["tasks"][0]["status_code"] == 410


def test_the_clients_send_their_token(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with raytask.SyncHTTPClient(
        "http://raytask", transport=server.sync_transport(), token=ALICE
    ) as client:
        task = client.wordcount.submit(text="with a token")
        assert task.get_status() is raytask.TaskStatus.PENDING
    monkeypatch.setenv("RAYTASK_API_TOKEN", BOB)
    with raytask.SyncHTTPClient("http://raytask", transport=server.sync_transport()) as client:
        with pytest.raises(raytask.TaskNotFoundError):
            client.wordcount.task(task.id).get_status()  # bob's token: not his task
    monkeypatch.delenv("RAYTASK_API_TOKEN")
    with raytask.SyncHTTPClient("http://raytask", transport=server.sync_transport()) as client:
        with pytest.raises(raytask.UnauthorizedError):
            client.wordcount.submit(text="no token")


def test_a_token_is_never_in_an_error_or_a_log(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    with raytask.SyncHTTPClient(
        "http://raytask", transport=server.sync_transport(), token="wrong-token-secret-0001"
    ) as client:
        with pytest.raises(raytask.UnauthorizedError) as info:
            client.wordcount.submit(text="x")
    assert "wrong-token-secret-0001" not in str(info.value)
    assert "wrong-token-secret-0001" not in caplog.text


@pytest.mark.parametrize(
    "token",
    ["short-0001", "with space-0000001", "with,comma-0000001", "tab\there-000000001", "é" * 20],
)
def test_a_malformed_configured_token_is_a_config_error_that_never_shows_it(token: str) -> None:
    with pytest.raises(ConfigError, match=r"api_tokens\[1\]: an API token is 16 to 512") as info:
        AppConfig.parse({"api_tokens": [ALICE, token]})
    assert token not in str(info.value) and ALICE not in str(info.value)


def test_a_config_error_shows_no_secret_of_any_setting() -> None:
    secret = "whsec_" + "A" * 10  # too short a key: refused
    with pytest.raises(ConfigError) as info:
        AppConfig.parse({"api_tokens": [ALICE, "short"], "webhook_secret": secret})
    assert secret not in str(info.value) and "short" not in str(info.value).split(":", 1)[1]
    assert ALICE not in str(info.value)


def test_tokens_from_a_file_and_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text("# team tokens\nfile-token-000001\n\n  # ci below\nfile-token-0002#ci\n")
    monkeypatch.setenv("RAYTASK_API_TOKENS", "env-token-0000001, env-token-0000002")
    tokens = set(AppConfig(api_tokens_file=str(path)).named_api_tokens())
    # '#' starts a comment only at the start of a line: inside, it is part of the token
    assert tokens == {
        "file-token-000001",
        "file-token-0002#ci",
        "env-token-0000001",
        "env-token-0000002",
    }
    assert set(AppConfig(api_tokens=str(path)).named_api_tokens()) == tokens  # SPEC: "or a file"
    with pytest.raises(ConfigError, match="API tokens"):
        AppConfig(api_tokens=str(tmp_path / "missing")).named_api_tokens()


def test_a_bad_line_of_the_tokens_file_is_named_never_shown(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text("file-token-000001\nabcdefgh #rest-of-it\n")
    with pytest.raises(ConfigError, match=f"line 2 of {path}") as info:
        AppConfig(api_tokens_file=str(path)).named_api_tokens()
    assert "abcdefgh" not in str(info.value)
    # a ',' in the environment splits: each part must be a whole token on its own
    monkeypatch.setenv("RAYTASK_API_TOKENS", "first-half-0001,second-half-0002")
    with pytest.raises(ConfigError, match="item 1 of RAYTASK_API_TOKENS") as info:
        AppConfig().named_api_tokens()
    assert "first-half" not in str(info.value)


BENTOML_SCRIPT = """
import sys, time, bentoml
url, token = sys.argv[1], sys.argv[2] or None
try:
    client = bentoml.SyncHTTPClient(url, token=token)
except Exception as exc:
    # Only a refusal of the schema (what a 401 there makes BentoML raise) counts, and the
    # same request without a token must answer 401.
    import httpx
    fetched = "Failed to fetch schema" in str(exc)
    print("refused", type(exc).__name__, fetched, httpx.get(url + "/schema.json").status_code)
    raise SystemExit(0)
client._opened_files = []
task = client.wordcount.submit(text="bento with a token")
while task.get_status().value != "completed":
    time.sleep(0.05)
print("result", task.get()["words"])
"""


def test_bentoml_clients_token_is_accepted(backend: ServedBackend, config: AppConfig) -> None:
    # BentoML's own client (its virtualenv), with its token=, against the real routes served
    # by uvicorn on 127.0.0.1 (BentoML's client needs the app at the root of a real port).
    import os
    import subprocess
    import threading
    from pathlib import Path

    import uvicorn

    from ..support import free_port, wait_for

    python = os.environ.get(
        "RAYTASK_BENTOML_PYTHON", str(Path(".venv-bentoml/bin/python").absolute())
    )
    if not Path(python).exists():
        pytest.fail(f"the BentoML virtualenv is missing ({python}): `make test` creates it")
    backend.run_after_polls = 2
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn to start")
        url = f"http://127.0.0.1:{port}"

        def bento(token: str) -> str:
            done = subprocess.run(
                [python, "-c", BENTOML_SCRIPT, url, token],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout.strip().splitlines()[-1]

        assert bento(ALICE) == "result 4"
        assert bento("") == "refused BentoMLException True 401"  # no token: the schema's 401
    finally:
        server.should_exit = True
        thread.join(10)


async def test_the_api_page_needs_the_token_as_the_openapi_document_does(
    anyone: httpx.AsyncClient,
) -> None:
    assert_error(await anyone.get("/docs"), 401, "API token")
    page = await anyone.get("/docs", headers=bearer(ALICE))
    assert page.status_code == 200 and 'id="endpoint-wordcount"' in page.text
    assert "Authorization: Bearer &lt;token&gt;" in page.text  # it says how to call the API
