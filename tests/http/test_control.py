"""Task control over HTTP (SPEC §7): priority, queue deadlines, idempotency keys, progress,
listing and the batch routes, with every bad value answered 4xx and changing nothing."""

from __future__ import annotations

import httpx
import pytest

from raytask.core.config import AppConfig
from raytask.core.status import TaskStatus

from ..support import JSON, FakeClock
from .conftest import ServedBackend
from .test_routes import assert_error, submit


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=300, max_request_bytes=256 * 1024)


async def status(client: httpx.AsyncClient, task_id: str) -> dict:
    response = await client.get("/wordcount/status", params={"task_id": task_id})
    assert response.status_code == 200, response.text
    return response.json()


# -- priority and queue position ------------------------------------------------


async def test_priority_and_queue_position_in_every_status_answer(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    low = [await submit(client, "wordcount", {"text": f"{i}"}) for i in range(3)]
    high = await submit(client, "wordcount", {"text": "urgent"}, priority=10)
    answer = await status(client, high)
    assert answer["priority"] == 10 and answer["queue_position"] == 0
    assert answer["progress"] is None
    assert [(await status(client, t))["queue_position"] for t in low] == [1, 2, 3]
    await backend.drain(limit=1)
    assert (await status(client, high))["queue_position"] is None
    assert (await status(client, low[0]))["queue_position"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"priority": 11},
        {"priority": -11},
        {"priority": "high"},
        {"priority": 1.5},
        {"max_queue_s": -1},
        {"max_queue_s": 0},
        {"max_queue_s": "inf"},
        {"max_queue_s": 1e12},
    ],
)
async def test_bad_control_options_are_422_and_queue_nothing(
    client: httpx.AsyncClient, backend: ServedBackend, params: dict
) -> None:
    response = await client.post("/wordcount/submit", json={"text": "x"}, params=params)
    assert_error(response, 422, "invalid task options")
    assert backend.table.pending_count == 0


# -- queue deadlines ----------------------------------------------------------------


async def test_a_task_not_started_in_max_queue_s_expires_as_cancelled(
    client: httpx.AsyncClient, backend: ServedBackend, clock: FakeClock
) -> None:
    task_id = await submit(client, "wordcount", {"text": "late"}, max_queue_s=30)
    clock.advance(30)
    answer = await status(client, task_id)
    assert answer["status"] == "cancelled" and answer["error"].startswith("expired:")
    assert answer["attempts"] == 0
    response = await client.get("/wordcount/get", params={"task_id": task_id})
    assert_error(response, 409, "expired: not started within max_queue_s=30 s")
    retried = await client.post("/wordcount/retry", params={"task_id": task_id})
    assert retried.status_code == 200


# -- idempotency keys ---------------------------------------------------------------


