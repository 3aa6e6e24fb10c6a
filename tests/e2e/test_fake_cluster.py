"""Cluster autoscaling on Ray's fake multi-node provider: GPU nodes come and go on a backlog.

Runs ``python -m tests.e2e.fake_cluster`` (its own Ray head, in its own temp dir) and checks
the whole chain in its report. About 45 s on a 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from ..support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


def test_backlog_adds_fake_gpu_nodes_and_idle_nodes_are_removed() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.e2e.fake_cluster"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    timeline = report["timeline (t s, gpu nodes, replicas starting, running, tasks pending)"]

    assert report["statuses"] == ["success"] * 6
    # min_workers 0 and a head without GPUs: no GPU node and no replica before the backlog
    assert timeline[0][1] == 0 and timeline[0][3] == 0 and timeline[0][4] > 0
    # With min_workers 0 the autoscaler launches a GPU node only for pending GPU demand,
    # that is the replicas the policy asked for and Ray could not place: a node launched
    # after t=0 proves it. (A 0.5 s sample landing in the ~2 s window while replicas wait
    # with no node is not required: on a loaded machine it can miss.)
    assert report["first_gpu_node_s"] > 0
    assert report["peak_gpu_nodes"] >= 1
    assert report["first_gpu_node_s"] <= report["first_replica_s"] < report["all_done_s"]
    # idle: replicas back to zero, then every GPU node removed
    assert report["replicas_zero_s"] is not None
    assert report["nodes_left_at_end"] == 0
    # and the script left none of its Ray processes behind
    assert report["processes_stopped"] > 0
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if report["temp_dir"] in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
