import json

import pytest

from raytask.core.config import TaskOptions
from raytask.core.errors import InvalidTransitionError
from raytask.core.record import TaskRecord
from raytask.core.state import TIME_FIELDS, TaskState
from raytask.core.status import BENTOML_SPELLING, TRANSITIONS, TaskStatus, can_transition

S = TaskStatus


def test_wire_values_are_the_seed_pages() -> None:
    assert [s.value for s in S] == ["pending", "in_progress", "success", "failure", "cancelled"]
    assert S("success") is S.SUCCESS


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.IN_PROGRESS),
        (S.PENDING, S.CANCELLED),
        (S.IN_PROGRESS, S.SUCCESS),
        (S.IN_PROGRESS, S.FAILURE),
        (S.IN_PROGRESS, S.CANCELLED),
        (S.IN_PROGRESS, S.PENDING),
    ],
)
def test_legal_transitions(current: TaskStatus, target: TaskStatus) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.SUCCESS),
        (S.PENDING, S.PENDING),
        (S.SUCCESS, S.PENDING),
        (S.SUCCESS, S.FAILURE),
        (S.FAILURE, S.IN_PROGRESS),
        (S.CANCELLED, S.PENDING),
        (S.CANCELLED, S.SUCCESS),
    ],
)
def test_illegal_transitions(current: TaskStatus, target: TaskStatus) -> None:
    assert not can_transition(current, target)


def test_terminal_states_have_no_way_out() -> None:
    for status in S:
        assert status.finished == (TRANSITIONS[status] == frozenset())


@pytest.mark.parametrize(
    ("status", "bentoml"),
    [
        (S.PENDING, "pending"),
        (S.IN_PROGRESS, "in_progress"),
        (S.SUCCESS, "completed"),
        (S.FAILURE, "failed"),
        (S.CANCELLED, "canceled"),
    ],
)
def test_bentoml_spellings_go_out_and_come_back(status: TaskStatus, bentoml: str) -> None:
    # BentoML 1.4's client parses only these; our clients read either spelling.
    state = TaskState(task_id="a" * 32, status=status)
    assert state.wire(bentoml=True)["status"] == bentoml
    assert state.wire()["status"] == status.value
    assert TaskState.model_validate_json(json.dumps(state.wire(bentoml=True))).status is status
    assert set(BENTOML_SPELLING) == set(S)


@pytest.mark.parametrize("seconds", [1e20, -1e20, float("inf"), float("nan")])
def test_every_time_field_can_be_formatted(seconds: float) -> None:
    # Durations are bounded, so stored times are sane; iso() still never raises.
    state = TaskState.of(
        "a" * 32,
        TaskStatus.SUCCESS,
        "e",
        *[seconds] * 4,
        1,
        None,
        None,
        0,
        None,
        None,
        None,
        None,
        0.0,
        0.0,
        0.0,
        None,
    )
    body = json.loads(state.model_dump_json())
    assert all(body[field] == "9999-12-31T23:59:59.999999+00:00" for field in TIME_FIELDS)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (TaskStatus.CANCELLED, TaskStatus.PENDING),
        (TaskStatus.FAILURE, TaskStatus.PENDING),
        (TaskStatus.PENDING, TaskStatus.IN_PROGRESS),
        (TaskStatus.SUCCESS, TaskStatus.CANCELLED),
    ],
)
def test_recovery_has_its_own_narrow_rules(current: TaskStatus, target: TaskStatus) -> None:
    assert not can_transition(current, target, recovering=True)


def test_a_record_moves_only_as_the_state_machine_allows() -> None:
    record = TaskRecord("a" * 32, "e", {}, TaskOptions(), 0.0, TaskStatus.SUCCESS)
    with pytest.raises(InvalidTransitionError):
        record.move(TaskStatus.PENDING, 1.0)  # a running manager never takes a result back
    record.completed_at = record.expires_at = 5.0
    record.move(TaskStatus.PENDING, 1.0, recovering=True)  # a restarted one may, if lost
    assert record.status is TaskStatus.PENDING and record.completed_at is None
    with pytest.raises(InvalidTransitionError):
        record.move(TaskStatus.SUCCESS, 2.0, recovering=True)
