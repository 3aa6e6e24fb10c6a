import pytest

from raytask.core.config import TaskOptions
from raytask.core.errors import (
    InvalidTransitionError,
    QueueFullError,
    TaskCancelledError,
    TaskConflictError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotCompletedError,
    TaskNotFoundError,
)
from raytask.core.record import Result
from raytask.core.status import TaskStatus
from raytask.core.table import TaskRecord, TaskTable

from ..support import FakeClock

OPTS = TaskOptions(ttl_s=60, max_attempts=2)


@pytest.fixture
def table(clock: FakeClock) -> TaskTable:
    return TaskTable(max_queue_size=5, retry_after_s=2.5, clock=clock)


def test_submit_queues_pending_with_an_unguessable_id(table: TaskTable) -> None:
    record = table.submit("a", {"x": 1}, OPTS)
    assert record.status is TaskStatus.PENDING
    assert len(record.task_id) == 32 and int(record.task_id, 16) >= 0
    assert table.submit("a", {}, OPTS).task_id != record.task_id
    assert table.pending_count == 2


def test_fifo_per_endpoint(table: TaskTable) -> None:
    a1, b1, a2 = (table.submit(e, {}, OPTS) for e in ("a", "b", "a"))
    assert table.pop_next("a") is a1
    assert table.pop_next("a") is a2
    assert table.pop_next("a") is None
    assert table.pop_next("b") is b1


def test_pop_marks_in_progress_and_counts_the_attempt(table: TaskTable, clock: FakeClock) -> None:
    record = table.submit("a", {}, OPTS)
    clock.advance(3)
    table.pop_next("a")
    assert record.status is TaskStatus.IN_PROGRESS
    assert record.attempts == 1
    assert record.executed_at == clock.now
    assert table.pending_count == 0


def test_cancelled_pending_task_is_skipped(table: TaskTable) -> None:
    first, second = table.submit("a", {}, OPTS), table.submit("a", {}, OPTS)
    assert table.cancel(first.task_id) is TaskStatus.PENDING
    assert table.pending_count == 1
    assert table.pop_next("a") is second


def test_success_sets_times_and_expiry(table: TaskTable, clock: FakeClock) -> None:
    record = table.submit("a", {}, OPTS)
    table.pop_next("a")
    clock.advance(5)
    table.succeed(record.task_id)
    assert record.status is TaskStatus.SUCCESS
    assert record.completed_at == clock.now
    assert record.expires_at == clock.now + 60
    assert table.check_result(record.task_id) is record


def test_lost_attempt_is_requeued_at_the_front_then_fails(table: TaskTable) -> None:
    record = table.submit("a", {}, OPTS)
    later = table.submit("a", {}, OPTS)
    table.pop_next("a")
    table.fail(record.task_id, "replica died", retryable=True)
    assert record.status is TaskStatus.PENDING
    assert table.pop_next("a") is record  # ahead of `later`
    table.fail(record.task_id, "replica died", retryable=True)
    assert record.status is TaskStatus.FAILURE
    assert record.error == "replica died (gave up after 2 attempts)"
    assert table.pop_next("a") is later


def test_non_retryable_failure_is_final(table: TaskTable) -> None:
    record = table.submit("a", {}, OPTS)
    table.pop_next("a")
    table.fail(record.task_id, "ValueError: boom")
    assert record.status is TaskStatus.FAILURE
    with pytest.raises(TaskFailedError, match="ValueError: boom"):
        table.check_result(record.task_id)


def test_get_errors_by_state(table: TaskTable) -> None:
    record = table.submit("a", {}, OPTS)
    with pytest.raises(TaskNotCompletedError, match="not completed yet"):
        table.check_result(record.task_id)
    table.cancel(record.task_id)
    with pytest.raises(TaskCancelledError):
        table.check_result(record.task_id)
    with pytest.raises(TaskNotFoundError):
        table.get("0" * 32)


def test_cancel_of_a_finished_task_conflicts(table: TaskTable) -> None:
    record = table.submit("a", {}, OPTS)
    table.pop_next("a")
    table.succeed(record.task_id)
    with pytest.raises(TaskConflictError, match="already finished"):
        table.cancel(record.task_id)
    assert record.status is TaskStatus.SUCCESS


