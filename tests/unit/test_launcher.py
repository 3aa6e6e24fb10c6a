"""The launcher of `make run`: SIGTERM becomes one SIGINT for serve run, a stuck child is killed.

The supervisor runs in a subprocess of its own (signal handlers belong to a main thread) over a
small Python child that writes down the signals it receives.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ..support import ROOT, wait_for

CHILD = """
import signal, sys, time
from pathlib import Path
log = Path(sys.argv[1])
def note(signum, frame):
    with log.open("a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    if signum == signal.SIGINT and sys.argv[2] == "obliging":
        sys.exit(0)
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
log.with_suffix(".ready").touch()
while True:
    time.sleep(0.05)
"""


def start(tmp_path: Path, behaviour: str, grace_s: float) -> tuple[subprocess.Popen[bytes], Path]:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    log = tmp_path / "signals.log"
    command = [sys.executable, str(child), str(log), behaviour]
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys
                from raytask.server.launcher import supervise
                sys.exit(supervise({command!r}, grace_s={grace_s}))
            """),
        ],
        cwd=ROOT,
    )
    wait_for(log.with_suffix(".ready").exists, 30, "the child to start")
    return supervisor, log


def test_sigterm_reaches_the_child_as_one_sigint_and_its_exit_status_is_returned(
    tmp_path: Path,
) -> None:
    supervisor, log = start(tmp_path, "obliging", grace_s=30)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    assert log.read_text().split() == ["SIGINT"]


def test_a_second_signal_insists_and_a_stuck_child_is_killed_after_the_grace(
    tmp_path: Path,
) -> None:
    supervisor, log = start(tmp_path, "stubborn", grace_s=1.5)
    supervisor.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT" in log.read_text() if log.exists() else False, 10, "SIGINT")
    supervisor.send_signal(signal.SIGINT)
    # killed: a shell's 128 + 9
    assert supervisor.wait(30) == 128 + signal.SIGKILL
    assert log.read_text().split() == ["SIGINT", "SIGTERM"]


def test_what_the_child_leaves_in_its_group_is_stopped(tmp_path: Path) -> None:
    # serve run's children (Ray, HAProxy) live in its process group: a leftover one,
    # started in the background by the child, is stopped when the child exits.
    script = tmp_path / "leaves.py"
    pid_file = tmp_path / "orphan.pid"
    script.write_text(
        textwrap.dedent(f"""
            import subprocess, sys, pathlib
            orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            pathlib.Path({str(pid_file)!r}).write_text(str(orphan.pid))
        """)
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from raytask.server.launcher import supervise; "
            f"sys.exit(supervise([sys.executable, {str(script)!r}]))",
        ],
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    orphan = int(pid_file.read_text())
    wait_for(lambda: not _alive(orphan), 15, "the leftover process to be stopped")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_what_the_launcher_watches_comes_from_the_config(tmp_path: Path) -> None:
    from raytask.server.launcher import Served

    served = Served.of([str(ROOT / "configs" / "app.yaml")])
    assert (served.host, served.port) == ("127.0.0.1", 8000)
    assert served.apps == {"embeddings": "/", "demo": "/demo"}
    assert Served.of(["deployments.demo:build"]).apps == {"default": "/"}
    wide = tmp_path / "wide.yaml"
    wide.write_text("http_options: {host: 0.0.0.0, port: 9001}\napplications: [{name: a}]\n")
    assert (Served.of([str(wide)]).base, Served.of([str(wide)]).apps) == (
        "http://127.0.0.1:9001",
        {"a": "/"},
    )


def test_the_ready_line_names_the_url_endpoints_dashboard_and_api() -> None:
    from raytask.server.launcher import ready_line

    index = {"endpoints": [{"name": "wordcount"}, {"name": "noop"}]}
    assert ready_line("demo", "http://h:1/demo", index) == (
        "ready: demo at http://h:1/demo/ (endpoints: wordcount, noop); "
        "dashboard http://h:1/demo/dashboard, API http://h:1/demo/docs"
    )
    assert "(endpoints: ?)" in ready_line("locked", "http://h:1", None)  # GET / needs a token


def test_a_port_in_use_is_not_free() -> None:
    import socket

    from raytask.server.launcher import Served

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not Served(port=port).port_free()
    assert Served(port=port).port_free()
