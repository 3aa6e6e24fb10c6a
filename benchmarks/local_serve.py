"""The local Ray + Serve every benchmark starts, on a free loopback port, and stops."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_serve(
    num_cpus: int = 4, port: int | None = None, temp_dir: str | None = None
) -> Iterator[str]:
    """Start a local Ray with Serve on 127.0.0.1; yield its base URL; stop both after.

    ``port`` defaults to a free one; ``temp_dir`` (Ray's session files) to Ray's own.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    port = port or free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
