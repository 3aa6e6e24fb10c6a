import pytest

from raytask.client.polling import Poller
from raytask.core.errors import WaitTimeoutError


def test_polls_the_oldest_window_and_moves_on_when_it_finished() -> None:
    poller = Poller(list(range(10)), timeout_s=None, window=4)
    assert poller.batch() == [0, 1, 2, 3]
    assert poller.update([0, 1, 2, 3], [True] * 4) == 0.0  # no sleep: straight to the next
    assert poller.batch() == [4, 5, 6, 7]


def test_backs_off_without_progress_and_resets_on_progress() -> None:
    poller = Poller(list(range(3)), timeout_s=None, window=3)
    delays = [poller.update([0, 1, 2], [False] * 3) for _ in range(4)]
    assert delays == sorted(delays) and delays[0] < delays[-1] <= 1.0
    assert poller.update([0, 1, 2], [True, False, False]) == pytest.approx(0.05)
    assert poller.batch() == [1, 2]
    assert poller.update([1, 2], [True, True]) is None


def test_deadline_raises_with_the_count_left() -> None:
    poller = Poller(["a", "b"], timeout_s=0.0, window=2)
    with pytest.raises(WaitTimeoutError, match="2 tasks did not finish within 0 s"):
        poller.update(["a", "b"], [False, False])


def test_duplicates_are_polled_once() -> None:
    assert Poller(["a", "a", "b"], None, window=10).batch() == ["a", "b"]


def test_a_long_poll_plan_asks_for_what_is_left_and_pauses_only_after_early_answers() -> None:
    from raytask.client.polling import LONG_POLL_S, LongPoll

    forever = LongPoll(None)
    assert forever.next_wait() == LONG_POLL_S
    assert forever.pause_after(LONG_POLL_S, LONG_POLL_S) == 0.0  # the server held it
    first, second = forever.pause_after(30, 0.001), forever.pause_after(30, 0.001)
    assert 0 < first < second  # a server that answers at once is polled with backoff
    short = LongPoll(2.0)
    wait_s = short.next_wait()
    assert wait_s is not None and 1.9 < wait_s <= 2.0
    expired = LongPoll(0.0)
    assert expired.next_wait() == 0.0  # one plain look, even with no time left
    assert expired.next_wait() is None
