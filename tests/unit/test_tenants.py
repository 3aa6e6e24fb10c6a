"""Tenants (SPEC 12): settings, quotas on a fake clock, and usage accounting."""

from __future__ import annotations

import pytest

from raytask.core.config import AppConfig, TaskOptions
from raytask.core.dispatcher import Dispatcher, EndpointRoute
from raytask.core.errors import ConfigError, QueueFullError, RateLimitedError, TenantQueueFullError
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable
from raytask.core.tenants import TenantSettings, resolve
from raytask.core.usage import HOUR_S, KEEP_S, Usage, UsageQuery

from ..support import FakeClock

T = "t" * 16  # a well-formed token
OPTIONS = TaskOptions()


def table_with(clock: FakeClock, **tenants: dict) -> TaskTable:
    table = TaskTable(clock=clock)
    table.quotas.configure({n: TenantSettings(**s) for n, s in tenants.items()})
    return table


def submit(table: TaskTable, tenant: str, n: int = 1, endpoint: str = "e") -> list[str]:
    return [table.submit(endpoint, {"i": i}, OPTIONS, tenant=tenant).task_id for i in range(n)]


# -- settings ------------------------------------------------------------------------


def test_a_tenants_own_entry_overrides_the_default_entry_field_by_field() -> None:
    config = AppConfig(
        tenants={"default": {"max_pending": 10, "weight": 2}, "alice": {"weight": 3}}
    )
    alice, bob = resolve(config.tenants, "alice"), resolve(config.tenants, "bob")
    assert (alice.weight, alice.max_pending) == (3, 10)
    assert (bob.weight, bob.max_pending, bob.max_running) == (2, 10, None)
    assert resolve({}, "x") == TenantSettings()


@pytest.mark.parametrize(
    "tenants",
    [{"alice": {"weight": 0}}, {"alice": {"max_running": 0}}, {"bad name": {}}, {"a": {"x": 1}}],
)
def test_bad_tenant_settings_are_config_errors(tenants: dict) -> None:
    with pytest.raises(ConfigError):
        AppConfig.parse({"tenants": tenants})


def test_tokens_name_their_tenants(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RAYTASK_API_TOKENS", raising=False)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# team tokens\nbob {'b' * 16}\n{'c' * 16}\nbob {'d' * 16}\n")
    config = AppConfig(api_tokens={"alice": "a" * 16}, api_tokens_file=str(tokens))
    assert config.named_api_tokens() == {
        "a" * 16: "alice",
        "b" * 16: "bob",
        "c" * 16: "token-1",
        "d" * 16: "bob",  # two tokens, one tenant (a rotation)
    }
    listed = AppConfig(api_tokens=["a" * 16, "b" * 16], admin_tokens=["z" * 16])
    assert listed.named_api_tokens() == {
        "a" * 16: "token-1",
        "b" * 16: "token-2",
        "z" * 16: "admin",
    }
    assert set(listed.named_api_tokens()) == {"a" * 16, "b" * 16, "z" * 16}


def test_a_malformed_name_or_token_is_named_by_place_never_by_value(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        AppConfig.parse({"api_tokens": {"al ice": T}})
    assert T not in str(caught.value)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"bob short\n{T}\n")
    with pytest.raises(ConfigError, match="line 1") as caught:
        AppConfig(api_tokens_file=str(tokens)).named_api_tokens()
    assert "short" not in str(caught.value)


# -- quotas ----------------------------------------------------------------------------


def test_max_pending_refuses_one_tenant_and_not_the_others(clock: FakeClock) -> None:
    table = table_with(clock, alice={"max_pending": 2})
    submit(table, "alice", 2)
    with pytest.raises(TenantQueueFullError) as caught:
        submit(table, "alice")
    assert caught.value.code == "tenant_queue_full" and caught.value.status_code == 429
    assert isinstance(caught.value, QueueFullError) and caught.value.retry_after_s >= 1
    with pytest.raises(TenantQueueFullError):  # all or none
        table.submit_many("e", [{}, {}], OPTIONS, tenant="alice")
    submit(table, "bob", 5)
    assert table.pending_count == 7
    table.pop_next("e")  # alice's first starts: room for one more
    submit(table, "alice")


