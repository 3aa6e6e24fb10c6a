"""What oversized requests get through Serve's proxy and through Ray's HAProxy ingress.

Runs ``serve run`` (the demo app alone, at ``/``, on a free loopback port) once with
Serve's own proxy and once with ``RAY_SERVE_ENABLE_HA_PROXY=1``, sends each probe below,
and writes a table of the answers (status, content type, first words of the body, or
the transport error) to ``benchmarks/results/<date>-limits.md``.

    .venv/bin/python -m benchmarks.limits
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.serve_run import serve_run  # the e2e tier's `serve run`, stopped by group

HERE = Path(__file__).parent
MiB = 1 << 20

Probe = Callable[[httpx.Client], httpx.Response]


def probes() -> dict[str, Probe]:
    ok = {"text": "a b"}

    def header(size: int) -> Probe:
        return lambda http: http.post("/wordcount/submit", json=ok, headers={"x-pad": "a" * size})

    def headers(count: int) -> Probe:
        many = [(f"x-h{i}", "v") for i in range(count)]
        return lambda http: http.post("/wordcount/submit", json=ok, headers=many)

    def url(size: int) -> Probe:
        return lambda http: http.get(f"/wordcount/status?task_id={'0' * 32}&pad={'a' * size}")

    def body(size: int) -> Probe:
        padded = b'{"text": "' + b"a" * size + b'"}'
        return lambda http: http.post(
            "/wordcount/submit", content=padded, headers={"content-type": "application/json"}
        )

    return {
        "a plain submit": lambda http: http.post("/wordcount/submit", json=ok),
        "one 8 KiB header": header(8 * 1024),
        "one 60 KiB header": header(60 * 1024),
        "one 1 MiB header": header(MiB),
        "one 32 MiB header": header(32 * MiB),
        "90 headers (and httpx's 7)": headers(90),
        "2,000 headers": headers(2000),
        "8 KiB URL": url(8 * 1024 - 100),
        "60 KiB URL (httpx sends at most 64 KiB)": url(60 * 1024),
        "16 MiB body": body(16 * MiB - 64),
        "17 MiB body": body(17 * MiB),
    }


def edit(config: dict[str, Any]) -> None:
    """The demo app alone, at ``/``."""
    config["applications"] = [a for a in config["applications"] if a["name"] == "demo"]
    config["applications"][0]["route_prefix"] = "/"
    config["applications"][0]["import_path"] = "tests.apps:build"  # noop and friends


def answer(http: httpx.Client, probe: Probe) -> str:
    try:
        response = probe(http)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return f"no answer ({type(exc).__name__})"
    kind = response.headers.get("content-type", "-").split(";")[0]
    text = response.text[:60].replace("|", "/").replace("\n", " ")
    return f"{response.status_code} {kind} `{text}`"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="raytask-limits-") as tmp:
        for mode, haproxy in (("Serve's proxy", False), ("HAProxy", True)):
            env = {"RAY_SERVE_ENABLE_HA_PROXY": "1"} if haproxy else {}
            with serve_run("app.yaml", Path(tmp), env=env, edit=edit) as http:
                for name, probe in probes().items():
                    rows.setdefault(name, {})[mode] = answer(http, probe)
                    print(f"{mode:14} {name:20} {rows[name][mode]}", flush=True)
    lines = ["| request | Serve's proxy | HAProxy |", "|---|---|---|"]
    for name, answers in rows.items():
        lines.append(f"| {name} | " + " | ".join(answers.values()) + " |")
    out = args.out / f"{datetime.date.today()}-limits.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
