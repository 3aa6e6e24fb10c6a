"""Hostile and sloppy input: every case answers 4xx JSON and changes nothing.

Each case here once reached raytask's own code as a 500 (most as plain text) or was
accepted when it should not have been; see issue 16's table.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from raytask.core.config import MAX_DURATION_S, AppConfig
from raytask.core.endpoint import MAX_INT_DIGITS, MAX_JSON_DEPTH
from raytask.core.record import Result

from ..support import JSON
from .conftest import ServedBackend
from .test_routes import assert_error, submit

DEEP = 100_000


@pytest.fixture
def config() -> AppConfig:
    return AppConfig()  # the defaults: these are the limits a user's app has


def nested(depth: int, kind: str = "array") -> str:
    opener, closer = ("[", "]") if kind == "array" else ('{"a":', "}")
    return opener * depth + ("1" if kind == "object" else "") + closer * depth


@pytest.mark.parametrize(
    "body",
    [
        nested(DEEP),
        nested(DEEP, "object"),
        '{"text": "x", "extra": ' + nested(DEEP) + "}",
        '{"text": ' + nested(DEEP, "object") + "}",
    ],
    ids=["array", "object", "array-in-field", "object-in-field"],
)
@pytest.mark.parametrize("route", ["/wordcount/submit", "/wordcount"])
async def test_deep_nesting_is_400(
    client: httpx.AsyncClient, backend: ServedBackend, body: str, route: str
) -> None:
    error = assert_error(
        await client.post(route, content=body, headers=JSON), 400, "not valid JSON"
    )
    assert "recursion limit" in error["error"] and f"{MAX_JSON_DEPTH} nested" in error["error"]
    assert len(backend.table) == 0


async def test_nesting_up_to_the_limit_reaches_validation(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    # The body object is the first level: MAX_JSON_DEPTH - 1 more parse, then fail typing.
    ok = '{"text": ' + nested(MAX_JSON_DEPTH - 1) + "}"
    too_deep = '{"text": ' + nested(MAX_JSON_DEPTH) + "}"
    assert_error(
        await client.post("/wordcount/submit", content=ok, headers=JSON), 422, "invalid input"
    )
    assert_error(
        await client.post("/wordcount/submit", content=too_deep, headers=JSON), 400, "recursion"
    )
    assert len(backend.table) == 0


@pytest.mark.parametrize("field", ["top", "text"])
async def test_a_huge_integer_is_400(
    client: httpx.AsyncClient, backend: ServedBackend, field: str
) -> None:
    body = f'{{"text": "a", "{field}": {"9" * 5000}}}'
    error = assert_error(await client.post("/wordcount/submit", content=body, headers=JSON), 400)
    assert "number out of range" in error["error"] and str(MAX_INT_DIGITS) in error["error"]
    assert len(backend.table) == 0


async def test_integers_up_to_the_digit_limit_reach_validation(
    client: httpx.AsyncClient,
) -> None:
    body = '{"text": "a b", "top": ' + "9" * MAX_INT_DIGITS + "}"
    response = await client.post("/wordcount", content=body, headers=JSON)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("route", ["/sleep/submit", "/sleep"])
async def test_non_finite_floats_are_422(
    client: httpx.AsyncClient, backend: ServedBackend, value: str, route: str
) -> None:
    response = await client.post(route, content=f'{{"seconds": {value}}}', headers=JSON)
    error = assert_error(response, 422, "invalid input")
    assert error["detail"][0]["type"] == "finite_number"
    assert error["detail"][0]["loc"] == ["seconds"]
    assert len(backend.table) == 0


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"text": "a", "top": True}, "int_type"),
        ({"text": "a", "top": "3"}, "int_type"),
        ({"text": True}, "string_type"),
        ({"text": 3}, "string_type"),
    ],
)
async def test_json_types_are_taken_strictly(
    client: httpx.AsyncClient, backend: ServedBackend, body: dict[str, Any], kind: str
) -> None:
    error = assert_error(await client.post("/wordcount/submit", json=body), 422)
    assert error["detail"][0]["type"] == kind
    assert len(backend.table) == 0


async def test_a_json_integer_is_a_float(client: httpx.AsyncClient) -> None:
    response = await client.post("/sleep", json={"seconds": 0})
    assert response.status_code == 200 and response.json() >= 0


@pytest.mark.parametrize(
    "query",
    [
        "ttl_s=inf",
        "ttl_s=1e309",
        "ttl_s=1e12",
        "ttl_s=nan",
        "ttl_s=-1",
        "ttl_s=0",
        f"ttl_s={MAX_DURATION_S * 2}",
        "timeout_s=inf",
        "timeout_s=Infinity",
        "timeout_s=1e12",
        "max_attempts=true",
        "max_attempts=0",
        "max_attempts=1.5",
        "bogus=1",
    ],
)
async def test_out_of_range_options_are_422(
    client: httpx.AsyncClient, backend: ServedBackend, query: str
) -> None:
    response = await client.post(f"/wordcount/submit?{query}", json={"text": "a"})
    error = assert_error(response, 422, "invalid task options")
    assert error["detail"]
    assert len(backend.table) == 0


async def test_the_longest_options_are_accepted_and_their_times_format(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    longest = AppConfig().max_ttl_s  # the default cap on a submit's ttl_s
    task_id = await submit(
        client, "wordcount", {"text": "a"}, ttl_s=longest, timeout_s=MAX_DURATION_S
    )
    await backend.drain()
    body = (await client.get("/wordcount/status", params={"task_id": task_id})).json()
    assert body["status"] == "success" and body["expires_at"].startswith("20")


@pytest.mark.parametrize("kind", ["surrogate", "object"])
async def test_a_result_http_cannot_carry_fails_the_task_with_its_reason(
    client: httpx.AsyncClient, backend: ServedBackend, kind: str
) -> None:
    task_id = await submit(client, "unsendable", {"kind": kind})
    await backend.drain()
    status = await client.get("/unsendable/status", params={"task_id": task_id})
    body = status.json()
    assert body["status"] == "failure" and "ResultEncodingError" in body["error"]
    reason = "UTF-8 cannot carry" if kind == "surrogate" else "cannot be sent as JSON"
    assert reason in body["error"]
    error = assert_error(await client.get("/unsendable/get", params={"task_id": task_id}), 500)
    assert error["code"] == "task_failed" and reason in error["error"]


@pytest.mark.parametrize("kind", ["surrogate", "object"])
async def test_a_sync_call_whose_result_http_cannot_carry_is_a_json_500(
    client: httpx.AsyncClient, kind: str
) -> None:
    error = assert_error(await client.post("/unsendable", json={"kind": kind}), 500)
    assert "ResultEncodingError" in error["error"]


async def test_get_never_answers_plain_text_for_a_stored_unsendable_value(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    # The replica checks results; if one got through anyway, get still answers JSON.
    task_id = await submit(client, "wordcount", {"text": "a"})
    await backend.drain()
    backend.table.get(task_id).result = Result("\ud800", 1)
    error = assert_error(await client.get("/wordcount/get", params={"task_id": task_id}), 500)
    assert "UTF-8 cannot carry" in error["error"]


async def test_a_failure_message_with_a_lone_surrogate_is_escaped(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "wordcount", {"text": "a"})
    backend.table.pop_next("wordcount")
    backend.table.fail(task_id, "ValueError: \ud800 here")
    body = (await client.get("/wordcount/status", params={"task_id": task_id})).json()
    assert body["status"] == "failure" and body["error"] == "ValueError: \\ud800 here"


async def test_too_many_headers_are_431(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    headers = [(f"x-h{i}", "v") for i in range(2000)]
    response = await client.post("/wordcount/submit", json={"text": "a"}, headers=headers)
    assert_error(response, 431, "more than 100 headers")
    assert len(backend.table) == 0


async def test_a_huge_header_is_431(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    headers = {"x-big": "a" * (1 << 20)}
    response = await client.post("/wordcount/submit", json={"text": "a"}, headers=headers)
    assert_error(response, 431, "headers are larger than 65536 bytes")
    assert len(backend.table) == 0


async def test_a_long_url_is_414(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    response = await client.post(f"/wordcount/submit?ttl_s=1&pad={'a' * 9000}", json={})
    assert_error(response, 414, "longer than 8192 bytes")
    response = await client.get(f"/wordcount/status?task_id={'0' * 9000}")
    assert_error(response, 414)
    assert len(backend.table) == 0


async def test_a_bug_behind_a_route_is_a_json_500(
    client: httpx.AsyncClient, backend: ServedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(task_id: str, owner: str | None = None, endpoint: str | None = None) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(backend, "status", broken)
    response = await client.get("/wordcount/status", params={"task_id": "0" * 32})
    error = assert_error(response, 500, "internal error (KeyError)")
    assert error["code"] == "error"


async def test_errors_say_why_in_their_message(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    response = await client.post("/wordcount/submit", json={"text": 5, "top": "x", "nope": 1})
    message = assert_error(response, 422)["error"]
    assert message.startswith("invalid input for wordcount: ")
    for reason in ("text: Input should be a valid string", "top: Input should be a valid integer"):
        assert reason in message
    assert "nope: Extra inputs are not permitted" in message
    task_id = await submit(client, "wordcount", {"text": "a"})
    response = await client.get("/wordcount/get", params={"task_id": task_id})
    assert "&wait_s=30" in assert_error(response, 400)["error"]
