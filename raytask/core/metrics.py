"""The queue's metrics as a function of one queue snapshot.

The same samples feed ``GET /metrics`` (Prometheus text, :func:`prometheus_text`) and the
Ray gauges the manager exports (Ray's Prometheus endpoint prefixes them with ``ray_``), so
a metric's name, help and labels are written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .status import TaskStatus


@dataclass(frozen=True)
class Metric:
    """One gauge: its name, help text and label names."""

    name: str
    help: str
    labels: tuple[str, ...]


TASKS = Metric("raytask_tasks", "Tasks by endpoint and state.", ("app", "endpoint", "status"))
OLDEST_PENDING_AGE = Metric(
    "raytask_oldest_pending_age_seconds", "Age of the oldest pending task.", ("app", "endpoint")
)
IN_FLIGHT = Metric(
    "raytask_in_flight", "Tasks dispatched to a model deployment.", ("app", "deployment")
)
METRICS = (TASKS, OLDEST_PENDING_AGE, IN_FLIGHT)

Sample = tuple[Metric, dict[str, str], float]


def samples(snapshot: dict[str, Any]) -> list[Sample]:
    """Every gauge value of a ``GET /queue`` snapshot: ``(metric, labels, value)``."""
    app = snapshot.get("app", "")
    out: list[Sample] = []
    for endpoint, numbers in snapshot["endpoints"].items():
        for status in TaskStatus:
            labels = {"app": app, "endpoint": endpoint, "status": status.value}
            out.append((TASKS, labels, float(numbers.get(status.value, 0))))
    for endpoint, numbers in snapshot["endpoints"].items():
        age = float(numbers.get("oldest_pending_age_s") or 0.0)
        out.append((OLDEST_PENDING_AGE, {"app": app, "endpoint": endpoint}, age))
    for deployment, numbers in snapshot["deployments"].items():
        labels = {"app": app, "deployment": deployment}
        out.append((IN_FLIGHT, labels, float(numbers["in_flight"])))
    return out


TENANT_TASKS = Metric(
    "raytask_tenant_tasks_total",
    "Finished tasks by tenant, endpoint and state.",
    ("tenant", "endpoint", "status"),
)
TENANT_RUN = Metric(
    "raytask_tenant_run_seconds_total",
    "Wall seconds tenants' tasks ran, over all attempts.",
    ("tenant", "endpoint"),
)
TENANT_GPU = Metric(
    "raytask_tenant_gpu_seconds_total",
    "Run seconds times the deployment's num_gpus.",
    ("tenant", "endpoint"),
)
COUNTERS = (TENANT_TASKS, TENANT_RUN, TENANT_GPU)


def counter_samples(snapshot: dict[str, Any]) -> list[Sample]:
    """The ``raytask_tenant_*`` counters of a ``GET /queue`` snapshot (usage since the
    journal's oldest hour kept)."""
    out: list[Sample] = []
    for tenant, numbers in sorted((snapshot.get("tenants") or {}).items()):
        for endpoint, usage in sorted(numbers["endpoints"].items()):
            for status in TaskStatus:
                if status.finished:
                    labels = {"tenant": tenant, "endpoint": endpoint, "status": status.value}
                    out.append((TENANT_TASKS, labels, float(usage[status.value])))
            labels = {"tenant": tenant, "endpoint": endpoint}
            out.append((TENANT_RUN, labels, float(usage["run_s"])))
            out.append((TENANT_GPU, labels, float(usage["gpu_s"])))
    return out


def _value(metric: Metric, value: float) -> str:
    if metric is OLDEST_PENDING_AGE:
        return f"{value:.3f}"
    return f"{round(value, 6):.15g}"  # exact counts past a million, microsecond sums


def prometheus_text(snapshot: dict[str, Any]) -> str:
    """A queue snapshot in Prometheus' text exposition format."""
    by_metric: dict[Metric, list[str]] = {metric: [] for metric in (*METRICS, *COUNTERS)}
    for metric, labels, value in samples(snapshot) + counter_samples(snapshot):
        rendered = ",".join(f'{key}="{labels[key]}"' for key in metric.labels)
        by_metric[metric].append(f"{metric.name}{{{rendered}}} {_value(metric, value)}")
    lines: list[str] = []
    for metric, rows in by_metric.items():
        kind = "counter" if metric in COUNTERS else "gauge"
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {kind}", *rows]
    return "\n".join(lines) + "\n"