def test_illegal_transition_is_rejected(table: TaskTable) -> None:
    record = table.submit("a", {}, OPTS)
    with pytest.raises(InvalidTransitionError, match="pending to success"):
        table.succeed(record.task_id)
    assert record.status is TaskStatus.PENDING


def test_retry_makes_a_new_task_with_the_same_inputs(table: TaskTable) -> None:
    original = table.submit("a", {"x": [1, 2]}, OPTS)
    with pytest.raises(TaskConflictError, match="not finished"):
        table.retry(original.task_id)
    table.pop_next("a")
    table.fail(original.task_id, "boom")
    new = table.retry(original.task_id)
    assert new.task_id != original.task_id
    assert (new.endpoint, new.kwargs, new.options) == ("a", {"x": [1, 2]}, OPTS)
    assert new.retry_of == original.task_id and new.status is TaskStatus.PENDING
    assert original.status is TaskStatus.FAILURE


def test_queue_full(table: TaskTable) -> None:
    for _ in range(5):
        table.submit("a", {}, OPTS)
    with pytest.raises(QueueFullError) as info:
        table.submit("a", {}, OPTS)
    assert info.value.retry_after_s == 2.5
    assert len(table) == 5
    table.pop_next("a")  # a running task no longer counts against the queue
    table.submit("a", {}, OPTS)


def test_ttl_sweep_with_a_fake_clock(table: TaskTable, clock: FakeClock) -> None:
    short = table.submit("a", {}, TaskOptions(ttl_s=10))
    long = table.submit("a", {}, TaskOptions(ttl_s=100))
    pending = table.submit("a", {}, OPTS)
    for record in (short, long):
        table.pop_next("a")
        table.succeed(record.task_id)
    clock.advance(9.9)
    assert table.sweep() == []
    clock.advance(0.1)
    assert table.sweep() == [short.task_id]
    with pytest.raises(TaskExpiredError, match="expired"):
        table.get(short.task_id)
    clock.advance(1_000)
    assert table.sweep() == [long.task_id]
    assert table.get(pending.task_id).status is TaskStatus.PENDING  # unfinished never expire


def test_tombstones_are_bounded(clock: FakeClock) -> None:
    table = TaskTable(clock=clock, max_tombstones=2)
    ids = []
    for _ in range(3):
        record = table.submit("a", {}, TaskOptions(ttl_s=1))
        table.pop_next("a")
        table.succeed(record.task_id)
        ids.append(record.task_id)
        clock.advance(0.1)
    clock.advance(2)
    table.sweep()
    with pytest.raises(TaskNotFoundError):
        table.get(ids[0])
    with pytest.raises(TaskExpiredError):
        table.get(ids[2])


def test_record_round_trips_through_a_dict(table: TaskTable) -> None:
    record = table.submit("a", {"text": "hi"}, OPTS)
    table.pop_next("a")
    table.fail(record.task_id, "lost", retryable=True)
    copy = TaskRecord.from_dict(record.to_dict(), record.kwargs)
    assert copy == record


def test_journal_rows_with_the_same_options_share_one_validated_model(table: TaskTable) -> None:
    hooked = TaskOptions(webhook_url="http://h/x", webhook_events=("started", "failed"), priority=3)
    rows = [table.submit("a", {}, options).to_dict() for options in (OPTS, OPTS, hooked, hooked)]
    first, second, third, fourth = (TaskRecord.from_dict(row, {}) for row in rows)
    assert first.options is second.options and third.options is fourth.options  # validated once
    assert first.options == OPTS and third.options == hooked  # and each its own
    rows[0]["options"] = {**rows[0]["options"], "webhook_events": ["failed", "started"]}
    assert TaskRecord.from_dict(rows[0], {}).options.webhook_events == ("started", "failed")
    rows[1]["options"] = {**rows[1]["options"], "priority": 99}  # out of range: still checked
    with pytest.raises(ValueError, match="priority"):
        TaskRecord.from_dict(rows[1], {})


