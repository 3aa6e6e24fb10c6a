"""The unit tier: no Ray (tests/conftest.py refuses ray.init), a fake clock."""

import pytest

from ..support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