async def test_the_same_key_and_input_give_the_same_task_and_queue_nothing(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/wordcount/submit", json={"text": "a", "top": 1}, headers=headers)
    again = await client.post("/wordcount/submit", json={"top": 1, "text": "a"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["task_id"] == again.json()["task_id"]
    assert backend.table.pending_count == 1
    other = await client.post("/wordcount/submit", json={"text": "b"}, headers=headers)
    assert_error(other, 409, "other inputs")
    assert backend.table.pending_count == 1


@pytest.mark.parametrize("key", ["", "k" * 256, "with space", "naïve", "tab\tkey"])
async def test_a_malformed_key_is_400_and_queues_nothing(
    client: httpx.AsyncClient, backend: ServedBackend, key: str
) -> None:
    headers = [("Idempotency-Key", key.encode("utf-8"))]
    response = await client.post("/wordcount/submit", json={"text": "x"}, headers=headers)
    assert_error(response, 400, "Idempotency-Key")
    assert backend.table.pending_count == 0


async def test_two_keys_in_one_request_are_400(client: httpx.AsyncClient) -> None:
    headers = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    response = await client.post("/wordcount/submit", json={"text": "x"}, headers=headers)
    assert_error(response, 400, "Idempotency-Key")


# -- progress -----------------------------------------------------------------------


async def test_progress_shows_in_the_status_answer(
    client: httpx.AsyncClient, backend: ServedBackend, clock: FakeClock
) -> None:
    task_id = await submit(client, "wordcount", {"text": "x"})
    backend.table.pop_next("wordcount")
    backend.table.report_progress(task_id, 1, 0.5, "half way")
    progress = (await status(client, task_id))["progress"]
    assert progress["fraction"] == 0.5 and progress["message"] == "half way"
    assert progress["updated_at"].endswith("+00:00")


# -- listing ------------------------------------------------------------------------


async def test_listing_pages_newest_first_and_filters(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    ids = [await submit(client, "wordcount", {"text": f"t{i}"}) for i in range(25)]
    other = await submit(client, "sleep")
    for task_id in ids[:5]:
        await client.post("/wordcount/cancel", params={"task_id": task_id})
    seen, cursor = [], None
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/wordcount/tasks", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [task["task_id"] for task in body["tasks"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    response = await client.get("/wordcount/tasks?status=cancelled&status=success")
    assert [t["task_id"] for t in response.json()["tasks"]] == ids[4::-1]
    response = await client.get("/wordcount/tasks", params={"status": "pending,cancelled"})
    assert len(response.json()["tasks"]) == 25
    everything = (await client.get("/tasks")).json()["tasks"]
    assert [t["task_id"] for t in everything][:2] == [other, ids[-1]]
    only_sleep = (await client.get("/tasks", params={"endpoint": "sleep"})).json()["tasks"]
    assert [t["task_id"] for t in only_sleep] == [other]
    first = everything[0]
    assert first["endpoint"] == "sleep" and first["queue_position"] == 0


@pytest.mark.parametrize(
    ("query", "status_code", "fragment"),
    [
        ("limit=0", 422, "limit"),
        ("limit=1001", 422, "limit"),
        ("limit=ten", 422, "limit"),
        ("cursor=abc", 422, "cursor"),
        ("cursor=-1", 422, "cursor"),
        ("status=done", 422, "unknown status"),
        ("status=pending,nope", 422, "unknown status"),
    ],
)
async def test_bad_listing_queries_are_4xx(
    client: httpx.AsyncClient, query: str, status_code: int, fragment: str
) -> None:
    assert_error(await client.get(f"/wordcount/tasks?{query}"), status_code, fragment)


async def test_listing_unknown_endpoints_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/tasks", params={"endpoint": "nope"}), 404, "nope")
    assert_error(await client.get("/nope/tasks"), 404, "nope")
    assert_error(await client.get("/describe/tasks"), 404, "task endpoint")


# -- submit_many ----------------------------------------------------------------------


async def test_submit_many_queues_all_in_order(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    inputs = [{"text": f"w{i} x"} for i in range(20)]
    response = await client.post("/wordcount/submit_many", json=inputs, params={"priority": 3})
    assert response.status_code == 200, response.text
    tasks = response.json()["tasks"]
    assert [t["status"] for t in tasks] == ["pending"] * 20
    assert set(tasks[0]) == {"task_id", "status"}
    answers = [await status(client, t["task_id"]) for t in tasks]
    assert [a["queue_position"] for a in answers] == list(range(20))
    assert {a["priority"] for a in answers} == {3}
    await backend.drain()
    result = await client.get("/wordcount/get", params={"task_id": tasks[7]["task_id"]})
    assert result.json()["words"] == 2 and "w7" in result.json()["top"]


async def test_submit_many_with_bad_items_names_them_and_queues_none(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    inputs = [{"text": "ok"}, {"text": 5}, {"text": "ok"}, {}, {"text": "ok", "bogus": 1}]
    response = await client.post("/wordcount/submit_many", json=inputs)
    body = assert_error(response, 422, "index 1, 3, 4")
    assert {error["loc"][0] for error in body["detail"]} == {1, 3, 4}
    assert backend.table.pending_count == 0


@pytest.mark.parametrize(
    ("body", "status_code", "fragment"),
    [
        ({"text": "an object, not an array"}, 422, "JSON array"),
        ([{"text": "x"}] * 1001, 422, "at most 1000"),
        ("[", 400, "not valid JSON"),
    ],
)
async def test_submit_many_bad_bodies_are_4xx(
    client: httpx.AsyncClient,
    backend: ServedBackend,
    body: object,
    status_code: int,
    fragment: str,
) -> None:
    if isinstance(body, str):
        response = await client.post("/wordcount/submit_many", content=body, headers=JSON)
    else:
        response = await client.post("/wordcount/submit_many", json=body)
    assert_error(response, status_code, fragment)
    assert backend.table.pending_count == 0


async def test_submit_many_that_does_not_fit_is_429_and_queues_none(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    await client.post("/wordcount/submit_many", json=[{"text": "x"}] * 290)
    response = await client.post("/wordcount/submit_many", json=[{"text": "x"}] * 11)
    assert_error(response, 429, "room for 10")
    assert response.headers["retry-after"]
    assert backend.table.pending_count == 290


async def test_submit_many_refuses_an_idempotency_key(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/wordcount/submit_many", json=[{"text": "x"}], headers={"Idempotency-Key": "k"}
    )
    assert_error(response, 400, "Idempotency-Key")


# -- status_many and cancel_many ------------------------------------------------------------


async def test_status_many_answers_each_in_order(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    ids = [await submit(client, "wordcount", {"text": "x"}) for _ in range(3)]
    unknown, malformed = "f" * 32, "not-an-id"
    response = await client.post(
        "/status_many", json={"task_ids": [ids[2], unknown, malformed, ids[0]]}
    )
    assert response.status_code == 200, response.text
    tasks = response.json()["tasks"]
    assert tasks[0]["task_id"] == ids[2] and tasks[0]["queue_position"] == 2
    assert tasks[1] == {
        "task_id": unknown,
        "error": f"task {unknown} not found",
        "status_code": 404,
    }
    assert tasks[2]["status_code"] == 400 and tasks[2]["task_id"] == malformed
    assert tasks[3]["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"task_ids": ["a" * 32] * 1001}, "at most 1000"),
        ({"task_ids": "a" * 32}, "valid array"),
        ({"ids": []}, "task_ids"),
        ([], "an object"),
        ({"task_ids": [5]}, "valid string"),
    ],
)
async def test_bad_status_many_bodies_are_422(
    client: httpx.AsyncClient, body: object, fragment: str
) -> None:
    assert_error(await client.post("/status_many", json=body), 422, fragment)


async def test_cancel_many_by_ids_and_purging_the_queue(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    ids = [await submit(client, "wordcount", {"text": "x"}) for _ in range(6)]
    elsewhere = await submit(client, "sleep")
    response = await client.post(
        "/wordcount/cancel_many", json={"task_ids": [ids[0], ids[1], elsewhere, "f" * 32, "junk"]}
    )
    assert response.json() == {"cancelled": 2}
    assert backend.table.get(elsewhere).status is TaskStatus.PENDING  # not this endpoint's
    response = await client.post("/wordcount/cancel_many", json={"status": "pending"})
    assert response.json() == {"cancelled": 4}
    assert backend.table.pending_by_endpoint("wordcount") == 0
    assert backend.table.pending_by_endpoint("sleep") == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"task_ids": [], "status": "pending"}, {"status": "success"}, {"status": "all"}, []],
)
async def test_bad_cancel_many_bodies_are_422_and_cancel_nothing(
    client: httpx.AsyncClient, backend: ServedBackend, body: object
) -> None:
    await submit(client, "wordcount", {"text": "x"})
    assert_error(await client.post("/wordcount/cancel_many", json=body), 422)
    assert backend.table.pending_count == 1


async def test_delete_many_over_http(client: httpx.AsyncClient, backend: ServedBackend) -> None:
    ids = [await submit(client, "wordcount", {"text": "x"}) for _ in range(4)]
    await backend.drain(limit=2)
    done = [t for t in ids if backend.table.get(t).status.finished]
    body = {"task_ids": [*(t.upper() for t in ids), "junk"]}
    response = await client.post("/wordcount/delete_many", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 2, "skipped": 3}
    for task_id in done:
        gone = await client.get("/wordcount/status", params={"task_id": task_id})
        assert_error(gone, 404, "not found")
        assert gone.json()["code"] == "task_not_found"
    await backend.drain()
    body = {"status": "success", "older_than_s": 0}
    assert (await client.post("/wordcount/delete_many", json=body)).json() == {
        "deleted": 2,
        "skipped": 0,
    }
    assert backend.table.ids_in(TaskStatus) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"task_ids": [], "status": "success"},
        {"status": "pending"},
        {"status": "in_progress"},
        {"status": "success", "older_than_s": -1},
        {"status": "success", "older_than_s": "1"},
        [],
    ],
)
async def test_bad_delete_many_bodies_are_422_and_delete_nothing(
    client: httpx.AsyncClient, backend: ServedBackend, body: object
) -> None:
    await submit(client, "wordcount", {"text": "x"})
    await backend.drain()
    assert_error(await client.post("/wordcount/delete_many", json=body), 422)
    assert len(backend.table.ids_in([TaskStatus.SUCCESS])) == 1


# -- long-poll (wait_s) ------------------------------------------------------------------


async def test_get_and_status_with_wait_s_answer_once_the_task_finished(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    backend.run_after_polls = 3  # the task "runs" while the long-poll waits
    task_id = await submit(client, "wordcount", {"text": "a b a"})
    response = await client.get("/wordcount/get", params={"task_id": task_id, "wait_s": 5})
    assert response.status_code == 200 and response.json()["words"] == 3
    assert backend.waits == 1
    other = await submit(client, "wordcount", {"text": "x"})
    answer = await client.get("/wordcount/status", params={"task_id": other, "wait_s": "5"})
    assert answer.json()["status"] == "success"


async def test_a_long_poll_that_times_out_answers_as_without_it(
    client: httpx.AsyncClient, backend: ServedBackend
) -> None:
    task_id = await submit(client, "wordcount", {"text": "never runs"})
    params = {"task_id": task_id, "wait_s": 0.05}
    assert_error(await client.get("/wordcount/get", params=params), 400, "not completed")
    answer = await client.get("/wordcount/status", params=params)
    assert answer.status_code == 200 and answer.json()["status"] == "pending"


@pytest.mark.parametrize("wait_s", ["-1", "61", "nan", "inf", "soon", ""])
async def test_a_bad_wait_s_is_422(
    client: httpx.AsyncClient, backend: ServedBackend, wait_s: str
) -> None:
    task_id = await submit(client, "wordcount", {"text": "x"})
    for route in ("/wordcount/get", "/wordcount/status"):
        response = await client.get(route, params={"task_id": task_id, "wait_s": wait_s})
        assert_error(response, 422, "wait_s")