def test_counts_and_oldest_pending_age(table: TaskTable, clock: FakeClock) -> None:
    table.submit("a", {}, OPTS)
    clock.advance(4)
    table.submit("a", {}, OPTS)
    table.pop_next("a")
    assert table.counts()["a"]["pending"] == 1
    assert table.counts()["a"]["in_progress"] == 1
    assert table.oldest_pending_age("a") == 0
    assert table.oldest_pending_age("b") is None


def test_counts_are_kept_through_every_change(table: TaskTable, clock: FakeClock) -> None:
    a, _, c = (table.submit("a", {}, TaskOptions(ttl_s=1)) for _ in range(3))
    table.cancel(c.task_id)
    table.pop_next("a")
    table.succeed(a.task_id)
    assert table.counts()["a"] == {
        "pending": 1,
        "in_progress": 0,
        "success": 1,
        "failure": 0,
        "cancelled": 1,
    }
    assert table.pending_by_endpoint("a") == 1 and table.pending_by_endpoint("zzz") == 0
    clock.advance(2)
    table.sweep()
    assert table.counts()["a"] == {
        "pending": 1,
        "in_progress": 0,
        "success": 0,
        "failure": 0,
        "cancelled": 0,
    }
    assert sum(table.counts()["a"].values()) == len(table)


def test_endpoint_stats(table: TaskTable, clock: FakeClock) -> None:
    table.submit("a", {}, OPTS)
    clock.advance(5)
    assert table.endpoint_stats(["a", "b"]) == {
        "a": {
            "pending": 1,
            "in_progress": 0,
            "success": 0,
            "failure": 0,
            "cancelled": 0,
            "oldest_pending_age_s": 5,
        },
        "b": {
            "pending": 0,
            "in_progress": 0,
            "success": 0,
            "failure": 0,
            "cancelled": 0,
            "oldest_pending_age_s": None,
        },
    }


# -- task control (SPEC §7) ------------------------------------------------------


def test_priority_runs_first_within_an_endpoint_and_fifo_among_equals(table: TaskTable) -> None:
    table.max_queue_size = 100
    low = [table.submit("a", {"i": i}, OPTS) for i in range(3)]
    high = table.submit("a", {}, OPTS.model_copy(update={"priority": 7}))
    other = table.submit("b", {}, OPTS.model_copy(update={"priority": 10}))
    assert table.state(high.task_id).queue_position == 0
    assert [table.state(r.task_id).queue_position for r in low] == [1, 2, 3]
    assert table.state(other.task_id).queue_position == 0  # positions are per endpoint
    assert table.state(high.task_id).priority == 7
    assert table.pop_next("a") is high
    assert [table.pop_next("a") for _ in low] == low
    assert table.state(high.task_id).queue_position is None  # not pending


def test_a_requeued_attempt_goes_before_any_priority(table: TaskTable) -> None:
    first = table.submit("a", {}, OPTS)
    table.pop_next("a")
    urgent = table.submit("a", {}, OPTS.model_copy(update={"priority": 10}))
    table.fail(first.task_id, "replica died", retryable=True)
    assert table.pop_next("a") is first and table.pop_next("a") is urgent


def test_a_queue_deadline_expires_a_task_that_did_not_start(
    table: TaskTable, clock: FakeClock
) -> None:
    hurry = OPTS.model_copy(update={"max_queue_s": 10})
    late, started, blocked = (table.submit("a", {"i": i}, hurry) for i in range(3))
    assert table.pop_next("a") is late  # it started in time: the deadline is over for it
    clock.advance(10)
    # an expired task never runs: the queue skips it, status and the sweep see it too
    assert table.pop_next("a") is None
    for record in (started, blocked):
        state = table.state(record.task_id)
        assert state.status is TaskStatus.CANCELLED and state.attempts == 0
        assert state.error is not None and state.error.startswith("expired:")
    assert table.get(late.task_id).status is TaskStatus.IN_PROGRESS
    assert table.pending_count == 0
    with pytest.raises(TaskCancelledError, match="expired"):
        table.check_result(started.task_id)
    assert table.retry(started.task_id).status is TaskStatus.PENDING  # like any finished task