def test_submits_per_s_is_a_bucket_twice_the_rate(clock: FakeClock) -> None:
    table = table_with(clock, alice={"submits_per_s": 2})
    submit(table, "alice", 4)  # the burst
    with pytest.raises(RateLimitedError) as caught:
        submit(table, "alice")
    assert caught.value.code == "rate_limited" and caught.value.retry_after_s == 1
    submit(table, "bob", 50)  # others untouched
    clock.advance(0.5)
    submit(table, "alice")  # one more came in 0.5 s
    with pytest.raises(RateLimitedError):
        submit(table, "alice")
    clock.advance(100)
    submit(table, "alice", 4)  # full again, never more than the burst
    with pytest.raises(RateLimitedError):
        submit(table, "alice")


def test_a_refused_submit_takes_nothing_from_the_bucket(clock: FakeClock) -> None:
    table = table_with(clock, alice={"submits_per_s": 1, "max_pending": 1})
    submit(table, "alice")
    with pytest.raises(TenantQueueFullError):
        submit(table, "alice")
    table.pop_next("e")
    submit(table, "alice")  # the bucket (2 deep) still had its second


def test_a_submit_larger_than_the_bucket_waits_for_a_full_one_and_leaves_a_debt(
    clock: FakeClock,
) -> None:
    table = table_with(clock, alice={"submits_per_s": 10})
    table.submit_many("e", [{}] * 100, OPTIONS, tenant="alice")  # the bucket was full
    clock.advance(5)  # 50 back: the debt (80) is not paid yet
    with pytest.raises(RateLimitedError) as caught:
        submit(table, "alice")
    assert caught.value.retry_after_s == 4  # (1 - (-30)) / 10 s, rounded up
    clock.advance(3.1)
    submit(table, "alice")


def test_job_lines_count_against_max_pending_but_not_the_rate(clock: FakeClock) -> None:
    table = table_with(clock, alice={"submits_per_s": 1, "max_pending": 5})
    for i in range(5):
        table.submit("e", {"i": i}, OPTIONS, tenant="alice", job="batch_1")
    with pytest.raises(TenantQueueFullError):
        table.submit("e", {}, OPTIONS, tenant="alice", job="batch_1")


def test_max_running_holds_one_tenant_back_and_lets_the_others_run(clock: FakeClock) -> None:
    table = table_with(clock, alice={"max_running": 2})
    d = Dispatcher(table, clock=clock)
    d.configure(
        [EndpointRoute("e", "e", "M", OPTIONS, 10), EndpointRoute("f", "f", "M", OPTIONS, 10)], None
    )
    alice = submit(table, "alice", 5) + submit(table, "alice", 3, endpoint="f")
    bob = submit(table, "bob", 3)
    started = {record.task_id for _, record, _ in d.take()}
    assert len(started & set(alice)) == 2  # across both endpoints
    assert set(bob) <= started
    assert d.take() == []  # alice waits; nothing else is queued
    attempt = d.current(sorted(started & set(alice))[0])
    assert attempt is not None
    d.succeed(attempt)
    again = d.take()
    assert [r.tenant for _, r, _ in again] == ["alice"]
    assert table.quotas.running["alice"] == 2 and table.quotas.pending["alice"] == 5


def test_new_settings_apply_to_the_counts_already_there(clock: FakeClock) -> None:
    table = table_with(clock)
    submit(table, "alice", 3)
    for _ in range(3):
        table.pop_next("e")
    table.quotas.configure({"alice": TenantSettings(max_running=3)})
    assert "alice" in table.quotas.capped


# -- usage -----------------------------------------------------------------------------


