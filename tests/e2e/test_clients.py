"""The Python clients against the real app on a real local Ray."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import raytask

from .conftest import App
from .seed import check_seed_snippets

pytestmark = pytest.mark.e2e


class WordCount(BaseModel):
    words: int
    top: list[str]


def test_seed_snippets_run_as_written(root_app: App) -> None:
    check_seed_snippets(root_app.url)


def test_seed_snippets_run_from_a_client_only_install(root_app: App) -> None:
    """`pip install raytask` (no extras, no Ray) runs the seed's snippets."""
    python = os.environ.get(
        "RAYTASK_CLIENT_PYTHON", str(Path(".venv-client/bin/python").absolute())
    )
    assert Path(python).exists(), (
        f"the client-only virtualenv is missing ({python}): `make test` creates it"
    )
    driver = Path(__file__).with_name("seed.py")
    done = subprocess.run(
        [python, str(driver), root_app.url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ray_importable"] is False and seen["snippets"] == "ok"
    assert 'pip install "raytask[serve]"' in seen["server_side_error"]


def test_sync_client_cancel_and_wait_paths(main_app: App) -> None:
    with raytask.SyncHTTPClient(main_app.url) as client:
        assert client.describe("two words").startswith("2 words")
        slow = client.block.submit(seconds=60, tag="sync-client")
        with pytest.raises(raytask.WaitTimeoutError):
            slow.get(timeout=0.5)
        main_app.wait_running("sync-client")
        assert slow.cancel() is raytask.TaskStatus.CANCELLED
        main_app.wait_stopped("sync-client")
        with pytest.raises(raytask.TaskCancelledError):
            slow.get()
        quick = client.wordcount.submit("a b b")
        assert quick.get(timeout=60) == {"words": 3, "top": ["b", "a"]}
        counted = quick.get(as_type=WordCount)
        assert isinstance(counted, WordCount) and counted.top == ["b", "a"]
        failed = client.fail.submit(message="client side")
        with pytest.raises(raytask.TaskFailedError, match="ValueError: client side"):
            failed.get(timeout=60)


async def test_async_client(main_app: App) -> None:
    async with raytask.AsyncHTTPClient(main_app.url) as client:
        task = await client.sleep.submit(seconds=0.1)
        assert await task.get(timeout=60) >= 0.1
        slow = await client.nap.submit(seconds=60, tag="async-client")
        with pytest.raises(raytask.WaitTimeoutError):
            await slow.get(timeout=0.5)
        await asyncio.to_thread(main_app.wait_running, "async-client")
        assert await slow.cancel() is raytask.TaskStatus.CANCELLED
        await asyncio.to_thread(main_app.wait_stopped, "async-client")
        again = await slow.retry()
        assert again.id != slow.id
        await again.cancel()


def test_batch_of_200_with_a_progress_bar(
    main_app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = [{"text": f"word{i} word{i} other"} for i in range(200)]
    with raytask.SyncHTTPClient(main_app.url) as client:
        results = client.wordcount.map(inputs, concurrency=16, timeout=300, progress=True)
    assert [r["top"][0] for r in results] == [f"word{i}" for i in range(200)]
    assert "200/200" in capsys.readouterr().err  # tqdm drew the bar


def test_in_cluster_client_from_a_driver(main_app: App) -> None:
    client = raytask.get_client("main")
    task = client.wordcount.submit("in cluster in")
    assert task.get(timeout=60) == {"words": 3, "top": ["in", "cluster"]}
    blob = client.blob.submit(size_mb=0.5)
    assert blob.get(timeout=60)[:3] == b"\x00\x01\x02"  # the Python value, not an HTTP body
    with pytest.raises(raytask.InvalidInputError):
        client.wordcount.submit(text=5)
    with pytest.raises(TypeError, match="missing required"):
        client.wordcount.submit()
    slow = client.block.submit(seconds=60, tag="in-cluster")
    main_app.wait_running("in-cluster")
    assert slow.get_status() is raytask.TaskStatus.IN_PROGRESS
    assert slow.cancel() is raytask.TaskStatus.CANCELLED
    # and it stops on the replica (a cancel racing the replica's assignment once did not)
    main_app.wait_stopped("in-cluster")
    assert client.block.task(slow.id).get_status() is raytask.TaskStatus.CANCELLED
    many = client.noop.submit_many([{}] * 50)
    assert all(t.wait(timeout=60) is raytask.TaskStatus.SUCCESS for t in many)
    with pytest.raises(raytask.EndpointNotFoundError):
        raytask.get_client("no-such-app")


SEPARATE_DRIVER = """
import raytask
client = raytask.get_client("main")  # no ray.init: it joins the running cluster
print(client.wordcount.submit(text="a separate driver").get(timeout=60))
"""


def test_get_client_from_a_separate_driver_joins_the_running_cluster(main_app: App) -> None:
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run(
        [sys.executable, "-c", SEPARATE_DRIVER],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "{'words': 3, 'top': ['a', 'driver', 'separate']}" in done.stdout
    assert "Started a local Ray instance" not in done.stderr  # joined, never started one


async def test_async_in_cluster_client(main_app: App) -> None:
    client = await raytask.get_async_client("main")
    task = await client.wordcount.submit(text="x y x")
    assert await task.get(timeout=60) == {"words": 3, "top": ["x", "y"]}
    assert await client.wordcount.task(task.id).get() == {"words": 3, "top": ["x", "y"]}
    with pytest.raises(raytask.EndpointNotFoundError):
        await raytask.get_async_client("no-such-app")
    tasks = await client.noop.submit_many([{}] * 10)
    for task in tasks:
        assert await task.wait(timeout=60) is raytask.TaskStatus.SUCCESS

    # Concurrent single submits share manager calls, and each gets its own task.
    texts = [f"word{i} " * (i % 3 + 1) for i in range(200)]
    tasks = await asyncio.gather(*(client.wordcount.submit(text=t) for t in texts))
    assert len({t.id for t in tasks}) == 200
    assert client._submits.batches < 100  # joined, not one call each
    results = await asyncio.gather(*(t.get(timeout=60) for t in tasks))
    assert [r["words"] for r in results] == [i % 3 + 1 for i in range(200)]


def test_in_cluster_submit_many_is_one_call_in_order(main_app: App) -> None:
    client = raytask.get_client("main")
    tasks = client.wordcount.submit_many([{"text": "w " * n} for n in range(1, 21)])
    assert [t.get(timeout=60)["words"] for t in tasks] == list(range(1, 21))
    with pytest.raises(raytask.InvalidInputError):  # validated before anything is queued
        client.wordcount.submit_many([{"text": "fine"}, {"text": 5}])


def test_real_bentoml_clients(root_app: App) -> None:
    check_bentoml_session(run_bentoml_driver(root_app.url))


def run_bentoml_driver(url: str, token: str | None = None) -> dict[str, Any]:
    """BentoML's own clients, sync and async, against ``url`` (from .venv-bentoml)."""
    python = os.environ.get(
        "RAYTASK_BENTOML_PYTHON", str(Path(".venv-bentoml/bin/python").absolute())
    )
    assert Path(python).exists(), (
        f"the BentoML virtualenv is missing ({python}): `make test` creates it"
    )
    driver = Path(__file__).with_name("bentoml_driver.py")
    done = subprocess.run(
        [python, str(driver), url, *([token] if token else [])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def check_bentoml_session(seen: dict[str, Any]) -> None:
    assert seen["version"].startswith("1.4.")
    sync, asynchronous = seen["sync"], seen["async"]
    assert sync["first_status"] in ("pending", "in_progress", "completed")
    assert sync["result"] == {"words": 6, "top": ["be", "to"]}
    assert asynchronous["result"] == {"words": 3, "top": ["a"]}
    for observed in (sync, asynchronous):
        assert observed["status"] == "completed" and observed["cancelled"] == "canceled"
        assert observed["failed"] == observed["retried"] == "failed" and observed["retry_new_id"]
    assert sync["describe"].startswith("2 words")


def test_delete_many_from_every_client_removes_rows_and_ids(main_app: App) -> None:
    from raytask.server.stores import SQLiteStore

    def rows(ids: list[str]) -> set[str]:
        store = SQLiteStore(main_app.settings["journal"])  # a second reader of the file
        try:
            return {row[0] for row in store.load()} & set(ids)
        finally:
            store.close()

    with raytask.SyncHTTPClient(main_app.url) as client:
        tasks = client.noop.submit_many([{}] * 6)
        assert all(t.wait(timeout=60) is raytask.TaskStatus.SUCCESS for t in tasks)
        ids = [t.id for t in tasks]
        assert rows(ids) == set(ids)
        waiting = client.block.submit(seconds=60, tag="delete-many")
        answer = client.noop.delete_many(ids[:2])
        assert (answer.deleted, answer.skipped) == (2, 0)
        assert client.block.delete_many([waiting.id]).skipped == 1  # unfinished: kept
        with pytest.raises(raytask.TaskNotFoundError):
            tasks[0].get_status()
        waiting.cancel()

    async def from_async() -> Any:
        async with raytask.AsyncHTTPClient(main_app.url) as client:
            return await client.noop.delete_many([ids[2]])

    assert asyncio.run(from_async()).deleted == 1
    assert raytask.get_client("main").noop.delete_many(ids[3:]).deleted == 3
    assert rows(ids) == set()
    gone = main_app.http.get("/noop/status", params={"task_id": ids[5]})
    assert gone.status_code == 404 and gone.json()["code"] == "task_not_found"