def test_the_sweep_expires_queued_tasks_without_anyone_asking(
    table: TaskTable, clock: FakeClock
) -> None:
    waiting = table.submit("a", {}, OPTS.model_copy(update={"max_queue_s": 5}))
    patient = table.submit("a", {}, OPTS)
    clock.advance(4.9)
    table.sweep()
    assert table._records[waiting.task_id].status is TaskStatus.PENDING
    clock.advance(0.1)
    table.sweep()
    assert table._records[waiting.task_id].status is TaskStatus.CANCELLED
    assert table.state(patient.task_id).queue_position == 0


def test_an_idempotency_key_gives_one_task_per_input(table: TaskTable, clock: FakeClock) -> None:
    first = table.submit("a", {"x": 1, "y": [1, 2]}, OPTS, idempotency_key="k1")
    again = table.submit("a", {"y": [1, 2], "x": 1}, OPTS, idempotency_key="k1")  # key order
    assert again is first and table.pending_count == 1
    with pytest.raises(TaskConflictError, match="other inputs"):
        table.submit("a", {"x": 2}, OPTS, idempotency_key="k1")
    assert table.submit("b", {"x": 2}, OPTS, idempotency_key="k1") is not first  # per endpoint
    # until the task is forgotten at its TTL: then the key is free again
    table.pop_next("a")
    table.succeed(first.task_id)
    clock.advance(61)
    table.sweep()
    fresh = table.submit("a", {"x": 2}, OPTS, idempotency_key="k1")
    assert fresh.task_id != first.task_id


def test_keys_come_back_with_restored_records(table: TaskTable, clock: FakeClock) -> None:
    record = table.submit("a", {"x": 1}, OPTS, idempotency_key="k")
    reloaded = TaskTable(clock=clock)
    reloaded.restore([TaskRecord.from_dict(record.to_dict(), record.kwargs)])
    assert reloaded.submit("a", {"x": 1}, OPTS, idempotency_key="k").task_id == record.task_id
    with pytest.raises(TaskConflictError):
        reloaded.submit("a", {"x": 3}, OPTS, idempotency_key="k")


def test_submit_many_queues_all_or_none(table: TaskTable) -> None:
    table.submit("a", {}, OPTS)
    with pytest.raises(QueueFullError, match="room for 4, 5 submitted"):
        table.submit_many("a", [{"i": i} for i in range(5)], OPTS)
    assert table.pending_count == 1
    records = table.submit_many("a", [{"i": i} for i in range(4)], OPTS)
    assert [r.kwargs["i"] for r in records] == [0, 1, 2, 3]
    assert [table.state(r.task_id).queue_position for r in records] == [1, 2, 3, 4]


def test_progress_of_the_running_attempt_only(table: TaskTable, clock: FakeClock) -> None:
    record = table.submit("a", {}, OPTS)
    assert not table.report_progress(record.task_id, 1, 0.1, "queued?")  # not running
    table.pop_next("a")
    assert table.report_progress(record.task_id, 1, 0.25, "a quarter")
    progress = table.state(record.task_id).progress
    assert progress is not None and progress.fraction == 0.25 and progress.message == "a quarter"
    assert progress.updated_at == clock.now
    clock.advance(0.5)
    assert table.report_progress(record.task_id, 1, None, "no fraction")
    assert not table.report_progress(record.task_id, 2, 0.9, "a stale attempt")
    state = table.state(record.task_id)
    assert state.progress is not None and state.progress.fraction is None
    assert state.model_dump(mode="json")["progress"]["message"] == "no fraction"


