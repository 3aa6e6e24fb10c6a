"""Embedding throughput through the task endpoints, batched vs unbatched (run by hand).

    .venv/bin/python benchmarks/embeddings_throughput.py [--tasks 512] [--texts-per-task 1]

It starts a local Ray + Serve on 127.0.0.1 and deploys the embedding app twice, side by
side in one run: ``max_batch_size=32`` and ``max_batch_size=1``. For each it submits the
same tasks over HTTP (submit -> wait -> get, concurrency 64) and prints texts per second.
It stops what it started.
"""

from __future__ import annotations

import argparse
import time

from local_serve import local_serve

import raytask


def measure(url: str, tasks: int, per_task: int, rounds: int) -> list[float]:
    inputs = [
        {"texts": [f"text {i}.{j} about something" for j in range(per_task)]} for i in range(tasks)
    ]
    rates = []
    with raytask.SyncHTTPClient(url, timeout=120) as client:
        client.embed.map(inputs[:32], concurrency=32, timeout=600)  # warm up
        for _ in range(rounds):
            start = time.perf_counter()
            client.embed.map(inputs, concurrency=64, timeout=600)
            rates.append(tasks * per_task / (time.perf_counter() - start))
        sizes = {int(k): v for k, v in client.info()["batch_sizes"].items()}
    mean = sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
    print(f"  requests per forward pass: mean {mean:.1f}, largest {max(sizes, default=0)}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=512)
    parser.add_argument("--texts-per-task", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with local_serve() as url:
        from ray import serve

        from deployments.embeddings import build

        for label, batch in (
            ("batched (max_batch_size=32)", 32),
            ("unbatched (max_batch_size=1)", 1),
        ):
            name = f"emb{batch}"
            serve.run(build({"max_batch_size": batch}), name=name, route_prefix=f"/{name}")
            rates = measure(f"{url}/{name}", args.tasks, args.texts_per_task, args.rounds)
            rates.sort()
            print(
                f"{label}: {rates[len(rates) // 2]:.0f} texts/s median "
                f"(min {rates[0]:.0f}, max {rates[-1]:.0f}; {args.tasks} tasks x "
                f"{args.texts_per_task} text, {args.rounds} rounds)"
            )
            serve.delete(name)


if __name__ == "__main__":
    main()
