"""Batch jobs over HTTP (SPEC §11): the ``openai`` SDK against the real routes, in process.

The jobs run in :class:`~raytask.server.jobs.Jobs` over the real task service; their line
tasks run when a test drains the queue, so every state can be seen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import raytask
from raytask.core.config import AppConfig
from raytask.server.jobs import Jobs
from raytask.server.routes import Routes

from ..support import FakeClock, wait_for
from .conftest import InProcessServer, ServedBackend

TOKENS = ("a" * 16, "b" * 16)


def request_line(custom_id: str, body: dict[str, Any], url: str = "/wordcount") -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return json.dumps(line).encode() + b"\n"


def words(n: int) -> bytes:
    return b"".join(request_line(f"req-{i}", {"text": f"w{i} w{i} x", "top": 1}) for i in range(n))


class Served:
    """An app with jobs, served in process to the openai SDK."""

    def __init__(self, root: Path, clock: FakeClock, **settings: Any) -> None:
        self.config = AppConfig(batch_dir=str(root), **settings)
        self.clock = clock
        self.backend = ServedBackend(self.config, clock)
        self.backend.jobs = Jobs(self.backend, root, self.backend.endpoints)
        routes = Routes(list(self.backend.endpoints.values()), self.backend, self.config)
        self.server = InProcessServer(routes.asgi_app())

    def sdk(self, token: str = "unused") -> openai.OpenAI:
        http = httpx.Client(transport=self.server.sync_transport())
        return openai.OpenAI(base_url="http://raytask/v1", api_key=token, http_client=http)

    def http(self) -> httpx.Client:
        return httpx.Client(transport=self.server.sync_transport(), base_url="http://raytask")

    def run(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.server._loop).result(30)

    def drain(self, limit: int | None = None) -> None:
        async def drain() -> None:
            await asyncio.sleep(0.05)  # the job's driver feeds its lines meanwhile
            await self.backend.drain(limit)
            await asyncio.sleep(0.05)

        self.run(drain())

    def finish(self, client: openai.OpenAI, batch_id: str) -> Any:
        def done() -> Any:
            self.drain()
            batch = client.batches.retrieve(batch_id)
            return (
                batch if batch.status in ("completed", "failed", "cancelled", "expired") else None
            )

        return wait_for(done, 20, f"batch {batch_id} to end")

    def auto_drain(self) -> None:
        """Run queued tasks as they come (as replicas would), until the app closes."""

        async def forever() -> None:
            while True:
                await asyncio.sleep(0.02)
                await self.backend.drain()

        self._drainer = asyncio.run_coroutine_threadsafe(forever(), self.server._loop)

    def close(self) -> None:
        if getattr(self, "_drainer", None) is not None:
            self._drainer.cancel()
        self.run(self.backend.jobs.close())
        self.server.close()


@pytest.fixture
def served(tmp_path: Path, clock: FakeClock) -> Iterator[Served]:
    app = Served(tmp_path / "files", clock)
    yield app
    app.close()


def start(
    client: openai.OpenAI,
    data: bytes,
    endpoint: str = "/wordcount",
    window: str = "24h",
) -> Any:
    """Upload ``data`` and start a batch of it, as the SDK does."""
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
    )


def outputs(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_the_openai_sdk_runs_a_job_from_upload_to_results(served: Served) -> None:
    client = served.sdk()
    uploaded = client.files.create(file=("in.jsonl", words(5)), purpose="batch")
    assert uploaded.object == "file" and uploaded.bytes == len(words(5))
    assert uploaded.filename == "in.jsonl" and uploaded.purpose == "batch"
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/wordcount",  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"run": "1"},
    )
    assert batch.id.startswith("batch_") and batch.status == "validating"
    assert batch.metadata == {"run": "1"}
    batch = served.finish(client, batch.id)
    assert batch.status == "completed", batch.errors
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.error_file_id is None
    lines = outputs(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == [f"req-{i}" for i in range(5)]
    for line in lines:
        i = line["custom_id"].removeprefix("req-")
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        assert len(line["response"]["request_id"]) == 32
        assert line["response"]["body"]["top"] == [f"w{i}"]
    # The line tasks are gone from the table once their lines are written.
    assert all(not any(c.values()) for c in served.backend.table.counts().values())


def test_a_line_that_fails_at_run_time_lands_in_the_error_file(served: Served) -> None:
    client = served.sdk()
    text = request_line("ok", {}, "/fail")  # fail() raises with its message
    text += request_line("also", {"message": "kaput"}, "/fail")
    batch = start(client, text, "/fail", window="1h")
    batch = served.finish(client, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 2, "completed": 0, "failed": 2}
    assert batch.output_file_id is None
    errors = {line["custom_id"]: line for line in outputs(client, batch.error_file_id)}
    assert set(errors) == {"ok", "also"}
    assert errors["also"]["error"]["code"] == "task_failed"
    assert "kaput" in errors["also"]["error"]["message"]
    assert errors["also"]["response"]["status_code"] == 500


def test_a_bad_line_fails_the_batch_with_its_line_number_and_nothing_runs(
    served: Served,
) -> None:
    client = served.sdk()
    text = (
        request_line("a", {"text": "x"})
        + b"{not json\n"
        + request_line("b", {"text": 3})  # not a string
        + request_line("c", {"text": "y"}, url="/fail")
        + request_line("a", {"text": "z"})
        + b'{"custom_id": "d", "method": "GET", "url": "/wordcount", "body": {}}\n'
    )
    batch = start(client, text)
    batch = served.finish(client, batch.id)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None
    found = {(e.line, e.code) for e in batch.errors.data or []}
    assert found == {
        (2, "invalid_json_line"),
        (3, "invalid_body"),
        (4, "mismatched_url"),
        (6, "invalid_method"),
    }
    assert served.backend.table.pending_count == 0
    # Only once every line is well formed are custom ids compared.
    text = request_line("a", {"text": "x"}) + request_line("a", {"text": "z"})
    batch = start(client, text)
    batch = served.finish(client, batch.id)
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "duplicate_custom_id")]


def test_cancel_keeps_the_finished_lines_and_files_the_rest_as_cancelled(
    tmp_path: Path, clock: FakeClock
) -> None:
    served = Served(tmp_path / "files", clock, batch_window=2)
    try:
        client = served.sdk()
        batch = start(client, words(6))
        wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress", 10)
        wait_for(lambda: served.backend.table.pending_count == 2, 10)  # the window
        served.drain(limit=1)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed == 1, 10)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        batch = served.finish(client, batch.id)
        assert batch.status == "cancelled" and batch.cancelled_at
        done = outputs(client, batch.output_file_id)
        rest = outputs(client, batch.error_file_id)
        ids = [line["custom_id"] for line in done + rest]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(6))  # every line once
        assert len(done) == batch.request_counts.completed >= 1
        assert {line["error"]["code"] for line in rest} == {"batch_cancelled"}
        assert all(line["response"] is None for line in rest)
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(batch.id)
    finally:
        served.close()


def test_a_job_past_its_window_expires_keeping_what_finished(
    tmp_path: Path, clock: FakeClock
) -> None:
    served = Served(tmp_path / "files", clock, batch_window=1)
    try:
        client = served.sdk()
        batch = start(client, words(3), window="1h")
        assert batch.expires_at == batch.created_at + 3600
        wait_for(lambda: served.backend.table.pending_count == 1, 10)
        served.drain(limit=1)
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed == 1, 10)
        clock.advance(3601)
        batch = served.finish(client, batch.id)
        assert batch.status == "expired" and batch.expired_at
        done, rest = outputs(client, batch.output_file_id), outputs(client, batch.error_file_id)
        assert len(done) + len(rest) == 3 and len(done) >= 1
        assert {line["error"]["code"] for line in rest} == {"batch_expired"}
    finally:
        served.close()


def test_a_restarted_manager_finishes_the_job_and_runs_no_finished_line_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    root = tmp_path / "files"
    first = Served(root, clock, batch_window=3)
    client = first.sdk()
    batch = start(client, words(10))
    wait_for(lambda: first.backend.table.pending_count == 3, 10)
    first.drain(limit=3)
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed == 3, 10)
    # Line 5 (req-4) is cancelled while line 4 still waits: the progress then holds a
    # finished line past the first unfinished one.
    wait_for(lambda: first.backend.table.pending_count == 3, 10)
    (line5,) = [r for r in first.backend.table._records.values() if r.kwargs["text"] == "w4 w4 x"]
    first.http().post("/wordcount/cancel", params={"task_id": line5.task_id})
    progress = root / "batches" / f"{batch.id}.progress"

    def committed() -> tuple[int, int]:
        data = progress.read_bytes() if progress.exists() else bytes(32)
        return int.from_bytes(data[16:24], "little"), int.from_bytes(data[24:32], "little")

    wait_for(lambda: committed() == (3, 1), 10, "the commit of 3 done and 1 cancelled")
    first.drain(limit=1)  # finished after the last commit: runs again, written once
    first.close()  # the manager is gone; its table with it

    second = Served(root, clock, batch_window=3)
    try:
        second.run(_start(second.backend.jobs))
        client = second.sdk()
        batch = second.finish(client, batch.id)
        assert batch.status == "completed"
        assert batch.request_counts.model_dump() == {"total": 10, "completed": 9, "failed": 1}
        ids = [line["custom_id"] for line in outputs(client, batch.output_file_id)]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(10) if i != 4)
        (cancelled,) = outputs(client, batch.error_file_id)  # not run again after the restart
        assert cancelled["custom_id"] == "req-4" and cancelled["error"]["code"] == "cancelled"
    finally:
        second.close()


async def _start(jobs: Jobs) -> None:
    jobs.start()


def test_files_and_batches_belong_to_their_token(tmp_path: Path, clock: FakeClock) -> None:
    served = Served(tmp_path / "files", clock, api_tokens=TOKENS, token_isolation=True)
    try:
        mine, theirs = served.sdk(TOKENS[0]), served.sdk(TOKENS[1])
        uploaded = mine.files.create(file=("in.jsonl", words(1)), purpose="batch")
        batch = mine.batches.create(
            input_file_id=uploaded.id,
            endpoint="/wordcount",  # type: ignore[arg-type]
            completion_window="24h",
        )
        with pytest.raises(openai.NotFoundError):
            theirs.files.retrieve(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            theirs.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            theirs.batches.create(
                input_file_id=uploaded.id,
                endpoint="/wordcount",  # type: ignore[arg-type]
                completion_window="24h",
            )
        assert theirs.batches.list().data == [] and theirs.files.list().data == []
        assert [b.id for b in mine.batches.list().data] == [batch.id]
        with pytest.raises(openai.AuthenticationError):
            served.sdk("c" * 16).files.list()
    finally:
        served.close()


def test_bad_uploads_and_requests_are_clear_4xx_and_change_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    served = Served(tmp_path / "files", clock, max_file_bytes=1000)
    try:
        http, client = served.http(), served.sdk()
        assert (
            http.post(
                "/v1/files", files={"file": ("a", b"x" * 1001)}, data={"purpose": "batch"}
            ).status_code
            == 413
        )
        answer = http.post("/v1/files", files={"file": ("a", b"{}")}, data={"purpose": "fine-tune"})
        assert answer.status_code == 422 and "purpose" in answer.json()["error"]
        answer = http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a", b"1")})
        assert answer.status_code == 422 and "'file'" in answer.json()["error"]
        answer = http.post("/v1/files", content=b"{}", headers={"content-type": "application/json"})
        assert answer.status_code == 400
        assert client.files.list().data == []
        assert list((tmp_path / "files").glob("file-*")) == []  # no bytes left behind
        uploaded = client.files.create(file=("in.jsonl", words(1)), purpose="batch")
        for body, status in (
            ({"input_file_id": uploaded.id, "endpoint": "/nope", "completion_window": "24h"}, 422),
            (
                {
                    "input_file_id": uploaded.id,
                    "endpoint": "/wordcount",
                    "completion_window": "200h",
                },
                422,
            ),
            ({"input_file_id": "file-0", "endpoint": "/wordcount"}, 404),
            ({"input_file_id": uploaded.id, "endpoint": "/wordcount", "priority": 99}, 422),
            ({"input_file_id": uploaded.id, "endpoint": "/wordcount", "model": "x"}, 422),
        ):
            answer = http.post("/v1/batches", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert "error" in answer.json()
        assert client.batches.list().data == []
        assert http.get("/v1/batches", params={"limit": "0"}).status_code == 422
        assert http.get("/v1/files/file-123/content").status_code == 404
        deleted = client.files.delete(uploaded.id)
        assert deleted.deleted and client.files.list().data == []
    finally:
        served.close()


def test_batches_list_newest_first_in_pages(served: Served) -> None:
    client = served.sdk()
    uploaded = client.files.create(file=("in.jsonl", words(1)), purpose="batch")
    made = []
    for _ in range(3):
        made.append(
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/wordcount",  # type: ignore[arg-type]
                completion_window="24h",
            ).id
        )
        served.clock.advance(1)
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list()] == made[::-1]  # the SDK pages with after=


def test_the_sync_client_runs_a_batch_and_reads_its_results(served: Served) -> None:
    served.auto_drain()
    client = raytask.SyncHTTPClient("http://raytask", transport=served.server.sync_transport())
    job = client.wordcount.batch([{"text": f"a{i} a{i} b"} for i in range(5)] + [{"text": "c"}])
    assert isinstance(job, raytask.Job) and job.id.startswith("batch_")
    state = job.wait(timeout=20, progress=True)
    assert state.status == "completed" and state.request_counts["completed"] == 6
    results = dict(job.results())
    assert results["0"] == {"words": 3, "top": ["a0", "b"]}
    assert [results[str(i)]["top"][0] for i in range(5)] == [f"a{i}" for i in range(5)]
    assert results["5"] == {"words": 1, "top": ["c"]} and len(results) == 6
    failing = client.fail.batch([{"message": "nope"}])
    failing.wait(timeout=20)
    ((custom_id, error),) = failing.results()
    assert custom_id == "0" and isinstance(error, raytask.TaskFailedError)
    assert "nope" in str(error)
    with pytest.raises(TypeError):
        client.wordcount.batch([{"txt": "misspelled"}])  # checked before anything is sent


async def test_the_async_client_runs_a_batch_and_cancels_one(served: Served) -> None:
    client = raytask.AsyncHTTPClient("http://raytask", transport=served.server.async_transport())
    job = await client.wordcount.batch([{"text": "x y"}] * 3)
    assert isinstance(job, raytask.AsyncJob)
    with pytest.raises(raytask.WaitTimeoutError):  # nothing runs its lines yet
        await job.wait(timeout=0.3, poll_s=0.1)
    state = await job.cancel()  # nothing ran yet: every line is cancelled
    assert state.status in ("cancelling", "cancelled")
    state = await job.wait(timeout=20)
    assert state.status == "cancelled" and state.request_counts["completed"] == 0
    outcomes = [outcome async for outcome in job.results()]
    assert sorted(c for c, _ in outcomes) == ["0", "1", "2"]
    assert all("batch_cancelled" in str(error) for _, error in outcomes)
    served.auto_drain()
    job = await client.wordcount.batch([{"text": "x y"}] * 2)
    assert (await job.wait(timeout=20)).request_counts["completed"] == 2
    outcomes = sorted([r async for r in job.results()])
    assert outcomes == [(str(i), {"words": 2, "top": ["x", "y"]}) for i in range(2)]
    await client.close()


def test_only_the_upload_route_takes_multipart_and_foreign_pages_may_not_upload(
    served: Served,
) -> None:
    http = served.http()
    form = {"files": {"file": ("a.jsonl", words(1))}, "data": {"purpose": "batch"}}
    assert http.post("/wordcount/submit", **form).status_code == 415  # a form post: refused
    assert http.post("/v1/batches", **form).status_code == 415
    foreign = http.post("/v1/files", headers={"Origin": "https://evil.example"}, **form)
    assert foreign.status_code == 403
    assert http.get("/v1/files").json()["data"] == []
    assert http.post("/v1/files", **form).status_code == 200


def test_an_interactive_task_runs_before_the_queued_lines_of_a_job(
    tmp_path: Path, clock: FakeClock
) -> None:
    served = Served(tmp_path / "files", clock, batch_window=50)
    try:
        client = served.sdk()
        start(client, words(50))
        wait_for(lambda: served.backend.table.pending_count == 50, 10)  # the job's lines wait
        http = served.http()
        task_id = http.post("/wordcount/submit", json={"text": "me first"}).json()["task_id"]
        state = http.get("/wordcount/status", params={"task_id": task_id}).json()
        assert state["queue_position"] == 0 and state["priority"] == 0
        served.drain(limit=1)
        assert http.get("/wordcount/status", params={"task_id": task_id}).json()["status"] == (
            "success"
        )
        assert served.backend.table.pending_count == 50  # no line ran before it
    finally:
        served.close()


def test_a_jobs_lines_are_never_journaled(tmp_path: Path, clock: FakeClock) -> None:
    from raytask.server.journal import Journal, SQLiteStore

    served = Served(tmp_path / "files", clock)
    store = SQLiteStore(tmp_path / "journal.db")
    served.backend.journal = Journal(store, key=b"k" * 32)
    try:
        client = served.sdk()
        batch = start(client, words(20))
        http = served.http()
        http.post("/wordcount/submit", json={"text": "an interactive task is journaled"})
        assert served.finish(client, batch.id).request_counts.completed == 20
        served.run(served.backend.journal.flush())
        records, _, _ = Journal(SQLiteStore(tmp_path / "journal.db"), key=b"k" * 32).load()
        assert [r.kwargs for r in records] == [{"text": "an interactive task is journaled"}]
    finally:
        served.close()
