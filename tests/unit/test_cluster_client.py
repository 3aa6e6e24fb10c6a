"""The in-cluster client's bounded waits, with ``ray.get`` faked (no Ray in this tier).

A driver that joined a busy cluster once hung for good on a call the manager never
answered; every blocking call now ends within its bound with an error that says what to
check, and the one-off read of the app's models is asked again first.
"""

from __future__ import annotations

from typing import Any

import pytest
import ray

from raytask.client import cluster, manager_calls
from raytask.core.errors import ServiceUnavailableError


class Manager:
    """A manager handle whose calls return tokens; ``ray.get`` decides what they give."""

    class _Method:
        def __init__(self, name: str) -> None:
            self.name = name

        def remote(self, *args: Any) -> str:
            return self.name

    def __getattr__(self, name: str) -> Any:
        return self._Method(name)


def test_an_unanswered_call_is_a_503_error_that_says_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeouts: list[float] = []

    def never(refs: Any, timeout: float | None = None) -> Any:
        assert timeout is not None, "an unbounded wait"
        timeouts.append(timeout)
        raise ray.exceptions.GetTimeoutError("no answer")

    monkeypatch.setattr(ray, "get", never)
    with pytest.raises(ServiceUnavailableError, match="ray status") as info:
        manager_calls.ask("status")
    assert info.value.status_code == 503
    with pytest.raises(ServiceUnavailableError, match="within 90 s"):
        manager_calls.ask("wait", hold_s=30)  # a long-poll's own hold comes on top
    assert timeouts == [manager_calls.CALL_TIMEOUT_S, manager_calls.CALL_TIMEOUT_S + 30]


def test_the_models_are_asked_again_before_giving_up(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [ray.exceptions.GetTimeoutError("busy"), [("Demo", object)]]

    def flaky(refs: Any, timeout: float | None = None) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(ray, "get", flaky)
    assert cluster._models(Manager(), "demo") == [("Demo", object)]
    answers[:] = [ray.exceptions.GetTimeoutError("busy")] * 3
    with pytest.raises(ServiceUnavailableError, match="'demo' in 3 tries"):
        cluster._models(Manager(), "demo")
    assert answers == []


def test_an_in_cluster_client_says_whose_tasks_it_submits() -> None:
    import raytask

    class Model:
        @raytask.task
        def echo(self, text: str) -> str:
            return text

    client = cluster.AsyncClusterClient("app", Manager(), [("Model", Model)], tenant="team-a")
    item = client.echo._item((), {"text": "hi"})
    assert (item.tenant, item.owner, item.kwargs) == ("team-a", None, {"text": "hi"})
    assert cluster.AsyncClusterClient("app", Manager(), []).tenant == "anonymous"
    with pytest.raises(ValueError, match="tenant name"):
        cluster.AsyncClusterClient("app", Manager(), [], tenant='bad"name')
