"""The change feed and an ingress replica's copy (raytask.core.feed, raytask.core.copy)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raytask.core.copy import StateCopy
from raytask.core.feed import ChangeFeed, Entry, Group
from raytask.core.state import TaskState
from raytask.core.status import TaskStatus

from ..support import FakeClock

A, B = "a" * 32, "b" * 32


def state(task_id: str, status: TaskStatus, **fields: Any) -> TaskState:
    fields.setdefault("expires_at", 2e9)
    return TaskState(task_id=task_id, status=status, endpoint="noop", **fields)


class Tasks:
    """What the feed reads: the current entry of each task (None: forgotten)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry | None] = {}
        self.built = 0

    def set(self, task_id: str, status: TaskStatus, result: Any = None, **fields: Any) -> None:
        held = None if result is None else (result, 100)
        self.entries[task_id] = Entry(state(task_id, status, **fields), 1000.0, 0.5, held)

    def entry(self, task_id: str) -> Entry | None:
        self.built += 1
        return self.entries.get(task_id)


def feed_of(tasks: Tasks, **settings: Any) -> ChangeFeed:
    settings = {"lease_s": 0.3, "hold_s": 0.05, "gather_s": 0.0} | settings
    return ChangeFeed(tasks.entry, **settings)


async def test_a_poll_carries_each_changed_task_once_in_its_latest_state() -> None:
    tasks = Tasks()
    feed = feed_of(tasks)
    first = await feed.poll("r1", None, 0)
    assert first.reset and first.entries == {}
    for status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.SUCCESS):
        tasks.set(A, status, result=7 if status is TaskStatus.SUCCESS else None)
        feed.changed(A)
    tasks.set(B, TaskStatus.PENDING)
    feed.changed(B)
    group = await feed.poll("r1", first.epoch, first.version)
    assert list(group.entries) == [B, A]  # newest first, once each
    assert group.entries[A].state.status is TaskStatus.SUCCESS and group.entries[A].result == (
        7,
        100,
    )
    assert tasks.built == 2 and group.version == first.version + 4
    empty = await feed.poll("r1", group.epoch, group.version)  # nothing new: the heartbeat
    assert empty.entries == {} and not empty.reset and empty.version == group.version


async def test_a_held_poll_answers_as_soon_as_something_changes() -> None:
    tasks = Tasks()
    feed = feed_of(tasks, hold_s=5.0)
    start = await feed.poll("r1", None, 0)
    poll = asyncio.create_task(feed.poll("r1", start.epoch, start.version))
    await asyncio.sleep(0.01)
    assert not poll.done()
    tasks.set(A, TaskStatus.IN_PROGRESS)
    feed.changed(A)
    group = await asyncio.wait_for(poll, 0.5)
    assert list(group.entries) == [A]


async def test_a_write_waits_until_every_copy_asked_past_it() -> None:
    tasks = Tasks()
    feed = feed_of(tasks, lease_s=5.0)
    ones = {name: await feed.poll(name, None, 0) for name in ("r1", "r2")}
    tasks.set(A, TaskStatus.CANCELLED)
    feed.changed(A)
    synced = asyncio.create_task(feed.synced())
    groups = {n: await feed.poll(n, g.epoch, g.version) for n, g in ones.items()}
    await asyncio.sleep(0.02)
    assert not synced.done()  # both have the group, neither has said it applied it
    polls = [asyncio.create_task(feed.poll("r1", groups["r1"].epoch, groups["r1"].version))]
    await asyncio.sleep(0.02)
    assert not synced.done()  # r2 still has not
    polls.append(asyncio.create_task(feed.poll("r2", groups["r2"].epoch, groups["r2"].version)))
    await asyncio.wait_for(synced, 0.5)
    await asyncio.gather(*polls)


async def test_a_silent_copy_is_dropped_after_its_lease_and_told_to_start_over() -> None:
    tasks = Tasks()
    feed = feed_of(tasks, lease_s=0.2)
    start = await feed.poll("gone", None, 0)
    tasks.set(A, TaskStatus.CANCELLED)
    feed.changed(A)
    await asyncio.wait_for(feed.synced(), 1.0)  # no answer from it: dropped, not waited for
    assert feed.subscribers == 0
    again = await feed.poll("gone", start.epoch, start.version)
    assert again.reset and again.version == feed.version


