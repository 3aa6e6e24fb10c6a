import pickle

import pytest

import raytask
from raytask.core import errors

ALL_HTTP = [
    errors.MalformedRequestError,
    errors.TaskNotCompletedError,
    errors.TaskNotFoundError,
    errors.EndpointNotFoundError,
    errors.TaskConflictError,
    errors.TaskCancelledError,
    errors.TaskExpiredError,
    errors.PayloadTooLargeError,
    errors.InvalidInputError,
    errors.TaskFailedError,
    errors.ServiceUnavailableError,
]


@pytest.mark.parametrize("cls", ALL_HTTP)
def test_errors_pickle_and_keep_their_fields(cls: type[errors.HTTPError]) -> None:
    error = cls("message", {"k": 1})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and copy.message == "message" and copy.detail == {"k": 1}
    assert isinstance(copy, raytask.RaytaskError)


def test_queue_full_pickles_with_retry_after() -> None:
    copy = pickle.loads(pickle.dumps(errors.QueueFullError("full", retry_after_s=3)))
    assert copy.retry_after_s == 3 and copy.status_code == 429


def test_transition_error_pickles() -> None:
    copy = pickle.loads(pickle.dumps(errors.InvalidTransitionError("t", "pending", "success")))
    assert str(copy) == "task t cannot move from pending to success"


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (400, "task x is not completed yet", errors.TaskNotCompletedError),
        (400, "malformed task_id", errors.MalformedRequestError),
        (404, "task x not found", errors.TaskNotFoundError),
        (404, "no endpoint named 'x'", errors.EndpointNotFoundError),
        (409, "task x was cancelled", errors.TaskCancelledError),
        (409, "task x already finished", errors.TaskConflictError),
        (410, "expired", errors.TaskExpiredError),
        (413, "too large", errors.PayloadTooLargeError),
        (422, "invalid", errors.InvalidInputError),
        (429, "full", errors.QueueFullError),
        (500, "failed", errors.TaskFailedError),
        (503, "down", errors.ServiceUnavailableError),
    ],
)
def test_error_bodies_map_back_to_classes(status: int, message: str, cls: type) -> None:
    error = errors.error_from_body(status, {"error": message, "detail": [1]})
    assert type(error) is cls and error.message == message and error.detail == [1]


@pytest.mark.parametrize("cls", ALL_HTTP)
def test_the_code_in_a_body_names_the_class(cls: type[errors.HTTPError]) -> None:
    body = cls("any words at all", [2]).to_body()
    assert body["code"] == cls.code and body["error"] == "any words at all"
    error = errors.error_from_body(cls.status_code, body)
    assert type(error) is cls and error.detail == [2]


def test_codes_are_unique_and_machine_readable() -> None:
    codes = [cls.code for cls in ALL_HTTP]
    assert len(set(codes)) == len(codes)
    assert all(code.replace("_", "").isalpha() and code.islower() for code in codes)


def test_a_code_that_disagrees_with_the_status_is_ignored() -> None:
    error = errors.error_from_body(404, {"error": "task x not found", "code": "queue_full"})
    assert type(error) is errors.TaskNotFoundError


def test_unknown_status_keeps_its_code() -> None:
    error = errors.error_from_body(502, "bad gateway")
    assert type(error) is errors.HTTPError and error.status_code == 502


def test_public_surface_is_explicit() -> None:
    assert sorted(raytask.__all__) == sorted(set(raytask.__all__))
    for name in raytask.__all__:
        assert hasattr(raytask, name), name
    public = {n for n in dir(raytask) if not n.startswith("_")}
    modules = {"autoscaling", "client", "core", "server"}
    assert public - modules - set(raytask.__all__) == set()


def test_the_readme_error_table_lists_every_public_error() -> None:
    import re

    from ..support import ROOT

    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+Error)` \| (\d+|none) \|", text, re.M))
    public = {
        name
        for name in raytask.__all__
        if name.endswith("Error") and name not in ("RaytaskError", "HTTPError")
    }
    assert set(rows) == public
    for name, status in rows.items():
        cls = getattr(raytask, name)
        expected = str(cls.status_code) if issubclass(cls, raytask.HTTPError) else "none"
        assert status == expected, name
