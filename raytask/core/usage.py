"""Usage accounting: what each tenant's tasks cost, by endpoint and hour.

Each finished task is counted once, in the hour it finished, under its tenant and endpoint:
tasks, succeeded / failed / cancelled, ``run_s`` (wall seconds over all its attempts),
``gpu_s`` (``run_s`` times its deployment's ``num_gpus``) and its ``queue_s`` in a histogram
(log buckets 5 % apart, so ``queue_s_p50`` / ``queue_s_p99`` of any grouping are exact to
within 5 % and rows merge by adding). Rows are journaled with the task rows that finish
them (one commit: a manager crash neither loses nor doubles a count) and kept
``KEEP_S`` (400 days), past the tasks' own TTL.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .status import TaskStatus

if TYPE_CHECKING:
    from .record import TaskRecord

HOUR_S = 3600
KEEP_S = 400 * 86_400
GROUPS = ("tenant", "endpoint", "hour")
_BASE, _LOW = 1.05, 0.001  # histogram: bucket b holds queue_s in [LOW*BASE^b, LOW*BASE^(b+1))
OUTCOMES = {
    TaskStatus.SUCCESS: "succeeded",
    TaskStatus.FAILURE: "failed",
    TaskStatus.CANCELLED: "cancelled",
}

Key = tuple[str, str, int]  # (tenant, endpoint, hour start in epoch seconds)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """What ``GET /usage`` asks for: the rows of ``tenant`` and ``endpoint`` (None: all)
    whose hour overlaps ``[since, until)`` (epoch seconds), summed per ``group_by``."""

    tenant: str | None = None
    endpoint: str | None = None
    since: float | None = None
    until: float | None = None
    group_by: tuple[str, ...] = GROUPS


def _bucket(seconds: float) -> int:
    return -1 if seconds < _LOW else int(math.log(seconds / _LOW, _BASE))


def _value(bucket: int) -> float:
    return 0.0 if bucket < 0 else _LOW * _BASE ** (bucket + 0.5)


@dataclass(slots=True)
class UsageRow:
    """The counts of one (tenant, endpoint, hour), or of a grouping of them."""

    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    run_s: float = 0.0
    gpu_s: float = 0.0
    queue: Counter[int] = field(default_factory=Counter)  # histogram bucket -> tasks

    def add(self, other: UsageRow) -> None:
        self.tasks += other.tasks
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.run_s += other.run_s
        self.gpu_s += other.gpu_s
        self.queue.update(other.queue)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the tasks' ``queue_s`` (None: no task)."""
        total = sum(self.queue.values())
        if not total:
            return None
        rank, seen = q * (total - 1), 0
        for bucket in sorted(self.queue):
            seen += self.queue[bucket]
            if seen > rank:
                return round(_value(bucket), 6)
        return None  # pragma: no cover - the loop ends at the last bucket

    def dump(self) -> bytes:
        data: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("tasks", "succeeded", "failed", "cancelled", "run_s", "gpu_s")
        }
        data["queue"] = {str(b): n for b, n in self.queue.items()}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> UsageRow:
        fields = json.loads(data)
        queue = Counter({int(b): int(n) for b, n in fields.pop("queue", {}).items()})
        return cls(**fields, queue=queue)


def key_text(key: Key) -> str:
    """A row's key as the journal stores it."""
    return f"{key[2]}\x1f{key[1]}\x1f{key[0]}"


def key_of(text: str) -> Key:
    hour, endpoint, tenant = text.split("\x1f", 2)
    return tenant, endpoint, int(hour)


def iso_hour(hour: int) -> str:
    return datetime.fromtimestamp(hour, UTC).isoformat().replace("+00:00", "Z")