async def test_a_new_feed_or_a_copy_too_far_behind_starts_over() -> None:
    tasks = Tasks()
    feed = feed_of(tasks, max_log=2)
    start = await feed.poll("r1", None, 0)
    other = await feed_of(Tasks()).poll("r1", None, 0)
    assert (await feed.poll("r1", other.epoch, 0)).reset  # a restarted manager's copy
    start = await feed.poll("r1", feed.epoch, feed.version)
    for task_id in ("1" * 32, "2" * 32, "3" * 32):
        tasks.set(task_id, TaskStatus.PENDING)
        feed.changed(task_id)
    assert (await feed.poll("r1", start.epoch, start.version)).reset


# -- the copy ------------------------------------------------------------------------


def group(epoch: str, version: int, entries: dict[str, Entry | None], reset=False) -> Group:
    return Group(epoch, version, entries, reset)


def entry(task_id: str, status: TaskStatus, result: Any = None, **fields: Any) -> Entry:
    held = None if result is None else (result, 100)
    return Entry(state(task_id, status, **fields), 1000.0, 0.5, held)


def copy_of(clock: FakeClock, wall: FakeClock) -> StateCopy:
    copy = StateCopy(clock=clock, wall=wall, lease_s=2.0)
    copy.apply(group("e1", 0, {}, reset=True), copy.sent())
    return copy


def test_the_copy_answers_running_and_finished_tasks_only_within_its_lease() -> None:
    clock, wall = FakeClock(0.0), FakeClock(1000.0)
    copy = copy_of(clock, wall)
    copy.apply(
        group(
            "e1",
            3,
            {
                A: entry(A, TaskStatus.IN_PROGRESS, run_s=1.0),
                B: entry(B, TaskStatus.PENDING, queue_position=4),
            },
        ),
        copy.sent(),
    )
    wall.advance(2.5)
    running = copy.state(A)
    assert running.status is TaskStatus.IN_PROGRESS
    assert running.run_s == 3.5 and running.gpu_s == 1.75  # grown from the group's time
    assert copy.state(B) is None  # pending: its position is the manager's
    assert copy.held(B) is not None  # but it is held (a long-poll may wait on it)
    clock.advance(2.0)
    assert copy.state(A) is None and copy.held(A) is None  # past the lease: ask the manager
    copy.apply(group("e1", 3, {}), copy.sent())
    assert copy.state(A) is not None


def test_results_tombstones_expiry_and_a_new_epoch() -> None:
    clock, wall = FakeClock(0.0), FakeClock(1000.0)
    copy = copy_of(clock, wall)
    copy.apply(
        group(
            "e1",
            2,
            {A: entry(A, TaskStatus.SUCCESS, {"x": 1}), B: entry(B, TaskStatus.FAILURE)},
        ),
        copy.sent(),
    )
    assert copy.result(A)[1] == {"x": 1}
    assert copy.result(B) is None and copy.state(B).status is TaskStatus.FAILURE
    copy.apply(group("e1", 3, {A: None}), copy.sent())  # deleted
    assert copy.state(A) is None and copy.result(A) is None
    wall.advance(3e9)
    assert copy.state(B) is None  # past its TTL: the manager answers "expired"
    wall.advance(-3e9)
    copy.apply(group("e2", 0, {}, reset=True), copy.sent())  # a restarted manager
    assert len(copy) == 0 and copy.state(B) is None


def test_after_a_direct_answer_only_a_group_asked_for_later_is_used() -> None:
    clock, wall = FakeClock(0.0), FakeClock(1000.0)
    copy = copy_of(clock, wall)
    on_its_way = copy.sent()  # a poll sent before the manager's direct answer...
    copy.answered(A)  # ...which said success
    copy.apply(group("e1", 1, {A: entry(A, TaskStatus.IN_PROGRESS)}), on_its_way)
    assert copy.state(A) is None  # that older group's state is not used
    copy.apply(group("e1", 2, {A: entry(A, TaskStatus.SUCCESS, 1)}), copy.sent())
    assert copy.state(A).status is TaskStatus.SUCCESS