def test_listing_pages_newest_first_with_filters(table: TaskTable) -> None:
    table.max_queue_size = 1000
    records = [table.submit("ab"[i % 2], {"i": i}, OPTS) for i in range(25)]
    for record in records[:6]:
        table.cancel(record.task_id)
    seen, cursor = [], None
    while True:
        page, cursor = table.list(limit=10, cursor=cursor)
        seen += page
        if cursor is None:
            break
    assert seen == records[::-1]
    page, cursor = table.list(endpoint="a", statuses=[TaskStatus.PENDING], limit=100)
    assert page == [r for r in records[::-1] if r.endpoint == "a" and r.kwargs["i"] >= 6]
    assert cursor is None
    page, cursor = table.list(statuses=[TaskStatus.CANCELLED], limit=2)
    assert page == [records[5], records[4]] and cursor == records[4].seq
    assert table.list(statuses=[TaskStatus.CANCELLED], cursor=cursor)[0] == records[3::-1]


def test_finished_tasks_count_against_max_tasks_until_their_ttl(clock: FakeClock) -> None:
    table = TaskTable(clock=clock, max_tasks=3)
    for _ in range(3):
        table.cancel(table.submit("e", {}, TaskOptions(ttl_s=10)).task_id)  # none pending
    with pytest.raises(QueueFullError, match="max_tasks=3") as info:
        table.submit("e", {}, TaskOptions())
    assert info.value.status_code == 429 and info.value.retry_after_s == 1.0
    with pytest.raises(QueueFullError, match="max_tasks=3"):
        table.submit_many("e", [{}], TaskOptions())
    clock.advance(11)
    table.sweep()
    assert len(table.submit_many("e", [{}, {}, {}], TaskOptions())) == 3


def test_inputs_and_kept_results_count_against_max_task_bytes(clock: FakeClock) -> None:
    table = TaskTable(clock=clock, max_task_bytes=200_000)
    inputs = {"text": "x" * 60_000}
    held = [table.submit("e", inputs, TaskOptions(ttl_s=10)) for _ in range(3)]
    assert 180_000 < table.held_bytes < 181_000
    for record in held:
        table.cancel(record.task_id)  # finished: its inputs stay until its TTL
    with pytest.raises(QueueFullError, match="max_task_bytes=200000"):
        table.submit("e", inputs, TaskOptions())
    with pytest.raises(QueueFullError, match="max_task_bytes"):
        table.retry(held[0].task_id)
    small = table.submit("e", {"n": 1}, TaskOptions(ttl_s=20))
    table.pop_next("e")
    table.succeed(small.task_id, Result(1, 15_000))  # a kept result counts too
    with pytest.raises(QueueFullError, match="max_task_bytes"):
        table.submit("e", {"text": "y" * 5_000}, TaskOptions())
    clock.advance(11)
    table.sweep()  # the three expire: their bytes are free again
    assert table.held_bytes == small.input_bytes + 15_000
    assert table.submit("e", inputs, TaskOptions()).input_bytes == held[0].input_bytes
    clock.advance(10)
    table.sweep()
    assert table.held_bytes == held[0].input_bytes  # the result went with its task


def test_restored_records_bring_their_bytes_back(clock: FakeClock) -> None:
    table = TaskTable(clock=clock)
    record = table.submit("e", {"text": "z" * 1000}, TaskOptions())
    table.pop_next("e")
    table.succeed(record.task_id, Result("value", 500))
    again = TaskTable(clock=clock)
    again.restore([TaskRecord.from_dict(record.to_dict(), record.kwargs)])
    assert again.held_bytes == table.held_bytes == record.input_bytes + 500


def test_restored_requeued_tasks_run_before_fresh_ones(clock: FakeClock) -> None:
    source = TaskTable(clock=clock)
    fresh = source.submit("e", {"n": 1}, TaskOptions())
    lost = source.submit("e", {"n": 2}, TaskOptions())  # submitted later...
    lost.attempts = 1  # ...but it ran once already (the manager crashed under it)
    table = TaskTable(clock=clock)
    table.restore([fresh, lost])
    assert [table.pop_next("e").task_id for _ in range(2)] == [lost.task_id, fresh.task_id]  # type: ignore[union-attr]


def test_a_retry_belongs_to_the_owner_of_the_original(table: TaskTable) -> None:
    original = table.submit("e", {"n": 1}, TaskOptions(), owner="alice")
    table.cancel(original.task_id)
    again = table.retry(original.task_id)
    assert again.owner == "alice" and again.retry_of == original.task_id