def test_a_tasks_seconds_are_counted_in_its_status_and_its_hour(clock: FakeClock) -> None:
    table = table_with(clock)
    table.gpus["e"] = 2.0
    (task_id,) = submit(table, "alice")
    clock.advance(3)
    assert table.state(task_id).queue_s == 3  # live while pending
    table.pop_next("e")
    clock.advance(4)
    state = table.state(task_id)
    assert (state.queue_s, state.run_s, state.gpu_s) == (3, 4, 8)
    table.fail(task_id, "lost", retryable=True)  # back in the queue, then a second attempt
    clock.advance(1)
    table.pop_next("e")
    clock.advance(2)
    table.succeed(task_id)
    state = table.state(task_id)
    assert (state.queue_s, state.run_s, state.gpu_s) == (4, 6, 12)
    (row,) = table.usage.query(UsageQuery())
    assert row["tenant"] == "alice" and row["endpoint"] == "e"
    assert (row["tasks"], row["succeeded"], row["run_s"], row["gpu_s"]) == (1, 1, 6, 12)
    assert row["queue_s_p50"] == pytest.approx(4, rel=0.05)
    hour = int(clock.now // HOUR_S) * HOUR_S
    assert row["hour"] == usage_hour(hour)


def usage_hour(hour: int) -> str:
    from raytask.core.usage import iso_hour

    return iso_hour(hour)


def test_usage_groups_filters_and_quantiles() -> None:
    usage = Usage()
    hour = 1_800_000_000 // HOUR_S * HOUR_S
    for i in range(100):  # alice: e, queue_s 1..100 s, in one hour
        usage.count("alice", "e", TaskStatus.SUCCESS, hour + 10, i + 1.0, 2.0, 1.0)
    usage.count("alice", "f", TaskStatus.FAILURE, hour + HOUR_S, 0.5, 1.0, 0.0)
    usage.count("bob", "e", TaskStatus.CANCELLED, hour + 2 * HOUR_S, 0.0, 0.0, 0.0)
    by_tenant = usage.query(UsageQuery(group_by=("tenant",)))
    assert [(r["tenant"], r["endpoint"], r["hour"], r["tasks"]) for r in by_tenant] == [
        ("alice", None, None, 101),
        ("bob", None, None, 1),
    ]
    alice_e = usage.query(UsageQuery(tenant="alice", endpoint="e"))[0]
    assert (alice_e["succeeded"], alice_e["run_s"], alice_e["gpu_s"]) == (100, 200, 200)
    assert alice_e["queue_s_p50"] == pytest.approx(50.5, rel=0.05)
    assert alice_e["queue_s_p99"] == pytest.approx(99, rel=0.05)
    later = usage.query(UsageQuery(since=hour + HOUR_S, until=hour + 2 * HOUR_S))
    assert [(r["tenant"], r["failed"]) for r in later] == [("alice", 1)]
    assert usage.query(UsageQuery(tenant="carol")) == []
    by_hour = usage.query(UsageQuery(group_by=("hour",)))
    assert [r["tasks"] for r in by_hour] == [100, 1, 1]


def test_usage_rows_round_trip_and_old_ones_are_pruned() -> None:
    usage = Usage()
    now = 1_800_000_000.0
    usage.count("alice", "e", TaskStatus.SUCCESS, now - KEEP_S - 2 * HOUR_S, 1.0, 1.0, 0.0)
    usage.count("alice", "e", TaskStatus.SUCCESS, now, 1.0, 3.0, 1.0)
    puts, deletes = usage.take_dirty()
    assert len(puts) == 2 and deletes == [] and not usage.dirty
    copy = Usage()
    copy.restore(puts)
    assert copy.query(UsageQuery()) == usage.query(UsageQuery())
    assert copy.run_total[("alice", "e")] == 4
    copy.prune(now)
    assert [r["run_s"] for r in copy.query(UsageQuery())] == [3]
    puts, deletes = copy.take_dirty()
    assert puts == [] and len(deletes) == 1
