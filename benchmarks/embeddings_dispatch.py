"""One-text embedding tasks against the same texts sent to the replica in full batches.

Issue 13's model target: 1-text tasks reach at least 80 % of the texts/s of direct calls to
the same replica in batches of its ``max_batch_size``. One local Ray serves the embedding
app (``max_batch_size`` 32, one replica); alternating rounds, side by side:

- ``direct_batched``: a driver calls the deployment's handle with 32 texts per call, every
  call at once (the model's best case: no task machinery, full batches);
- ``tasks_in_cluster``: the driver's ``submit_many`` of one task per text, until all
  succeeded (read from the manager's counts);
- ``tasks_http``: ``SyncHTTPClient.embed.map`` of one task per text (64 at a time, results
  read with long-polls).

    .venv/bin/python -m benchmarks.embeddings_dispatch [--texts 512] [--rounds 3]

Writes ``benchmarks/results/<date>-embeddings-dispatch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from local_serve import local_serve  # noqa: E402
from sides import alternate, until_succeeded, write  # noqa: E402

BATCH = 32


def direct(handle: Any, texts: list[str]) -> float:
    async def run() -> float:
        start = time.perf_counter()
        chunks = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        out = await asyncio.gather(*(handle.embed.remote(chunk) for chunk in chunks))
        assert sum(len(vectors) for vectors in out) == len(texts)
        return len(texts) / (time.perf_counter() - start)

    return asyncio.run(run())


def in_cluster(texts: list[str]) -> float:
    import raytask

    client = raytask.get_client("emb")
    inputs = [{"texts": [text]} for text in texts]
    return until_succeeded("emb", "embed", lambda: client.embed.submit_many(inputs), len(texts))


def over_http(url: str, texts: list[str]) -> float:
    import raytask

    with raytask.SyncHTTPClient(url, timeout=120) as client:
        start = time.perf_counter()
        out = client.embed.map([{"texts": [text]} for text in texts], concurrency=64, timeout=600)
        assert len(out) == len(texts)
        return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    texts = [f"text number {i} about topic {i % 13}" for i in range(args.texts)]
    with local_serve(num_cpus=4) as base:
        from ray import serve

        from deployments.embeddings import build

        config = {"max_batch_size": BATCH, "max_queue_size": 100_000}
        serve.run(build(config), name="emb", route_prefix="/emb")
        model = serve.get_deployment_handle("Embeddings", app_name="emb")
        url = f"{base}/emb"
        direct(model, texts[:64]), in_cluster(texts[:64]), over_http(url, texts[:64])  # warm
        runs = {
            "direct_batched": lambda: direct(model, texts),
            "tasks_in_cluster": lambda: in_cluster(texts),
            "tasks_http": lambda: over_http(url, texts),
        }
        rates = alternate(runs, args.rounds)
    write(args.out, "embeddings-dispatch", "texts_per_s", rates, baseline="direct_batched")


if __name__ == "__main__":
    main()
