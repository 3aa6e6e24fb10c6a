"""Cluster autoscaling on one machine, with Ray's fake multi-node provider.

    .venv/bin/python -m tests.e2e.fake_cluster      (prints a JSON report as its last line)

Starts a Ray head with ``RAY_FAKE_CLUSTER=1`` and ``configs/cluster-fake.yaml`` in a temp
dir of its own, deploys the demo with ``num_gpus: 1`` and raytask's backlog policy (min 0
replicas), submits slow tasks, and watches: backlog -> replicas wanted -> pending GPU
demand -> fake GPU nodes launched -> tasks done -> replicas to zero -> idle nodes removed.
At the end it kills exactly the processes of that temp dir (never ``ray stop``).
``tests/e2e/test_fake_cluster.py`` runs it and checks the report.

Two settings make the removal half work (each was found by watching it fail):
``provider.use_node_id_as_ip`` in the cluster config (the fake nodes share one IP, so the
autoscaler must know them by node id to see them idle), and Serve's proxies on the head
only (a proxy on a GPU node keeps it busy through its 30 s drain). A 1 s
``look_back_period_s`` only keeps the run short: replicas reach zero that long plus the
delay to zero after the last task (see :mod:`raytask.autoscaling`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from ..support import ROOT, free_port


def stop_processes_under(marker: str) -> int:
    """Kill the processes whose command line names ``marker`` (our temp dir)."""
    victims = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid != os.getpid() and marker in " ".join(process.info["cmdline"] or []):
            victims.append(process)
    for process in victims:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def gpu_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)


def replica_states(app: str) -> dict[str, int]:
    """``{"RUNNING": n, "STARTING": m, ...}`` for the app's Demo deployment."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or "Demo" not in status.deployments:
        return {}
    return dict(status.deployments["Demo"].replica_states)


def scenario(address: str, tasks: int, seconds: float) -> dict[str, Any]:
    import ray
    from ray import serve

    import raytask
    from tests.apps import Demo

    ray.init(address=address, log_to_driver=False)
    # proxies on the head only: a proxy on a GPU node keeps it busy for its 30 s drain
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": free_port()})
    model = Demo.options(
        max_ongoing_requests=1,
        ray_actor_options={"num_cpus": 0.5, "num_gpus": 1},
        autoscaling_config={
            "min_replicas": 0,
            "max_replicas": 2,
            "initial_replicas": 0,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 2,
            "downscale_to_zero_delay_s": 2,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 1,  # zero comes this long plus the delay after the last task
            "policy": {
                "policy_function": "raytask.autoscaling:QueueDepthPolicy",
                "policy_kwargs": {"target_tasks_per_replica": 1, "refresh_interval_s": 0.25},
            },
        },
    ).bind()
    serve.run(raytask.app(model), name="fake", route_prefix="/fake")
    client = raytask.get_client("fake")
    start = time.monotonic()
    handles = client.sleep.submit_many([{"seconds": seconds}] * tasks)
    timeline: list[tuple[float, int, int, int, int]] = []
    first_gpu_node_s = first_replica_s = None

    def sample() -> None:
        nonlocal first_gpu_node_s, first_replica_s
        t = round(time.monotonic() - start, 1)
        nodes, states = gpu_nodes(), replica_states("fake")
        running, starting = states.get("RUNNING", 0), states.get("STARTING", 0)
        pending = ray.get(client._manager.depth.remote()).get("Demo", {}).get("pending", 0)
        timeline.append((t, nodes, starting, running, pending))
        if nodes and first_gpu_node_s is None:
            first_gpu_node_s = t
        if running and first_replica_s is None:
            first_replica_s = t

    deadline = time.monotonic() + 300
    while not all(h.get_status().finished for h in handles):
        assert time.monotonic() < deadline, f"tasks not done: {timeline[-5:]}"
        sample()
        time.sleep(0.5)
    done_s = round(time.monotonic() - start, 1)
    statuses = [h.get_status().value for h in handles]
    peak_nodes = max((point[1] for point in timeline), default=0)
    removal_deadline = time.monotonic() + 180
    while gpu_nodes() > 0 and time.monotonic() < removal_deadline:
        sample()
        time.sleep(1)
    sample()
    serve.shutdown()
    ray.shutdown()
    idle = [t for t, _, starting, running, _ in timeline if t >= done_s and not starting + running]
    return {
        "statuses": statuses,
        "first_gpu_node_s": first_gpu_node_s,
        "first_replica_s": first_replica_s,
        "all_done_s": done_s,
        "peak_gpu_nodes": peak_nodes,
        "replicas_zero_s": idle[0] if idle else None,
        "nodes_left_at_end": timeline[-1][1],
        "ended_s": timeline[-1][0],
        "timeline (t s, gpu nodes, replicas starting, running, tasks pending)": timeline,
    }


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="raytask-fake-"))
    port = free_port()
    import ray._private.services

    address = f"{ray._private.services.get_node_ip_address()}:{port}"
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    config = yaml.safe_load((ROOT / "configs" / "cluster-fake.yaml").read_text())
    config["provider"]["gcs_address"] = address
    config_path = tmp / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "RAY_FAKE_CLUSTER": "1",
        # the provider knows the head by this id; the autoscaler must see the same
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_AUTH_MODE": "disabled",
    }
    ray_cli = Path(sys.executable).parent / "ray"
    try:
        subprocess.run(
            [
                str(ray_cli),
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=2",
                "--num-gpus=0",
                f"--temp-dir={tmp / 'ray'}",
                f"--autoscaling-config={config_path}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.environ.update(RAY_AUTH_MODE="disabled")
        report = scenario(address, tasks=6, seconds=3)
    finally:
        report_stopped = stop_processes_under(str(tmp))
    report["processes_stopped"] = report_stopped
    report["temp_dir"] = str(tmp)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
