"""Settings every tier shares: one auth mode for every Ray process the tests start, no
Ray at all outside the end-to-end tier, and no journal outside a test's own directory."""

import os
import tempfile
from pathlib import Path

import pytest

from .support import FakeClock

# New Ray clusters enable token auth; a driver connecting by address would then fail.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# The default journal lives under $RAYTASK_HOME (~/.raytask): never a user's. Ray
# processes the e2e tier starts inherit this; its apps also name their own journals.
os.environ["RAYTASK_HOME"] = tempfile.mkdtemp(prefix="raytask-tests-home-")

E2E = Path(__file__).parent / "e2e"


@pytest.fixture(autouse=True)
def _own_journal_home(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Outside e2e, each test's default journals go to its own temporary directory."""
    if E2E not in Path(request.node.path).parents:
        monkeypatch.setenv("RAYTASK_HOME", str(tmp_path / "raytask-home"))


@pytest.fixture(autouse=True)
def _no_ray_outside_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit and HTTP tiers never start Ray: any attempt fails the test."""
    if E2E in Path(request.node.path).parents:
        return
    import ray  # every tier's tests import the server side, which needs Ray installed

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("only the e2e tier may start Ray")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand, at a realistic epoch (2027), so times format."""
    return FakeClock(1_800_000_000.0)