class Usage:
    """The hourly usage rows of one app, and the running totals ``/metrics`` reports.

    Args:
        on_dirty: called when a row changed (the journal starts a write).
    """

    def __init__(self, on_dirty: Callable[[], None] = lambda: None) -> None:
        # hour -> (tenant, endpoint) -> row: a query of a time range reads only its hours
        # (the dashboard asks for the last 24 of up to 9,600 every 2 s)
        self.hours: dict[int, dict[tuple[str, str], UsageRow]] = {}
        self.dirty: set[Key] = set()
        self.on_dirty = on_dirty
        self._pruned_at = 0.0
        # Since this manager started, seeded from the journal (Prometheus counters).
        self.tasks_total: Counter[tuple[str, str, str]] = Counter()
        self.run_total: Counter[tuple[str, str]] = Counter()
        self.gpu_total: Counter[tuple[str, str]] = Counter()

    def finished(self, record: TaskRecord) -> None:
        """Count a task that just finished (its seconds are final)."""
        self.count(
            record.tenant,
            record.endpoint,
            record.status,
            record.completed_at or 0.0,
            record.queue_s,
            record.run_s,
            record.gpus,
        )

    def count(
        self,
        tenant: str,
        endpoint: str,
        status: TaskStatus,
        completed_at: float,
        queue_s: float,
        run_s: float,
        gpus: float,
    ) -> None:
        """Count one finished task."""
        key = (tenant, endpoint, int(completed_at // HOUR_S) * HOUR_S)
        pairs = self.hours.setdefault(key[2], {})
        row = pairs.get((tenant, endpoint))
        if row is None:
            row = pairs[(tenant, endpoint)] = UsageRow()
        outcome = OUTCOMES[status]
        gpu_s = run_s * gpus
        row.tasks += 1  # (in place: this runs once per task, on the manager's loop)
        setattr(row, outcome, getattr(row, outcome) + 1)
        row.run_s += run_s
        row.gpu_s += gpu_s
        row.queue[_bucket(queue_s)] += 1
        self._totals(tenant, endpoint, ((outcome, 1),), run_s, gpu_s)
        if key not in self.dirty:
            self.dirty.add(key)
            self.on_dirty()

    def _totals(
        self,
        tenant: str,
        endpoint: str,
        outcomes: Iterable[tuple[str, int]],
        run_s: float,
        gpu_s: float,
    ) -> None:
        for outcome, number in outcomes:
            if number:
                self.tasks_total[(tenant, endpoint, outcome)] += number
        self.run_total[(tenant, endpoint)] += run_s
        self.gpu_total[(tenant, endpoint)] += gpu_s

    def take_dirty(self) -> tuple[list[tuple[str, bytes]], list[str]]:
        """The rows changed since the last call, as the journal stores them, and the
        keys of rows dropped (past ``KEEP_S``)."""
        puts, deletes = [], []
        for key in self.dirty:
            row = self.hours.get(key[2], {}).get((key[0], key[1]))
            if row is None:
                deletes.append(key_text(key))
            else:
                puts.append((key_text(key), row.dump()))
        self.dirty = set()
        return puts, deletes

    def restore(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """Load journaled rows (at start)."""
        for text, data in rows:
            key, row = key_of(text), UsageRow.load(data)
            self.hours.setdefault(key[2], {})[(key[0], key[1])] = row
            outcomes = ((o, getattr(row, o)) for o in OUTCOMES.values())
            self._totals(key[0], key[1], outcomes, row.run_s, row.gpu_s)

    def prune(self, now: float) -> None:
        """Drop the rows of hours older than ``KEEP_S`` (looks once an hour)."""
        if now - self._pruned_at < HOUR_S:
            return
        self._pruned_at = now
        old = [hour for hour in self.hours if hour + HOUR_S <= now - KEEP_S]
        for hour in old:
            self.dirty.update((tenant, endpoint, hour) for tenant, endpoint in self.hours.pop(hour))
        if old:
            self.on_dirty()

    def query(self, query: UsageQuery) -> list[dict[str, Any]]:
        """The ``GET /usage`` rows (see :class:`UsageQuery`; keys summed over are null)."""
        tenant, endpoint, since, until = query.tenant, query.endpoint, query.since, query.until
        wanted = [name in set(query.group_by) for name in GROUPS]
        groups: dict[tuple[Any, ...], UsageRow] = {}
        for hour, pairs in self.hours.items():
            if (since is not None and hour + HOUR_S <= since) or (
                until is not None and hour >= until
            ):
                continue
            for (tenant_, endpoint_), row in pairs.items():
                if (tenant is not None and tenant_ != tenant) or (
                    endpoint is not None and endpoint_ != endpoint
                ):
                    continue
                key = (tenant_, endpoint_, hour)
                group = tuple(
                    part if keep else None for part, keep in zip(key, wanted, strict=True)
                )
                groups.setdefault(group, UsageRow()).add(row)
        answers = []
        for (tenant_, endpoint_, hour), row in sorted(groups.items(), key=_order):
            answers.append(
                {
                    "tenant": tenant_,
                    "endpoint": endpoint_,
                    "hour": None if hour is None else iso_hour(hour),
                    "tasks": row.tasks,
                    "succeeded": row.succeeded,
                    "failed": row.failed,
                    "cancelled": row.cancelled,
                    "run_s": round(row.run_s, 6),
                    "gpu_s": round(row.gpu_s, 6),
                    "queue_s_p50": row.quantile(0.5),
                    "queue_s_p99": row.quantile(0.99),
                }
            )
        return answers


def _order(item: tuple[tuple[Any, ...], UsageRow]) -> tuple[Any, ...]:
    tenant, endpoint, hour = item[0]
    return (hour or 0, tenant or "", endpoint or "")