def test_the_oldest_pending_age_is_the_oldest_tasks(table: TaskTable, clock: FakeClock) -> None:
    assert table.oldest_pending_age("e") is None
    table.submit("e", {}, TaskOptions())
    clock.advance(10)
    table.submit("e", {}, TaskOptions(priority=5))  # a younger task at another priority
    clock.advance(5)
    assert table.oldest_pending_age("e") == 15


def test_chunks_are_kept_per_attempt_and_a_new_attempt_starts_over(clock: FakeClock) -> None:
    table = TaskTable(clock=clock)
    record = table.submit("e", {}, TaskOptions(max_attempts=2))
    assert table.state(record.task_id).chunks is None  # not a generator (yet)
    assert not table.add_chunks(record.task_id, 1, [b'"early"'])  # not running: dropped
    table.pop_next("e")
    assert table.add_chunks(record.task_id, 1, [])
    assert table.state(record.task_id).chunks == 0
    table.add_chunks(record.task_id, 1, [b'"a"', b'{"b": 1}'])
    assert record.chunks is not None and record.chunks.values() == ["a", {"b": 1}]
    assert table.state(record.task_id).chunks == 2 and record.chunks.nbytes == 11
    table.fail(record.task_id, "replica died", retryable=True)
    table.pop_next("e")
    assert not table.add_chunks(record.task_id, 1, [b'"late"'])  # the lost attempt's
    table.add_chunks(record.task_id, 2, [b'"c"'])
    assert record.chunks.values() == ["c"] and record.chunks.attempt == 2


def test_output_webhooks_go_at_most_twice_a_second_and_only_for_new_chunks(
    clock: FakeClock,
) -> None:
    from raytask.server.streams import StreamReads

    table = TaskTable(clock=clock)
    reads = StreamReads(table)
    hooked = table.submit("e", {}, TaskOptions(webhook_url="https://example.com/hook"))
    quiet = table.submit("e", {}, TaskOptions())
    table.pop_next("e")
    table.pop_next("e")
    for record in (hooked, quiet):
        table.add_chunks(record.task_id, 1, [])
    assert reads.output_due(hooked) is None  # no chunk yet
    table.add_chunks(hooked.task_id, 1, [b'"a"'])
    table.add_chunks(quiet.task_id, 1, [b'"a"'])
    assert reads.output_due(hooked) == "output" and reads.output_due(quiet) is None
    table.add_chunks(hooked.task_id, 1, [b'"b"'])
    assert reads.output_due(hooked) is None  # within 0.5 s of the last one
    clock.advance(0.5)
    assert reads.output_due(hooked) == "output"
    clock.advance(1)
    assert reads.output_due(hooked) is None  # nothing new
    table.succeed(hooked.task_id)
    assert reads.output_due(hooked) is None  # the end has its own event


def test_streamed_chunks_count_against_max_task_bytes_once(clock: FakeClock) -> None:
    from raytask.core.errors import QueueFullError
    from raytask.core.record import Result

    table = TaskTable(clock=clock, max_task_bytes=200)
    record = table.submit("e", {}, TaskOptions(max_attempts=2, ttl_s=10))
    inputs = table.held_bytes
    table.pop_next("e")
    table.add_chunks(record.task_id, 1, [b'"' + b"x" * 98 + b'"'])  # 100 bytes
    assert table.held_bytes == inputs + 100
    table.fail(record.task_id, "replica died", retryable=True)
    table.pop_next("e")
    table.add_chunks(record.task_id, 2, [b"[1,2]"])  # the lost attempt's no longer count
    assert table.held_bytes == inputs + 5
    table.add_chunks(record.task_id, 2, [b'"' + b"y" * 178 + b'"'])
    with pytest.raises(QueueFullError, match="streamed chunks"):
        table.submit("e", {}, TaskOptions())
    assert record.chunks is not None
    table.succeed(record.task_id, Result(record.chunks, 0))  # the result is the chunks
    assert table.held_bytes == inputs + 185
    clock.advance(11)
    table.sweep()
    assert table.held_bytes == 0
