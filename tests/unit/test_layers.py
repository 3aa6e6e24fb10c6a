"""The layers' import rules, and ``import raytask`` without Ray.

- ``raytask.core`` imports neither Ray, Starlette nor httpx, nor the other layers;
- ``raytask.client`` never imports ``raytask.server`` (only its cluster client needs Ray);
- with Ray and Starlette missing, ``import raytask`` and the HTTP clients work, and the
  names that need Ray raise an ImportError naming the ``serve`` extra.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "raytask"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative ones resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    names.add(f"{base}.{node.module}")
                else:  # from . import compat
                    names.update(f"{base}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module or "")
    return names


def layer_imports(layer: str) -> dict[str, set[str]]:
    return {path.name: imported_modules(path) for path in sorted((PACKAGE / layer).glob("*.py"))}


def roots(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_the_resolver_sees_relative_imports() -> None:
    assert "raytask.core.table" in imported_modules(PACKAGE / "core" / "dispatcher.py")
    assert "raytask.server.compat" in imported_modules(PACKAGE / "server" / "calls.py")
    assert "ray" in imported_modules(PACKAGE / "server" / "compat.py")


@pytest.mark.parametrize(("module", "names"), layer_imports("core").items())
def test_the_core_imports_no_ray_no_http_and_no_other_layer(module: str, names: set[str]) -> None:
    assert not roots(names) & {"ray", "starlette", "httpx", "fastapi", "tqdm"}, module
    assert not {n for n in names if n.startswith(("raytask.server", "raytask.client"))}, module


@pytest.mark.parametrize(("module", "names"), layer_imports("client").items())
def test_the_client_never_imports_the_server(module: str, names: set[str]) -> None:
    assert not {n for n in names if n.startswith("raytask.server")}, module
    if module not in {"cluster.py", "manager_calls.py"}:  # the in-cluster client needs Ray
        assert "ray" not in roots(names), module


BLOCK_SERVER_DEPENDENCIES = """
import importlib.abc, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "starlette", "fastapi"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
"""


def run_without_ray(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_SERVER_DEPENDENCIES + code],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=60,
        check=False,
    )


def test_import_raytask_and_its_http_clients_need_no_ray() -> None:
    done = run_without_ray(
        "import raytask\n"
        "client = raytask.SyncHTTPClient('http://127.0.0.1:9')\n"
        "aclient = raytask.AsyncHTTPClient('http://127.0.0.1:9')\n"
        "assert raytask.TaskStatus.SUCCESS.value == 'success'\n"
        "assert 'ray' not in sys.modules and 'starlette' not in sys.modules\n"
        "print('ok')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ["app", "get_client", "get_async_client", "QueueDepthPolicy"])
def test_server_side_names_without_ray_name_the_extra(name: str) -> None:
    done = run_without_ray(f"import raytask\nraytask.{name}\n")
    assert done.returncode != 0
    assert "ImportError" in done.stderr and 'pip install "raytask[serve]"' in done.stderr


def test_get_client_never_starts_a_cluster_and_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    from raytask.client import cluster

    joined: list[str] = []

    def init(address: str | None = None, **kwargs: object) -> None:
        joined.append(str(address))
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ConnectionError, match="start the app first"):
        cluster.get_client("demo")
    assert joined == ["auto"]  # joins (or fails); never ray.init() with no address
