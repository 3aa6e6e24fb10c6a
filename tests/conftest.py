"""Settings every tier shares: one auth mode for every Ray process the tests start, and
no Ray at all outside the end-to-end tier."""

import os
from pathlib import Path

import pytest

from .support import FakeClock

# New Ray clusters enable token auth; a driver connecting by address would then fail.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

E2E = Path(__file__).parent / "e2e"


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
