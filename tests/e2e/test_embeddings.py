"""The embedding model behind the task endpoints, on the session's local Ray."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import raytask

from .conftest import Cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embeddings(cluster: Cluster) -> Iterator[str]:
    from ray import serve

    from deployments.embeddings import build

    serve.run(
        build({"max_batch_size": 16, "batch_wait_timeout_s": 0.05}), name="emb", route_prefix="/emb"
    )
    yield f"{cluster.url}/emb"
    serve.delete("emb")


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_100_embedding_tasks_batched(embeddings: str) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(100)]
    with raytask.SyncHTTPClient(embeddings) as client:
        results: list[Any] = client.embed.map(
            [{"texts": [t]} for t in texts], concurrency=32, timeout=600
        )
        info = client.info()
    assert len(results) == 100
    for (vector,) in results:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(dot(vector, vector)), 1.0, abs_tol=1e-4)
    batched = {int(size): count for size, count in info["batch_sizes"].items() if int(size) > 1}
    assert batched, f"no batch held more than one request: {info['batch_sizes']}"


def test_semantics_paraphrase_is_closer_than_unrelated(embeddings: str) -> None:
    with raytask.SyncHTTPClient(embeddings) as client:
        task = client.embed.submit(
            texts=[
                "A man is eating food.",
                "Someone is having a meal.",
                "The stock market fell sharply today.",
            ]
        )
        eating, meal, stocks = task.get(timeout=120)
        assert dot(eating, meal) > dot(eating, stocks) + 0.2
        assert client.similarity("A cat sat on the mat.", "A cat is sitting on a mat.") > 0.8


def test_bad_embedding_input_is_422(embeddings: str) -> None:
    with httpx.Client(base_url=embeddings) as http:
        for body in (
            {"texts": []},
            {"texts": "not a list"},
            {"texts": [1, 2]},
            {"texts": ["x"] * 257},
        ):
            response = http.post("/embed/submit", json=body)
            assert response.status_code == 422, (body, response.text)


def test_one_text_tasks_reach_the_model_together(embeddings: str, cluster: Cluster) -> None:
    """Batched dispatch: 32 queued one-text tasks go to the replica in one request and run
    there at once, so ``@serve.batch`` fills whole batches (16 here) with them."""
    import ray

    from raytask.core.names import NAMESPACE, manager_name

    manager = ray.get_actor(manager_name("emb"), namespace=NAMESPACE)
    before = ray.get(manager.stats.remote())["dispatched"]
    with raytask.SyncHTTPClient(embeddings) as client:
        sizes_before = client.info()["batch_sizes"]
        tasks = client.embed.submit_many([{"texts": [f"text {i}"]} for i in range(32)])
        assert all(len(task.get(timeout=300)) == 1 for task in tasks)
        sizes = client.info()["batch_sizes"]
    after = ray.get(manager.stats.remote())["dispatched"]
    assert after["attempts"] - before["attempts"] == 32
    assert after["batches"] - before["batches"] <= 2
    full = sizes.get("16", 0) - sizes_before.get("16", 0)
    assert full >= 1, f"no full model batch: {sizes_before} -> {sizes}"


def test_embed_stream_sends_each_forward_pass_as_one_chunk(embeddings: str) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(100)]
    with raytask.SyncHTTPClient(embeddings) as client:
        task = client.embed_stream.submit(texts=texts, batch_size=16)
        chunks = list(task.stream())
        assert [len(chunk) for chunk in chunks] == [16] * 6 + [4]  # one per forward pass
        assert task.last_state is not None and task.last_state.progress is not None
        assert task.last_state.progress.fraction == 1.0
        assert task.get(timeout=60) == chunks  # the result: the list of the chunks
        first, last = client.embed.submit(texts=[texts[0], texts[99]]).get(timeout=120)
    vectors = [vector for chunk in chunks for vector in chunk]
    assert dot(vectors[0], first) > 0.9999 and dot(vectors[99], last) > 0.9999  # same model
