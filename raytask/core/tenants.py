"""Tenants: who submitted a task (a named API token), and the share and quotas each gets.

A tenant is the name of the token that submitted a task (``anonymous`` on an app without
tokens). The ``tenants`` setting gives each a ``weight`` (its turns in the fair queue, see
:mod:`raytask.core.queue`) and quotas; the ``default`` entry fills what a tenant's own
entry leaves out, for every tenant. :class:`Quotas` keeps the counts the quotas need, as
the table's tasks move:

- ``max_pending``: the tenant's queued tasks, app-wide (429 ``tenant_queue_full``);
- ``submits_per_s``: a token bucket holding up to twice the rate (429 ``rate_limited``,
  ``Retry-After`` when the next submit fits); a submit of ``n`` tasks takes ``n``;
- ``max_running``: the tenant's tasks running at once, app-wide. A tenant at its cap is in
  :attr:`Quotas.capped`, which the dispatcher passes over (its tasks wait, others run).

Plain Python with the table's clock: every rule is unit-tested on a fake clock.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import RateLimitedError, TenantQueueFullError
from .queue import ANONYMOUS, stride
from .status import TaskStatus

DEFAULT = "default"  # the tenants entry that fills every tenant's unset settings


class TenantSettings(BaseModel):
    """One tenant's share and quotas (``null``: no limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight: float = Field(
        1.0, gt=0, le=1000, allow_inf_nan=False, description="Its turns against other tenants."
    )
    max_pending: int | None = Field(None, ge=0, description="Its queued tasks, app-wide.")
    max_running: int | None = Field(None, ge=1, description="Its tasks running at once, app-wide.")
    submits_per_s: float | None = Field(
        None, gt=0, le=1e6, allow_inf_nan=False, description="Tasks it may submit a second."
    )


def resolve(tenants: dict[str, TenantSettings], name: str) -> TenantSettings:
    """``name``'s settings: its own entry over the ``default`` entry over the built-in
    defaults."""
    base = tenants.get(DEFAULT)
    own = tenants.get(name) if name != DEFAULT else None
    if own is None:
        return base or TenantSettings()
    if base is None:
        return own
    return base.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})


class Quotas:
    """The per-tenant counts behind the quotas (see the module docstring).

    Args:
        clock: seconds (the table's clock).
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.settings: dict[str, TenantSettings] = {}
        self._resolved: dict[str, TenantSettings] = {}
        self.pending: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.capped: set[str] = set()  # tenants at their max_running
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    def configure(self, settings: dict[str, TenantSettings]) -> None:
        """Take (new) settings; counts carry over."""
        self.settings, self._resolved = dict(settings), {}
        self._buckets.clear()
        self.capped = {t for t, n in self.running.items() if self._at_cap(t, n)}

    def of(self, tenant: str) -> TenantSettings:
        """``tenant``'s settings (cached: a submit asks for them)."""
        found = self._resolved.get(tenant)
        if found is None:
            found = self._resolved[tenant] = resolve(self.settings, tenant)
        return found

    def step(self, tenant: str) -> int:
        """``tenant``'s tag step in the fair queue (from its weight)."""
        return stride(self.of(tenant).weight)

    def admit(self, tenant: str, count: int, retry_after_s: float, rate: bool = True) -> None:
        """Take ``count`` new tasks of ``tenant``, or refuse them all (``rate``: count
        them against its ``submits_per_s``).

        Raises:
            TenantQueueFullError: they would pass ``max_pending``.
            RateLimitedError: its bucket holds too few submits now.
        """
        settings = self.of(tenant)
        limit = settings.max_pending
        if limit is not None and self.pending[tenant] + count > limit:
            room = max(0, limit - self.pending[tenant])
            raise TenantQueueFullError(
                f"tenant {tenant!r} has its max_pending={limit} tasks queued (room for "
                f"{room}, {count} submitted); retry later",
                retry_after_s=retry_after_s,
            )
        if rate and settings.submits_per_s is not None:
            self._take(tenant, count, settings.submits_per_s)

    def _take(self, tenant: str, count: int, rate: float) -> None:
        """Take ``count`` from the tenant's bucket (``2 * rate`` deep). A submit larger
        than the bucket is taken once the bucket is full, and leaves it in debt."""
        now, burst = self.clock(), 2 * rate
        tokens, at = self._buckets.get(tenant, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - at) * rate)
        needed = min(float(count), burst)
        if tokens + 1e-6 * burst < needed:  # (epoch clocks: sub-microsecond noise)
            self._buckets[tenant] = (tokens, now)
            wait = (needed - tokens) / rate
            raise RateLimitedError(
                f"tenant {tenant!r} submits over its submits_per_s={rate:g}; the next "
                f"{count} fit in {wait:.2f} s",
                retry_after_s=max(1.0, math.ceil(wait)),
            )
        self._buckets[tenant] = (tokens - count, now)

    def _at_cap(self, tenant: str, running: int) -> bool:
        cap = self.of(tenant).max_running
        return cap is not None and running >= cap

    def moved(self, tenant: str, previous: TaskStatus | None, target: TaskStatus) -> None:
        """A task of ``tenant`` moved (``previous`` None: it is new)."""
        if previous is TaskStatus.PENDING:
            self.pending[tenant] -= 1
        elif previous is TaskStatus.IN_PROGRESS:
            self._run(tenant, -1)
        if target is TaskStatus.PENDING:
            self.pending[tenant] += 1
        elif target is TaskStatus.IN_PROGRESS:
            self._run(tenant, 1)

    def _run(self, tenant: str, change: int) -> None:
        running = self.running[tenant] = self.running[tenant] + change
        if self._at_cap(tenant, running):
            self.capped.add(tenant)
        elif self.capped:
            self.capped.discard(tenant)


__all__ = ["ANONYMOUS", "DEFAULT", "Quotas", "TenantSettings", "resolve"]
