"""The fair queue (SPEC 12): weighted turns across tenants, FIFO within one, positions.

The queue is checked against a slow, obvious model: a plain list of every queued task with
its tag, sorted on every question, and each tenant's last tag kept in a dict. The model
and the queue share only the rule (tag = max(lane's time, tenant's last tag) + 1/weight),
not a line of code.
"""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from raytask.core.queue import STRIDE, PendingQueue, stride

TENANTS = {"a": 1, "b": 3, "c": 2}


class Model:
    """Lanes as plain lists of (front, priority, tag, arrival, id, tenant), sorted when
    asked; tags as exact fractions."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, Fraction, int, str, str]] = []
        self.last: dict[tuple[int, str], Fraction] = {}  # (lane, tenant) -> its last tag
        self.time: dict[int, Fraction] = {}  # lane -> highest tag taken
        self.arrival = 0

    def push(self, task_id: str, priority: int, front: bool, tenant: str) -> None:
        lane = 11 if front else priority
        start = max(self.time.get(lane, Fraction(0)), self.last.get((lane, tenant), Fraction(0)))
        tag = start + Fraction(1, TENANTS[tenant])
        self.last[(lane, tenant)] = tag
        self.arrival += 1
        self.items.append((-lane, 0, tag, self.arrival, task_id, tenant))

    def order(self) -> list[tuple[int, int, Fraction, int, str, str]]:
        return sorted(self.items)

    def ids(self) -> list[str]:
        return [item[4] for item in self.order()]

    def remove(self, task_id: str, taken: bool = False) -> None:
        item = next(i for i in self.items if i[4] == task_id)
        self.items.remove(item)
        lane, tenant = -item[0], item[5]
        if not any(-i[0] == lane and i[5] == tenant for i in self.items):
            self.last.pop((lane, tenant), None)  # idle: no tag kept
        if taken:
            self.time[lane] = max(self.time.get(lane, Fraction(0)), item[2])

    def next(self, skip: set[str]) -> str | None:
        return next((item[4] for item in self.order() if item[5] not in skip), None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("ppppxrs"),
            st.sampled_from(sorted(TENANTS)),
            st.sampled_from([0, 0, 0, 1, 10]),
        ),
        max_size=120,
    )
)
def test_the_queue_agrees_with_the_model(ops: list[tuple[str, str, int]]) -> None:
    queue, model = PendingQueue(), Model()
    rng, arrival = random.Random(len(ops)), 0
    for op, tenant, priority in ops:
        if op == "p" or not model.items:
            arrival += 1
            front = priority == 10 and arrival % 3 == 0
            queue.push(f"t{arrival}", priority, front, tenant, stride(TENANTS[tenant]))
            model.push(f"t{arrival}", priority, front, tenant)
        elif op == "x":  # a cancel anywhere
            victim = rng.choice(sorted(i[4] for i in model.items))
            assert queue.remove(victim)
            model.remove(victim)
        else:  # a pop; "s" passes over one tenant (at its max_running)
            skip = {tenant} if op == "s" else set()
            expected = model.next(skip)
            assert queue.pop(skip) == expected
            if expected is not None:
                model.remove(expected, taken=True)
        order = model.ids()
        assert list(queue) == order
        assert [queue.position(t) for t in order] == list(range(len(order)))
        assert queue.peek() == (order[0] if order else None)
        assert len(queue) == len(order)


def pops(queue: PendingQueue, n: int) -> list[str]:
    return [queue.pop() or "" for _ in range(n)]


def test_a_tenant_behind_a_long_backlog_is_next_once_one_task_starts() -> None:
    queue = PendingQueue()
    for i in range(10_000):
        queue.push(f"a{i}", 0, tenant="a")
    assert pops(queue, 3) == ["a0", "a1", "a2"]
    queue.push("b0", 0, tenant="b")
    assert queue.position("b0") == 1  # a3 holds the same turn and came first
    assert pops(queue, 1) == ["a3"]
    assert queue.position("b0") == 0
    assert pops(queue, 1) == ["b0"]


def test_weights_split_the_starts_within_one_task() -> None:
    queue = PendingQueue()
    for i in range(3000):
        queue.push(f"a{i}", 0, tenant="a", step=stride(3))
        queue.push(f"b{i}", 0, tenant="b", step=stride(1))
    started = Counter()
    for n in range(1, 1001):
        started[(queue.pop() or "?")[0]] += 1
        assert abs(started["a"] - 0.75 * n) <= 1  # both backlogged: 3:1 at every point
    assert started == {"a": 750, "b": 250}


def test_each_tenant_stays_fifo_and_priority_comes_first() -> None:
    queue = PendingQueue()
    for i in range(5):
        queue.push(f"a{i}", 0, tenant="a")
        queue.push(f"b{i}", 0, tenant="b")
    queue.push("urgent", 5, tenant="a")
    taken = pops(queue, 11)
    assert taken[0] == "urgent"
    assert [t for t in taken if t.startswith("a")] == [f"a{i}" for i in range(5)]
    assert [t for t in taken if t.startswith("b")] == [f"b{i}" for i in range(5)]


def test_an_idle_tenant_banks_no_turns() -> None:
    queue = PendingQueue()
    for i in range(100):
        queue.push(f"a{i}", 0, tenant="a")
    pops(queue, 50)  # b was idle all along: it gets one turn now, not fifty
    for i in range(10):
        queue.push(f"b{i}", 0, tenant="b")
    assert "".join(t[0] for t in pops(queue, 10)) == "abababababa"[:10]


def test_a_held_back_tenant_costs_one_step_and_keeps_its_place() -> None:
    queue = PendingQueue()
    for i in range(1000):
        queue.push(f"a{i}", 0, tenant="a")
    queue.push("b0", 0, tenant="b")
    assert queue.pop({"a"}) == "b0"
    assert queue.pop({"a"}) is None  # a's tasks wait, nothing else to run
    assert queue.pop() == "a0"


def test_the_tag_step_follows_the_weight() -> None:
    assert stride(1) == STRIDE and stride(3) * 3 == STRIDE and stride(0.5) == 2 * STRIDE
    assert stride(1e9) == 1  # never zero: tags always grow
