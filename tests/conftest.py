"""Settings every tier shares: one auth mode for every Ray process the tests start."""

import os

# New Ray clusters enable token auth; a driver connecting by address would then fail.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