async def test_a_wait_wakes_on_the_group_that_finishes_the_task() -> None:
    copy = StateCopy(lease_s=5.0)
    copy.apply(group("e1", 1, {A: entry(A, TaskStatus.IN_PROGRESS)}, reset=True), copy.sent())
    waiting = asyncio.create_task(copy.finished(A, 5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    copy.apply(group("e1", 2, {A: entry(A, TaskStatus.SUCCESS, 1)}), copy.sent())
    assert await asyncio.wait_for(waiting, 0.1) is True
    assert await copy.finished(B, 1.0) is None  # not held: ask the manager
    copy.apply(group("e1", 3, {B: entry(B, TaskStatus.PENDING)}), copy.sent())
    assert await copy.finished(B, 0.02) is False  # timed out, the copy still current
    lost = asyncio.create_task(copy.finished(B, 5.0))
    await asyncio.sleep(0.01)
    copy.lost()  # the manager went away: the waiter asks it (and gets a 503) at once
    assert await asyncio.wait_for(lost, 0.1) is None
    assert not copy._waiters


async def test_follow_applies_the_feed_and_survives_a_failed_poll() -> None:
    tasks = Tasks()
    feed = feed_of(tasks)
    copy = StateCopy()
    failures = [RuntimeError("manager restarting")]

    async def poll(epoch: str | None, since: int) -> Group:
        if failures:
            raise failures.pop()
        return await feed.poll("r1", epoch, since)

    following = asyncio.create_task(copy.follow(poll, retry_s=0.01))
    try:
        tasks.set(A, TaskStatus.SUCCESS, result=5)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if copy.epoch == feed.epoch:
                break
        feed.changed(A)
        await asyncio.wait_for(copy.finished(A, 1.0), 1.0)
        assert copy.result(A)[1] == 5
    finally:
        following.cancel()
        with pytest.raises(asyncio.CancelledError):
            await following


async def test_a_restarted_feed_holds_writes_until_older_copies_distrust_themselves() -> None:
    clock = FakeClock(0.0)
    feed = ChangeFeed(Tasks().entry, clock=clock, lease_s=2.0)
    feed.quiet()
    synced = asyncio.create_task(feed.synced())
    await asyncio.sleep(0.05)
    assert not synced.done()  # (its sleep is real time: the fake clock only sets its length)
    synced.cancel()
    clock.advance(2.0)
    await asyncio.wait_for(feed.synced(), 0.1)


def test_a_copy_holds_at_most_its_entries_and_result_bytes_dropping_the_oldest() -> None:
    copy = StateCopy(max_entries=3, max_result_bytes=250)
    copy.apply(group("e1", 0, {}, reset=True), copy.sent())
    ids = [f"{i:032x}" for i in range(5)]
    copy.apply(
        group("e1", 1, {t: entry(t, TaskStatus.SUCCESS, i) for i, t in enumerate(ids[:2])}),
        copy.sent(),
    )
    assert copy.result_bytes == 200
    copy.apply(group("e1", 2, {ids[0]: entry(ids[0], TaskStatus.SUCCESS, 0)}), copy.sent())
    copy.apply(group("e1", 3, {ids[2]: entry(ids[2], TaskStatus.SUCCESS, 2)}), copy.sent())
    assert copy.state(ids[1]) is None and copy.result(ids[0])[1] == 0  # bytes: 1 went first
    copy.apply(group("e1", 4, {t: entry(t, TaskStatus.FAILURE) for t in ids[3:]}), copy.sent())
    assert len(copy) == 3 and copy.state(ids[0]) is None and copy.result_bytes == 100
    copy.apply(group("e1", 5, {ids[2]: None}), copy.sent())
    assert copy.result_bytes == 0


async def test_under_load_answers_are_spaced_by_the_number_of_subscribers() -> None:
    tasks = Tasks()
    feed = feed_of(tasks, gather_s=0.05)
    groups = {name: await feed.poll(name, None, 0) for name in ("r1", "r2")}
    tasks.set(A, TaskStatus.PENDING)
    feed.changed(A)
    first = await feed.poll("r1", groups["r1"].epoch, groups["r1"].version)
    feed.changed(A)
    started = asyncio.get_running_loop().time()
    await feed.poll("r1", first.epoch, first.version)
    assert asyncio.get_running_loop().time() - started >= 0.09  # 2 subscribers x 50 ms


async def test_a_dead_copy_is_forgotten_by_the_next_poll_even_without_writes() -> None:
    tasks = Tasks()
    feed = feed_of(tasks, lease_s=0.1)
    await feed.poll("dead", None, 0)
    alive = await feed.poll("alive", None, 0)
    await asyncio.sleep(0.15)
    tasks.set(A, TaskStatus.PENDING)
    feed.changed(A)
    await feed.poll("alive", alive.epoch, alive.version)
    assert feed.subscribers == 1 and list(feed._subscribers) == ["alive"]
