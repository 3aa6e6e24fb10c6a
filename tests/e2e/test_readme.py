"""The README's examples run as written, each in a fresh Python, against a real app.

Every Python block after a ``<!-- readme-example -->`` marker runs with only its URL and
app name pointed at the test session's demo app; each ``# -> X`` comment is an output
the block must print, in order. So the README cannot drift from the code again.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import ROOT, wait_for
from .conftest import App

pytestmark = pytest.mark.e2e

MARKER = "<!-- readme-example -->\n```python\n"


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = []
    start = text.find(MARKER)
    while start != -1:
        body = start + len(MARKER)
        blocks.append(text[body : text.index("```", body)])
        start = text.find(MARKER, body)
    return blocks


def test_the_readme_has_its_examples() -> None:
    blocks = readme_examples()
    assert len(blocks) == 6 and all("# ->" in block for block in blocks)


@pytest.mark.parametrize(
    "index", range(6), ids=["sync", "async", "in-cluster", "control", "stream", "batch"]
)
def test_a_readme_example_runs_as_written(main_app: App, index: int, tmp_path: Path) -> None:
    import ray

    code = readme_examples()[index]
    code = code.replace("http://localhost:8000/demo", main_app.url)
    code = code.replace('get_client("demo")', f'get_client("{main_app.name}")')
    env = {
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PATH": "/usr/bin:/bin",
        # the in-cluster client unpickles the app's classes: the tests' app is tests.apps
        "PYTHONPATH": str(ROOT),
    }
    # Should it ever hang, every thread's stack goes to stderr before the test's timeout.
    watchdog = "import faulthandler; faulthandler.dump_traceback_later(170, exit=True)\n"
    done = subprocess.run(
        [sys.executable, "-c", watchdog + code],
        cwd=tmp_path,
        env={**env, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    expected = re.findall(r"# -> (.*)$", code, re.M)
    assert printed == expected, f"printed {printed}, the README says {expected}"


FIRST_SCREEN = "<!-- first-screen -->\n```bash\n"
CURL_EXAMPLE = "<!-- curl-example -->\n```bash\n"


def shell_blocks(marker: str = FIRST_SCREEN) -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks, start = [], text.find(marker)
    while start != -1:
        body = start + len(marker)
        blocks.append(text[body : text.index("```", body)])
        start = text.find(marker, body)
    return blocks


def run_shell_blocks(
    blocks: list[str], base_url: str, prefix: str = "", cwd: Path | None = None
) -> None:
    """Run README shell blocks against ``base_url`` as a newcomer would, in ``cwd``: each
    ``curl`` or ``printf`` line as written (``localhost:8000`` is ``base_url``, ``/demo`` is
    ``prefix`` when given; a ``curl`` line ending ``# until "TEXT"`` again, as a reader
    would, until it prints TEXT); the ``# ...`` lines after it, the output it must print
    (``…`` stands for anything, a lone ``#`` for an empty line); ``NAME=…`` the id the
    command before printed ("paste the id"): its ``task_id``, or the field its comment
    names (``# the FIELD it printed``)."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine: the README's shell examples use it")
    host = base_url.removeprefix("http://").rstrip("/")
    variables: dict[str, str] = {}
    printed, expected = None, []

    def check() -> None:
        if expected:
            pattern = "\n".join(".*".join(map(re.escape, e.split("…"))) for e in expected)
            assert re.fullmatch(pattern, printed or "", re.S), (expected, printed)
            expected.clear()

    def run(command: str) -> str:
        done = subprocess.run(
            ["bash", "-c", command],
            env={"PATH": "/usr/bin:/bin", **variables},
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
            cwd=cwd,
        )
        return done.stdout.replace("\r\n", "\n").strip()

    for line in "".join(blocks).splitlines():
        if line.startswith(("curl ", "printf ")):
            check()
            command, _, comment = line.partition("  #")
            command = command.replace("localhost:8000", host)
            if prefix:
                command = command.replace(f"{host}/demo/", f"{host}{prefix}/")
            printed = run(command)
            if until := re.search(r'until "(.*)"', comment):
                text = until.group(1)

                def again(command: str = command, text: str = text) -> str | None:
                    out = run(command)
                    return out if text in out else None

                printed = wait_for(again, 60, f"{command} to print {text}")
        elif line == "#" or line.startswith("# "):
            expected.append(line[2:])
        elif match := re.match(r"^([A-Z]+)=…(?:\s+# the (\w+) it printed)?", line):
            check()
            field = match.group(2) or "task_id"
            variables[match.group(1)] = json.loads(printed or "{}")[field]
    check()


def check_first_screen(base_url: str) -> None:
    """The README's first screen against a `serve run` of configs/app.yaml."""
    blocks = shell_blocks()
    assert len(blocks) == 2
    run_shell_blocks(blocks, base_url)


def test_the_readme_curl_example_of_a_stream_runs_as_written(main_app: App) -> None:
    stream, _ = shell_blocks(CURL_EXAMPLE)
    assert "curl -sN" in stream and "event: done" in stream
    base, _, prefix = main_app.url.removeprefix("http://").partition("/")
    run_shell_blocks([stream], f"http://{base}", f"/{prefix}")


def test_the_readme_curl_example_of_a_batch_job_runs_as_written(
    main_app: App, tmp_path: Path
) -> None:
    _, batch = shell_blocks(CURL_EXAMPLE)
    assert "/v1/files" in batch and "/v1/batches" in batch
    base, _, prefix = main_app.url.removeprefix("http://").partition("/")
    run_shell_blocks([batch], f"http://{base}", f"/{prefix}", tmp_path)


def test_the_readme_first_screen_speaks_only_of_what_the_reader_has() -> None:
    text = (ROOT / "README.md").read_text()
    for word in ("seed", "SPEC", "§"):
        assert word not in text, word
    first_screen = text[: text.index("\n## ", text.index("## Try it") + 1)]
    for topic in ("make run", "curl", "Ctrl-C", "RAYTASK_HOME", "delete_many", "make test"):
        assert topic in first_screen, topic
