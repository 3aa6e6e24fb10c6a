"""Batch jobs on a real Ray app (SPEC §11), driven by the official ``openai`` SDK over HTTP.

The whole flow (upload, create, poll, download), a line failing at run time, a bad line at
validation, cancel and expiry mid-job, and a manager SIGKILLed mid-job. (A ``serve run``
restart mid-job is in ``test_serve_run.py``.)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from ..support import wait_for
from .conftest import App, Cluster
from .test_durability import kill_manager

pytestmark = pytest.mark.e2e

ENDED = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def batch_app(cluster: Cluster) -> Iterator[App]:
    """Two lines at once per job and two tasks in flight: a job takes a while."""
    app = App(cluster, "batches", batch_window=2, max_in_flight=2)
    yield app
    app.close()


def sdk(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=5)


def jsonl(url: str, bodies: list[dict[str, Any]], prefix: str = "r") -> bytes:
    return b"".join(
        json.dumps(
            {"custom_id": f"{prefix}{i}", "method": "POST", "url": url, "body": body}
        ).encode()
        + b"\n"
        for i, body in enumerate(bodies)
    )


def start(client: openai.OpenAI, url: str, text: bytes, window: str = "24h") -> Any:
    uploaded = client.files.create(file=("in.jsonl", text), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=url,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
    )


def ended(client: openai.OpenAI, batch_id: str, timeout_s: float = 120) -> Any:
    def probe() -> Any:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in ENDED else None

    return wait_for(probe, timeout_s, f"batch {batch_id} to end")


def lines_of(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """The lines of an output or error file by custom_id (each must be there once)."""
    if file_id is None:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for text in client.files.content(file_id).text.splitlines():
        line = json.loads(text)
        assert line["custom_id"] not in found, f"{line['custom_id']} written twice"
        found[line["custom_id"]] = line
    return found


def test_the_openai_sdk_runs_a_job_end_to_end(batch_app: App) -> None:
    client = sdk(batch_app)
    texts = [f"word{i} word{i} other" for i in range(30)]
    batch = start(client, "/wordcount", jsonl("/wordcount", [{"text": t} for t in texts]))
    batch = ended(client, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.model_dump() == {"total": 30, "completed": 30, "failed": 0}
    output = lines_of(client, batch.output_file_id)
    assert sorted(output) == sorted(f"r{i}" for i in range(30))
    for custom_id, line in output.items():
        i = int(custom_id[1:])
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["response"]["body"] == {"words": 3, "top": [f"word{i}", "other"]}
    # A result held in the object store (not in the manager) is written out as well:
    # bytes, as base64.
    batch = ended(client, start(client, "/blob", jsonl("/blob", [{"size_mb": 0.5}])).id)
    (line,) = lines_of(client, batch.output_file_id).values()
    blob = base64.b64decode(line["response"]["body"])
    assert len(blob) == 512 * 1024 and blob[:3] == bytes([0, 1, 2])


def test_run_time_failures_go_to_the_error_file_and_bad_lines_fail_validation(
    batch_app: App,
) -> None:
    client = sdk(batch_app)
    batch = start(client, "/fail", jsonl("/fail", [{"message": "kaput"}, {}]))
    batch = ended(client, batch.id)
    assert batch.status == "completed" and batch.output_file_id is None
    assert batch.request_counts.failed == 2
    errors = lines_of(client, batch.error_file_id)
    assert errors["r0"]["error"]["code"] == "task_failed"
    assert "kaput" in errors["r0"]["error"]["message"]
    assert len(errors["r0"]["response"]["request_id"]) == 32
    bad = jsonl("/wordcount", [{"text": "fine"}, {"text": 7}, {"text": "fine"}])
    batch = ended(client, start(client, "/wordcount", bad).id)
    assert batch.status == "failed"
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "invalid_body")]
    assert batch.request_counts.completed == 0


def test_cancel_mid_job_keeps_the_finished_lines(batch_app: App) -> None:
    client = sdk(batch_app)
    bodies = [{"seconds": 0.3, "tag": f"cancel{i}"} for i in range(12)]
    batch = start(client, "/block", jsonl("/block", bodies))
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2,
        60,
        "two lines to finish",
    )
    assert client.batches.cancel(batch.id).status == "cancelling"
    batch = ended(client, batch.id)
    assert batch.status == "cancelled"
    done, rest = lines_of(client, batch.output_file_id), lines_of(client, batch.error_file_id)
    assert len(done) >= 2 and len(done) == batch.request_counts.completed
    assert sorted(done | rest) == sorted(f"r{i}" for i in range(12))  # every line once
    assert {line["error"]["code"] for line in rest.values()} == {"batch_cancelled"}


def test_a_job_expires_after_a_short_window_keeping_what_finished(batch_app: App) -> None:
    client = sdk(batch_app)
    bodies = [{"seconds": 0.5, "tag": f"expire{i}"} for i in range(40)]
    batch = start(client, "/block", jsonl("/block", bodies), window="3s")
    assert batch.expires_at - batch.created_at == 3
    batch = ended(client, batch.id, 60)
    assert batch.status == "expired" and batch.expired_at
    done, rest = lines_of(client, batch.output_file_id), lines_of(client, batch.error_file_id)
    assert 1 <= len(done) < 40 and len(done) + len(rest) == 40
    assert {line["error"]["code"] for line in rest.values()} == {"batch_expired"}


def test_a_manager_sigkilled_mid_job_ends_completed_with_every_line_once(
    batch_app: App,
) -> None:
    client = sdk(batch_app)
    bodies = [{"seconds": 0.1, "tag": f"kill{i}"} for i in range(80)]
    batch = start(client, "/block", jsonl("/block", bodies))
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 10,
        60,
        "ten lines to finish",
    )
    before = client.batches.retrieve(batch.id)
    kill_manager(batch_app)
    assert before.status == "in_progress" and before.request_counts.completed < 70  # mid-job
    batch = ended(client, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.model_dump() == {"total": 80, "completed": 80, "failed": 0}
    assert sorted(lines_of(client, batch.output_file_id)) == sorted(f"r{i}" for i in range(80))
    assert batch.error_file_id is None
    assert batch_app.stats()["journal_bytes"] < 64 * 1024  # the lines were never journaled


def test_the_in_cluster_clients_run_batches_over_ray(batch_app: App) -> None:
    import asyncio

    import raytask

    client = raytask.get_client("batches")
    job = client.wordcount.batch([{"text": f"in{i} cluster"} for i in range(20)])
    state = job.wait(timeout=120, progress=True)
    assert state.status == "completed" and state.request_counts["completed"] == 20
    results = dict(job.results())
    assert results["7"] == {"words": 2, "top": ["cluster", "in7"]}

    async def run_async() -> list[tuple[str, Any]]:
        aclient = await raytask.get_async_client("batches")
        ajob = await aclient.fail.batch([{"message": "async"}])
        await ajob.wait(timeout=120)
        return [outcome async for outcome in ajob.results()]

    ((custom_id, error),) = asyncio.run(run_async())
    assert custom_id == "0" and isinstance(error, raytask.TaskFailedError)
