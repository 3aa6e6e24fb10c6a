"""Names every runtime agrees on: where an app's task manager actor lives."""

from __future__ import annotations

NAMESPACE = "raytask"
"""The Ray namespace of every task manager (Serve replicas live in ``serve``)."""

INGRESS_NAME = "RaytaskIngress"
"""The deployment name of every raytask app's ingress (how one app finds the others)."""


def manager_name(app_name: str) -> str:
    """The actor name of the task manager of Serve application ``app_name``."""
    return f"raytask-manager:{app_name}"
