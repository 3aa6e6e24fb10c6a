"""The real Python clients against the real routes, in process; every test runs sync and async.

The server is :class:`~tests.http.conftest.InProcessServer`: the real ``Routes`` over the
in-process backend (the real task table and the real replica runner on the demo model),
where a pending task runs on its second status read. Only transport-level faults (every
error code, busy answers) use ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

import raytask
from raytask.client import endpoints as endpoints_module
from raytask.client.cluster import AsyncClusterEndpoint, ClusterEndpoint
from raytask.client.endpoints import AsyncEndpoint, SyncEndpoint
from raytask.core import errors
from raytask.core.config import AppConfig
from raytask.server.routes import Routes

from ..support import free_port
from .conftest import InProcessServer, ServedBackend


def run(value: Any) -> Any:
    """The value of a sync call, or of an async call run to completion."""
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    if inspect.isasyncgen(value):

        async def collect() -> list[Any]:
            return [item async for item in value]

        return asyncio.run(collect())
    return value


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=100, max_request_bytes=4096)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def make_client(kind: str, server: InProcessServer, url: str = "http://raytask", **kw: Any) -> Any:
    if kind == "sync":
        return raytask.SyncHTTPClient(url, transport=server.sync_transport(), **kw)
    return raytask.AsyncHTTPClient(url, transport=server.async_transport(), **kw)


@pytest.fixture
def client(kind: str, server: InProcessServer) -> Any:
    return make_client(kind, server)


def test_submit_status_get(client: Any, server: InProcessServer) -> None:
    task = run(client.wordcount.submit(text="b a b"))
    assert len(task.id) == 32 and task.endpoint == "wordcount"
    assert repr(task).endswith(f"(id={task.id!r}, endpoint='wordcount')")
    assert run(task.get_status()) is raytask.TaskStatus.PENDING
    with pytest.raises(raytask.TaskNotCompletedError, match="not completed yet") as early:
        run(task.get())
    assert "task.get(timeout=...)" in str(early.value)  # the method, for a Python caller
    assert run(task.get(timeout=10)) == {"words": 3, "top": ["b", "a"]}
    state = run(task.get_state())
    assert isinstance(state, raytask.TaskState) and state.attempts == 1
    assert state.completed_at is not None and state.expires_at > state.completed_at
    assert server.paths[0] == "/schema.json"  # discovery happens once
    assert server.paths.count("/schema.json") == 1


def test_concurrent_first_calls_fetch_the_schema_once(client: Any, server: InProcessServer) -> None:
    tasks = run(client.wordcount.submit_many([{"text": f"w{i}"} for i in range(32)]))
    assert len(tasks) == 32
    assert server.paths.count("/schema.json") == 1  # 16 workers raced to discover


def test_results_by_type(client: Any) -> None:
    assert run(client.describe("two words")).startswith("2 words")  # text
    png = run(client.long_running_image_generation.submit(prompt="a hill"))
    assert run(png.get(timeout=10)).startswith(b"\x89PNG")  # bytes


def test_as_type_decodes_into_a_pydantic_model(client: Any) -> None:
    class WordCount(BaseModel):
        words: int
        top: list[str]

    task = run(client.wordcount.submit(text="x y x"))
    counted = run(task.get(timeout=10, as_type=WordCount))
    assert counted == WordCount(words=3, top=["x", "y"])

    class Wrong(BaseModel):
        value: str

    with pytest.raises(ValueError, match="validation error"):
        run(task.get(as_type=Wrong))


def test_positional_and_keyword_arguments(client: Any, backend: ServedBackend) -> None:
    task = run(client.wordcount.submit("hill hill dale", 1))
    assert backend.table.get(task.id).kwargs == {"text": "hill hill dale", "top": 1}
    assert run(task.get(timeout=10)) == {"words": 3, "top": ["hill"]}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing required arguments: text"),
        (("a", 1, 2), {}, "takes 2 positional arguments but 3 were given"),
        (("a",), {"text": "b"}, "multiple values for argument 'text'"),
        ((), {"text": "a", "colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_client_side_argument_checks(
    client: Any, server: InProcessServer, args: tuple, kwargs: dict, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        run(client.wordcount.submit(*args, **kwargs))
    assert server.paths == ["/schema.json"]  # nothing was sent


def test_unknown_and_non_task_endpoints(client: Any) -> None:
    with pytest.raises(raytask.EndpointNotFoundError, match="no endpoint named 'nope'"):
        run(client.nope.submit())
    with pytest.raises(raytask.EndpointNotFoundError, match="not a task endpoint"):
        run(client.describe.submit(prompt="x"))


def test_server_errors_map_to_raytask_errors(client: Any, backend: ServedBackend) -> None:
    with pytest.raises(raytask.InvalidInputError) as info:
        run(client.wordcount.submit(text=3))
    assert info.value.status_code == 422 and info.value.detail[0]["loc"] == ["text"]
    assert len(backend.table) == 0  # nothing was queued
    failed = run(client.fail.submit(message="no"))
    assert run(failed.wait(timeout=10)) is raytask.TaskStatus.FAILURE
    with pytest.raises(raytask.TaskFailedError, match="ValueError: no"):
        run(failed.get())
    cancelled = run(client.wordcount.submit(text="x"))
    assert run(cancelled.cancel()) is raytask.TaskStatus.CANCELLED
    with pytest.raises(raytask.TaskCancelledError):
        run(cancelled.get())
    with pytest.raises(raytask.TaskConflictError, match="already finished"):
        run(cancelled.cancel())


def test_unknown_task_is_not_found(client: Any, kind: str) -> None:
    ghost = run(client.wordcount.task("f" * 32))
    assert type(ghost) is (raytask.Task if kind == "sync" else raytask.AsyncTask)
    with pytest.raises(raytask.TaskNotFoundError):
        run(ghost.get_status())


def test_a_handle_rebuilt_from_an_id_follows_the_same_task(client: Any) -> None:
    task = run(client.wordcount.submit(text="later"))
    again = run(client.wordcount.task(task.id))
    assert again == task and again.endpoint == "wordcount"
    assert run(again.get(timeout=10)) == {"words": 1, "top": ["later"]}


def test_retry_needs_a_finished_task_and_returns_a_new_handle(
    client: Any, backend: ServedBackend
) -> None:
    task = run(client.fail.submit(message="again"))
    with pytest.raises(raytask.TaskConflictError, match="has not finished yet"):
        run(task.retry())
    run(task.wait(timeout=10))
    new = run(task.retry())
    assert new.id != task.id and type(new) is type(task)
    assert backend.table.get(new.id).kwargs == {"message": "again"}
    assert run(new.get_state()).retry_of == task.id


def test_wait_times_out(kind: str, server: InProcessServer, backend: ServedBackend) -> None:
    backend.run_after_polls = None  # nothing ever runs
    client = make_client(kind, server)
    task = run(client.wordcount.submit(text="x"))
    with pytest.raises(raytask.WaitTimeoutError, match=r"did not finish within 0\.3 s") as info:
        run(task.get(timeout=0.3))
    assert info.value.task_id == task.id and isinstance(info.value, TimeoutError)


def test_batches_keep_input_order(client: Any) -> None:
    inputs = [{"text": f"w{i} w{i} z"} for i in range(20)]
    results = run(client.wordcount.map(inputs, concurrency=4, timeout=30, progress=True))
    assert [r["top"][0] for r in results] == [f"w{i}" for i in range(20)]
    tasks = run(client.fail.submit_many([{"message": "a"}, {"message": "b"}]))
    tasks = [run(client.wordcount.submit(text="ok")), *tasks]
    finished = run(client.as_completed(tasks, timeout=30))
    assert sorted(t.id for t in finished) == sorted(t.id for t in tasks)
    outcome = run(client.wait(tasks, return_exceptions=True))
    assert outcome[0] == {"words": 1, "top": ["ok"]}
    assert isinstance(outcome[1], raytask.TaskFailedError)
    with pytest.raises(raytask.TaskFailedError):
        run(client.wait(tasks))


def test_sync_waits_refuse_to_block_an_event_loop(server: InProcessServer) -> None:
    client = make_client("sync", server)
    task = client.wordcount.submit(text="x")

    async def inside_a_loop() -> None:
        with pytest.raises(RuntimeError, match="AsyncHTTPClient"):
            task.get(timeout=1)

    asyncio.run(inside_a_loop())


def test_context_managers_close_the_pool(server: InProcessServer) -> None:
    with make_client("sync", server) as client:
        assert client.describe(prompt="a").startswith("1 words")
    assert client._http.is_closed

    async def main() -> raytask.AsyncHTTPClient:
        async with make_client("async", server) as client:
            assert (await client.describe(prompt="a")).startswith("1 words")
        return client

    assert asyncio.run(main())._http.is_closed


def test_routes_are_absolute_under_a_route_prefix(
    kind: str, backend: ServedBackend, config: AppConfig
) -> None:
    backend.run_after_polls = 2
    routes = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    mounted = InProcessServer(Starlette(routes=[Mount("/app", app=routes)]))
    try:
        client = make_client(kind, mounted, url="http://raytask/app")
        assert run(client.describe(prompt="x y")).startswith("2 words")
        task = run(client.wordcount.submit(text="prefixed"))
        assert run(task.get(timeout=10)) == {"words": 1, "top": ["prefixed"]}
        assert mounted.paths[:3] == ["/app/schema.json", "/app/describe", "/app/wordcount/submit"]
    finally:
        mounted.close()


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


# -- transport-level faults: a mock transport answers what the test needs ----------------

SCHEMA = {
    "name": "raytask",
    "type": "service",
    "routes": [
        {
            "name": "generate",
            "route": "/generate",
            "is_task": True,
            "input": {"type": "object", "properties": {"prompt": {}}, "required": ["prompt"]},
            "output": {"type": "string"},
        }
    ],
}


def mock_client(kind: str, handler: Any, **kw: Any) -> Any:
    client_class = raytask.SyncHTTPClient if kind == "sync" else raytask.AsyncHTTPClient
    return client_class("http://x", transport=httpx.MockTransport(handler), **kw)


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

        client = mock_client(kind, handler, max_retries=0)
        with pytest.raises(cls, match=f"code {code}") as info:
            run(client.generate.submit(prompt="x"))
        assert info.value.status_code == code


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

    client = mock_client(kind, handler)
    task = run(client.generate.submit(prompt="x"))
    assert task.id == "a" * 32 and seen == ["/generate/submit"] * 3


def test_retries_are_bounded(kind: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/schema.json":
            return httpx.Response(200, json=SCHEMA)
        seen.append(request.url.path)
        return httpx.Response(429, json={"error": "full"}, headers={"Retry-After": "0"})

    client = mock_client(kind, handler, max_retries=2)
    with pytest.raises(raytask.QueueFullError):
        run(client.generate.submit(prompt="x"))
    assert len(seen) == 3  # the first try and two retries


# -- task control (SPEC §7) ------------------------------------------------------------


def test_options_travel_apart_from_the_arguments(client: Any, backend: ServedBackend) -> None:
    urgent = client.wordcount.options(priority=7, max_queue_s=60, ttl_s=120)
    task = run(urgent.submit(text="priority"))
    record = backend.table.get(task.id)
    assert record.kwargs == {"text": "priority"}
    assert (record.options.priority, record.options.max_queue_s, record.options.ttl_s) == (
        7,
        60,
        120,
    )
    state = run(task.get_state())
    assert state.priority == 7 and state.queue_position == 0
    keyed = client.wordcount.options(idempotency_key="once")
    assert run(keyed.submit(text="x")).id == run(keyed.submit(text="x")).id
    with pytest.raises(raytask.TaskConflictError, match="other inputs"):
        run(keyed.submit(text="y"))
    with pytest.raises(ValueError, match="priority"):
        client.wordcount.options(priority=11)
    with pytest.raises(ValueError, match="idempotency_key"):
        client.wordcount.options(idempotency_key="x" * 256)


def test_batches_use_the_batch_routes(client: Any, server: InProcessServer) -> None:
    inputs = [{"text": f"w{i}"} for i in range(30)]
    results = run(client.wordcount.map(inputs, timeout=30))
    assert [r["top"] for r in results] == [[f"w{i}"] for i in range(30)]
    assert server.paths.count("/wordcount/submit_many") == 1
    assert "/wordcount/submit" not in server.paths
    assert "/status_many" in server.paths
    # no status request per task: at most a long-poll on the oldest one between rounds
    assert server.paths.count("/wordcount/status") < 5


def test_listing_and_cancel_many(client: Any, backend: ServedBackend) -> None:
    tasks = run(client.wordcount.submit_many([{"text": f"t{i}"} for i in range(12)]))
    listed = run(client.wordcount.list(limit=5))  # pages of 5, read to the end
    assert [s.task_id for s in listed] == [t.id for t in reversed(tasks)]
    assert run(client.wordcount.cancel_many([tasks[0].id, tasks[1].id])) == 2
    cancelled = run(client.wordcount.list(status="cancelled"))
    assert [s.task_id for s in cancelled] == [tasks[1].id, tasks[0].id]
    assert run(client.wordcount.cancel_many(status="pending")) == 10
    assert backend.table.pending_count == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_server_that_cannot_be_reached_is_a_raytask_error_naming_the_url(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(raytask.ServerUnreachableError, match=f"cannot reach .* at {url}/") as err:
        if kind == "sync":
            with raytask.SyncHTTPClient(url, max_retries=0) as client:
                client.wordcount.submit(text="x")
        else:

            async def submit() -> None:
                async with raytask.AsyncHTTPClient(url, max_retries=0) as client:
                    await client.wordcount.submit(text="x")

            asyncio.run(submit())
    assert isinstance(err.value, raytask.RaytaskError) and err.value.url.startswith(url)


def test_delete_many_from_the_clients(client: Any, backend: ServedBackend) -> None:
    tasks = run(client.wordcount.submit_many([{"text": f"t{i}"} for i in range(4)]))
    run(backend.drain(limit=2))
    done = [t for t in tasks if backend.table.get(t.id).status.finished]
    answer = run(client.wordcount.delete_many([t.id for t in tasks]))
    assert (answer.deleted, answer.skipped) == (2, 2)
    with pytest.raises(errors.TaskNotFoundError):
        run(done[0].get_state())
    run(backend.drain())
    answer = run(client.wordcount.delete_many(status="success", older_than_s=0))
    assert (answer.deleted, answer.skipped) == (2, 0)
    assert backend.table.ids_in(raytask.TaskStatus) == []


def test_a_handle_shows_the_progress_it_last_read(client: Any, backend: ServedBackend) -> None:
    task = run(client.wordcount.submit(text="x"))
    assert task.progress is None
    backend.table.pop_next("wordcount")
    backend.table.report_progress(task.id, 1, 0.75, "three quarters")
    assert task.progress is None  # no request was sent yet
    run(task.get_state())
    assert task.progress is not None and task.progress.fraction == 0.75
    assert task.last_state is not None and task.last_state.progress == task.progress


def test_get_with_a_timeout_is_one_long_poll(
    client: Any, server: InProcessServer, backend: ServedBackend
) -> None:
    task = run(client.wordcount.submit(text="one request to wait"))
    before = len(server.paths)
    assert run(task.get(timeout=30))["words"] == 4
    assert server.paths[before:] == ["/wordcount/get"]  # held until done: one request
    assert backend.waits == 1
    other = run(client.wordcount.submit(text="and wait"))
    before = len(server.paths)
    assert run(other.wait(timeout=30)) is raytask.TaskStatus.SUCCESS
    assert server.paths[before:] == ["/wordcount/status"]


def test_submit_many_in_several_requests_is_still_all_or_none(
    kind: str, server: InProcessServer, backend: ServedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoints_module, "MAX_BATCH", 2)  # 5 inputs: requests of 2, 2, 1
    client = make_client(kind, server, max_retries=0)
    backend.run_after_polls = None  # nothing runs: the queue fills up
    backend.table.max_queue_size = 3
    endpoint = client.wordcount.options(priority=1)
    with pytest.raises(raytask.QueueFullError):
        if kind == "sync":
            endpoint.submit_many([{"text": f"w{i}"} for i in range(5)], concurrency=1)
        else:
            run(endpoint.submit_many([{"text": f"w{i}"} for i in range(5)], concurrency=1))
    assert backend.table.pending_count == 0  # the requests that fitted were taken back
    assert backend.table.counts()["wordcount"]["cancelled"] == 3
