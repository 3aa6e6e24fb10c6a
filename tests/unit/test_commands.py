"""What the README promises of its commands, read from the Makefile without running them."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from ..support import ROOT


def dry_run(*args: str) -> str:
    done = subprocess.run(
        ["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.replace("\\\n", " ")


def test_make_run_spills_to_spill_dir(tmp_path: Path) -> None:
    spill = tmp_path / "spill here"
    lines = dry_run("run", f"SPILL_DIR={spill}").splitlines()
    assert f"mkdir -p {spill}" in lines
    (serve,) = [line for line in lines if "raytask.server.launcher" in line]
    words = shlex.split(serve)
    # The variable Ray reads without its "unstable API" warning (RAY_object_spilling_config
    # printed it four times at every start).
    assert words[0] == f"RAY_object_spilling_directory={spill}"
    # HAProxy's ingress by default (benchmarks/haproxy.py); HAPROXY=0 for Serve's proxy
    assert words[1] == "RAY_SERVE_ENABLE_HA_PROXY=1"
    # serve run, under the launcher that makes SIGTERM a clean shutdown (tests/e2e/test_serve_run);
    # exec: the launcher replaces the recipe's shell, so a signal to it reaches the launcher
    assert words[2:] == [
        "exec",
        ".venv/bin/python",
        "-m",
        "raytask.server.launcher",
        "configs/app.yaml",
    ]


def test_make_run_haproxy_0_uses_serves_own_proxy() -> None:
    (serve,) = [line for line in dry_run("run", "HAPROXY=0").splitlines() if "launcher" in line]
    assert "RAY_SERVE_ENABLE_HA_PROXY=0" in shlex.split(serve)


def test_the_default_spill_dir_is_the_documented_one() -> None:
    documented = re.search(r"`SPILL_DIR` \(default `([^`]+)`\)", (ROOT / "README.md").read_text())
    assert documented is not None
    assert f"mkdir -p {documented.group(1)}" in dry_run("run").splitlines()


def test_make_test_is_what_ci_runs_and_it_builds_every_venv_it_needs() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    plan = dry_run("-B", "test")
    assert "-m pytest" in plan
    for venv in (".venv ", ".venv-bentoml", ".venv-client"):
        assert f"-m venv {venv.strip()}" in plan, venv
