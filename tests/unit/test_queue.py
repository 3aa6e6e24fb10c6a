"""The pending queue: priority order, FIFO among equals, positions, removal anywhere."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raytask.core.queue import PendingQueue


def test_higher_priority_first_fifo_among_equals_and_requeued_in_front() -> None:
    queue = PendingQueue()
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", -3), ("e", 5)]:
        queue.push(task_id, priority)
    queue.push("r", -10, front=True)  # a lost attempt's task: it waited already
    assert list(queue) == ["r", "b", "e", "a", "c", "d"]
    assert [queue.position(t) for t in "rbeacd"] == [0, 1, 2, 3, 4, 5]
    assert queue.pop() == "r" and queue.pop() == "b"
    assert queue.position("a") == 1 and queue.position("gone") is None


def test_removal_from_the_middle_moves_everyone_behind_it_up() -> None:
    queue = PendingQueue()
    for i in range(10):
        queue.push(str(i), 0)
    assert queue.remove("3") and not queue.remove("3")
    assert queue.position("9") == 8 and queue.position("2") == 2
    assert len(queue) == 9 and "3" not in queue


def test_positions_stay_right_through_compaction() -> None:
    queue = PendingQueue()
    for i in range(500):
        queue.push(str(i), i % 3)
    for i in range(0, 500, 2):  # half gone: lanes renumber themselves
        queue.remove(str(i))
    expected = [t for t in (str(i) for i in range(500)) if int(t) % 2]
    expected.sort(key=lambda t: -(int(t) % 3))  # stable: FIFO within a priority
    assert list(queue) == expected
    assert [queue.position(t) for t in expected] == list(range(len(expected)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pxr"), st.integers(-10, 10)), max_size=80))
def test_the_queue_agrees_with_a_sorted_list(ops: list[tuple[str, int]]) -> None:
    # A slow but obvious model: sort by (front, priority, arrival) on every question.
    queue, model, arrival = PendingQueue(), {}, 0
    rng = random.Random(len(ops))
    for op, priority in ops:
        if op == "p" or not model:
            arrival += 1
            front = priority == 10 and arrival % 2 == 0
            queue.push(f"t{arrival}", priority, front=front)
            model[f"t{arrival}"] = (-(11 if front else priority), arrival)
        elif op == "x":
            victim = rng.choice(sorted(model))
            assert queue.remove(victim)
            del model[victim]
        else:
            head = min(model, key=model.__getitem__)
            assert queue.pop() == head
            del model[head]
        order = sorted(model, key=model.__getitem__)
        assert list(queue) == order
        assert [queue.position(t) for t in order] == list(range(len(order)))
        assert queue.peek() == (order[0] if order else None)
