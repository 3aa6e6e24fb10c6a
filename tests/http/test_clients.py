"""Both HTTP clients against httpx.MockTransport: one fake server, every test run twice."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import httpx
import pytest

import raytask
from raytask.client.cluster import AsyncClusterEndpoint, ClusterEndpoint
from raytask.client.endpoints import AsyncEndpoint, SyncEndpoint
from raytask.core import errors

SCHEMA = {
    "name": "raytask",
    "type": "service",
    "routes": [
        {
            "name": "generate",
            "route": "/generate",
            "is_task": True,
            "input": {
                "type": "object",
                "properties": {"prompt": {"type": "string"}, "steps": {"type": "integer"}},
                "required": ["prompt"],
                "additionalProperties": False,
            },
            "output": {"type": "string"},
        },
        {
            "name": "describe",
            "route": "/describe",
            "is_task": False,
            "input": {"type": "object", "properties": {"prompt": {}}, "required": ["prompt"]},
            "output": {"type": "string"},
        },
    ],
}


class FakeServer:
    """Tasks finish after ``polls`` status calls; ``prompt == "fail"`` fails."""

    def __init__(self, polls: int = 2) -> None:
        self.polls = polls
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, task_id = request.url.path, request.url.params.get("task_id")
        if path == "/schema.json":
            return httpx.Response(200, json=SCHEMA)
        if path == "/describe":
            return httpx.Response(200, text=f"about {json.loads(request.content)['prompt']}")
        if path == "/generate/submit":
            body = json.loads(request.content)
            if not isinstance(body.get("prompt"), str):
                return httpx.Response(
                    422, json={"error": "invalid input for generate", "detail": [1]}
                )
            new = f"{len(self.tasks):032x}"
            self.tasks[new] = {"kwargs": body, "status": "pending", "left": self.polls}
            return httpx.Response(200, json={"task_id": new, "status": "pending"})
        task = self.tasks.get(task_id or "")
        if task is None:
            return httpx.Response(404, json={"error": f"task {task_id} not found"})
        if path == "/generate/status":
            if task["status"] == "pending":
                task["left"] -= 1
                if task["left"] <= 0:
                    task["status"] = "failure" if task["kwargs"]["prompt"] == "fail" else "success"
            return httpx.Response(200, json={"task_id": task_id, "status": task["status"]})
        if path == "/generate/get":
            if task["status"] == "success":
                return httpx.Response(200, text=task["kwargs"]["prompt"].upper())
            if task["status"] == "failure":
                return httpx.Response(500, json={"error": f"task {task_id} failed: ValueError: no"})
            if task["status"] == "cancelled":
                return httpx.Response(409, json={"error": f"task {task_id} was cancelled"})
            return httpx.Response(400, json={"error": f"task {task_id} is not completed yet"})
        if path == "/generate/cancel":
            task["status"] = "cancelled"
            return httpx.Response(200, json={"task_id": task_id, "status": "cancelled"})
        if path == "/generate/retry":
            new = f"{len(self.tasks):032x}"
            self.tasks[new] = {"kwargs": task["kwargs"], "status": "pending", "left": self.polls}
            return httpx.Response(200, json={"task_id": new, "status": "pending"})
        return httpx.Response(404, json={"error": "no such route"})


def run(value: Any) -> Any:
    """The value of a sync call, or of an async call run to completion."""
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    if inspect.isasyncgen(value):

        async def collect() -> list[Any]:
            return [item async for item in value]

        return asyncio.run(collect())
    return value


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(kind: str, server: FakeServer) -> Any:
    transport = httpx.MockTransport(server)
    if kind == "sync":
        return raytask.SyncHTTPClient("http://raytask", transport=transport)
    return raytask.AsyncHTTPClient("http://raytask", transport=transport)


def test_submit_status_get(client: Any, server: FakeServer) -> None:
    task = run(client.generate.submit(prompt="mountain"))
    assert len(task.id) == 32 and task.endpoint == "generate"
    assert repr(task).endswith(f"(id={task.id!r}, endpoint='generate')")
    assert run(task.get_status()) is raytask.TaskStatus.PENDING
    with pytest.raises(raytask.TaskNotCompletedError, match="not completed yet"):
        run(task.get())
    assert run(task.get(timeout=10)) == "MOUNTAIN"
    assert server.requests[0].url.path == "/schema.json"  # discovery happens once
    assert sum(r.url.path == "/schema.json" for r in server.requests) == 1


def test_as_type_decodes_into_a_pydantic_model(client: Any) -> None:
    from pydantic import BaseModel

    task = run(client.generate.submit(prompt="x"))
    assert run(task.get(timeout=10, as_type=str)) == "X"

    class Wrapped(BaseModel):
        value: str

    with pytest.raises(ValueError, match="validation error"):
        run(task.get(as_type=Wrapped))


def test_positional_and_keyword_arguments(client: Any, server: FakeServer) -> None:
    run(client.generate.submit("hill", 5))
    assert server.tasks[f"{0:032x}"]["kwargs"] == {"prompt": "hill", "steps": 5}
    assert run(client.describe("x")) == "about x"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing required arguments: prompt"),
        (("a", 1, 2), {}, "takes 2 positional arguments but 3 were given"),
        (("a",), {"prompt": "b"}, "multiple values for argument 'prompt'"),
        ((), {"prompt": "a", "colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_client_side_argument_checks(
    client: Any, server: FakeServer, args: tuple, kwargs: dict, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        run(client.generate.submit(*args, **kwargs))
    assert [r.url.path for r in server.requests] == ["/schema.json"]  # nothing was sent


def test_unknown_and_non_task_endpoints(client: Any) -> None:
    with pytest.raises(raytask.EndpointNotFoundError, match="no endpoint named 'nope'"):
        run(client.nope.submit())
    with pytest.raises(raytask.EndpointNotFoundError, match="not a task endpoint"):
        run(client.describe.submit(prompt="x"))


def test_server_errors_map_to_raytask_errors(client: Any) -> None:
    with pytest.raises(raytask.InvalidInputError) as info:
        run(client.generate.submit(prompt=3))
    assert info.value.detail == [1] and info.value.status_code == 422
    failed = run(client.generate.submit(prompt="fail"))
    assert run(failed.wait(timeout=10)) is raytask.TaskStatus.FAILURE
    with pytest.raises(raytask.TaskFailedError, match="ValueError: no"):
        run(failed.get())
    cancelled = run(client.generate.submit(prompt="x"))
    assert run(cancelled.cancel()) is raytask.TaskStatus.CANCELLED
    with pytest.raises(raytask.TaskCancelledError):
        run(cancelled.get())


def test_unknown_task_is_not_found(client: Any, kind: str) -> None:
    ghost = run(client.generate.task("f" * 32))
    assert type(ghost) is (raytask.Task if kind == "sync" else raytask.AsyncTask)
    with pytest.raises(raytask.TaskNotFoundError):
        run(ghost.get_status())


def test_a_handle_rebuilt_from_an_id_follows_the_same_task(client: Any) -> None:
    task = run(client.generate.submit(prompt="later"))
    again = run(client.generate.task(task.id))
    assert again == task and again.endpoint == "generate"
    assert run(again.get(timeout=10)) == "LATER"


def test_retry_returns_a_new_handle(client: Any, server: FakeServer) -> None:
    task = run(client.generate.submit(prompt="fail"))
    run(task.wait(timeout=10))
    new = run(task.retry())
    assert new.id != task.id and type(new) is type(task)
    assert server.tasks[new.id]["kwargs"] == {"prompt": "fail"}


def test_wait_times_out(kind: str) -> None:
    slow = FakeServer(polls=10_000)
    transport = httpx.MockTransport(slow)
    client = (raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient)(
        "http://x", transport=transport
    )
    task = run(client.generate.submit(prompt="x"))
    with pytest.raises(raytask.WaitTimeoutError, match=r"did not finish within 0\.3 s") as info:
        run(task.get(timeout=0.3))
    assert info.value.task_id == task.id and isinstance(info.value, TimeoutError)


def test_batches_keep_input_order(client: Any, kind: str) -> None:
    inputs = [{"prompt": f"p{i}"} for i in range(20)]
    results = run(client.generate.map(inputs, concurrency=4, timeout=30, progress=True))
    assert results == [f"P{i}" for i in range(20)]
    tasks = run(client.generate.submit_many([{"prompt": "a"}, {"prompt": "fail"}]))
    finished = run(client.as_completed(tasks, timeout=30))
    assert sorted(t.id for t in finished) == sorted(t.id for t in tasks)
    outcome = run(client.wait(tasks, return_exceptions=True))
    assert outcome[0] == "A" and isinstance(outcome[1], raytask.TaskFailedError)
    with pytest.raises(raytask.TaskFailedError):
        run(client.wait(tasks))


def test_sync_waits_refuse_to_block_an_event_loop(server: FakeServer) -> None:
    client = raytask.SyncHTTPClient("http://x", transport=httpx.MockTransport(server))
    task = client.generate.submit(prompt="x")

    async def inside_a_loop() -> None:
        with pytest.raises(RuntimeError, match="AsyncHTTPClient"):
            task.get(timeout=1)

    asyncio.run(inside_a_loop())


def test_context_managers_close_the_pool(server: FakeServer) -> None:
    with raytask.SyncHTTPClient("http://x", transport=httpx.MockTransport(server)) as client:
        client.describe(prompt="a")
    assert client._http.is_closed

    async def main() -> raytask.AsyncHTTPClient:
        async with raytask.AsyncHTTPClient(
            "http://x", transport=httpx.MockTransport(server)
        ) as client:
            assert await client.describe(prompt="a") == "about a"
        return client

    assert asyncio.run(main())._http.is_closed


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize(
    ("sync", "asynchronous"),
    [
        (raytask.SyncHTTPClient, raytask.AsyncHTTPClient),
        (raytask.Task, raytask.AsyncTask),
        (SyncEndpoint, AsyncEndpoint),
        (raytask.ClusterTask, raytask.AsyncClusterTask),
        (ClusterEndpoint, AsyncClusterEndpoint),
        (raytask.Task, raytask.ClusterTask),
    ],
)
def test_sync_and_async_expose_the_same_names(sync: type, asynchronous: type) -> None:
    assert public(sync) == public(asynchronous)
    for name in public(sync):
        sync_member, async_member = getattr(sync, name), getattr(asynchronous, name)
        if callable(sync_member) and name not in {"close"}:
            assert (
                inspect.signature(sync_member).parameters.keys()
                == inspect.signature(async_member).parameters.keys()
            ), name


def test_error_mapping_for_every_code(kind: str) -> None:
    codes = {
        400: errors.MalformedRequestError,
        404: errors.TaskNotFoundError,
        409: errors.TaskConflictError,
        410: errors.TaskExpiredError,
        413: errors.PayloadTooLargeError,
        422: errors.InvalidInputError,
        429: errors.QueueFullError,
        500: errors.TaskFailedError,
        503: errors.ServiceUnavailableError,
        502: errors.HTTPError,
    }
    for code, cls in codes.items():

        def handler(request: httpx.Request, code: int = code) -> httpx.Response:
            if request.url.path == "/schema.json":
                return httpx.Response(200, json=SCHEMA)
            return httpx.Response(code, json={"error": f"code {code}"})

        client_class = raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient
        client = client_class("http://x", transport=httpx.MockTransport(handler), max_retries=0)
        with pytest.raises(cls, match=f"code {code}") as info:
            run(client.generate.submit(prompt="x"))
        assert info.value.status_code == code


def test_routes_are_absolute_under_a_route_prefix(kind: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/app/schema.json":
            routes = [dict(r, route="/app" + r["route"]) for r in SCHEMA["routes"]]
            return httpx.Response(200, json=dict(SCHEMA, routes=routes))
        return httpx.Response(200, text="ok")

    client_class = raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient
    client = client_class("http://raytask/app", transport=httpx.MockTransport(handler))
    assert run(client.describe(prompt="x")) == "ok"
    assert seen == ["/app/schema.json", "/app/describe"]


@pytest.mark.parametrize("status", [429, 503])
def test_busy_answers_are_retried_after_retry_after(kind: str, status: int) -> None:
    answers = [status, status, 200]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/schema.json":
            return httpx.Response(200, json=SCHEMA)
        seen.append(request.url.path)
        code = answers.pop(0)
        if code != 200:
            return httpx.Response(code, json={"error": "busy"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"task_id": "a" * 32, "status": "pending"})

    client_class = raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient
    client = client_class("http://x", transport=httpx.MockTransport(handler))
    task = run(client.generate.submit(prompt="x"))
    assert task.id == "a" * 32 and seen == ["/generate/submit"] * 3


def test_retries_are_bounded(kind: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/schema.json":
            return httpx.Response(200, json=SCHEMA)
        seen.append(request.url.path)
        return httpx.Response(429, json={"error": "full"}, headers={"Retry-After": "0"})

    client_class = raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient
    client = client_class("http://x", transport=httpx.MockTransport(handler), max_retries=2)
    with pytest.raises(raytask.QueueFullError):
        run(client.generate.submit(prompt="x"))
    assert len(seen) == 3  # the first try and two retries
