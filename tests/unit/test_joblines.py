"""A batch job's lines and state (SPEC §11): checking, parsing, result lines, windows, and
the progress a restart goes on from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raytask.core.endpoint import discover
from raytask.core.errors import InvalidInputError, NotFoundError
from raytask.server import joblines
from raytask.server.files import FileStore
from raytask.server.joblines import check_file, error_line, output_line, parse_line
from raytask.server.jobstate import Job, commit, open_run, window_s
from tests.apps import Demo

ENDPOINTS = {e.name: e for e in discover(Demo.func_or_class, "Demo", None)}
WORDCOUNT = ENDPOINTS["wordcount"]


def line(custom_id: Any, body: Any = None, url: str = "/wordcount", **extra: Any) -> bytes:
    data = {"custom_id": custom_id, "method": "POST", "url": url, "body": body or {"text": "a"}}
    return json.dumps({**data, **extra}).encode()


def test_a_request_line_parses_to_the_endpoints_stored_inputs() -> None:
    assert parse_line(line("x", {"text": "a b", "top": 2}), "/wordcount", WORDCOUNT) == (
        "x",
        {"text": "a b", "top": 2},
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "invalid_json_line"),
        (b"[1]", "invalid_request"),
        (line(""), "invalid_custom_id"),
        (line(7), "invalid_custom_id"),
        (line("x" * 513), "invalid_custom_id"),
        (line("x", extra_field=1), "invalid_request"),
        (line("x", method="GET"), "invalid_method"),
        (line("x", url="/fail"), "mismatched_url"),
        (line("x", body=[1]), "invalid_body"),
        (line("x", {"text": 1}), "invalid_body"),
        (line("x", {"nope": 1}), "invalid_body"),
        (b"[" * 100_000, "invalid_json_line"),  # deep nesting is refused, not a crash
    ],
)
def test_a_bad_line_says_what_is_wrong(raw: bytes, code: str) -> None:
    with pytest.raises(joblines.LineError) as caught:
        parse_line(raw, "/wordcount", WORDCOUNT)
    assert caught.value.code == code


def test_check_file_counts_requests_skips_blank_lines_and_finds_duplicates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([line("a"), b"", line("b"), b"  ", line("a"), line("c")]))
    total, errors = check_file(path, "/wordcount", WORDCOUNT)
    assert total == 4
    assert errors == [
        {"code": "duplicate_custom_id", "message": "custom_id 'a' is used twice", "line": 5}
    ]
    path.write_bytes(b"")
    assert check_file(path, "/wordcount", WORDCOUNT)[1][0]["code"] == "empty_file"


def test_only_a_real_duplicate_is_reported_when_digests_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(joblines, "_digest", lambda custom_id: 42)  # every digest equal
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([line("a"), line("b"), line("c"), line("b")]))
    total, errors = check_file(path, "/wordcount", WORDCOUNT)
    assert total == 4 and [e["line"] for e in errors] == [4]


def test_check_file_lists_at_most_max_errors(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"{\n" * 1500)
    total, errors = check_file(path, "/wordcount", WORDCOUNT)
    assert total == 1500 and len(errors) == joblines.MAX_ERRORS


def test_result_lines_carry_json_text_and_bytes() -> None:
    data = json.loads(output_line("batch_req_1", "c", "t" * 32, {"a": [1.5]}))
    assert data == {
        "id": "batch_req_1",
        "custom_id": "c",
        "response": {"status_code": 200, "request_id": "t" * 32, "body": {"a": [1.5]}},
        "error": None,
    }
    assert json.loads(output_line("i", "c", "t", "héllo"))["response"]["body"] == "héllo"
    assert json.loads(output_line("i", "c", "t", b"\x00\x01"))["response"]["body"] == "AAE="
    never_ran = json.loads(error_line("i", "c", "batch_cancelled", "cancelled"))
    assert never_ran["response"] is None
    assert never_ran["error"] == {"code": "batch_cancelled", "message": "cancelled"}
    failed = json.loads(error_line("i", "c", "task_failed", "boom", "t"))
    assert failed["response"]["body"] == {"error": {"code": "task_failed", "message": "boom"}}


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("24h", 86_400), ("1h", 3600), ("168h", 604_800), ("90m", 5400), ("3s", 3)],
)
def test_completion_windows(window: str, seconds: int) -> None:
    assert window_s(window) == seconds


@pytest.mark.parametrize("window", ["0h", "169h", "24", "h", "1d", "-1h", " 24h", "0s", "10081m"])
def test_bad_completion_windows_are_422(window: str) -> None:
    with pytest.raises(InvalidInputError):
        window_s(window)


def test_a_run_goes_on_from_its_last_commit(tmp_path: Path) -> None:
    files = FileStore(tmp_path, 10**9)
    upload = files.open("in.jsonl", "batch")
    files.write(upload, b"\n".join(line(f"r{i}") for i in range(10)) + b"\n")
    info = files.close(upload)
    job = Job("batch_1", "/wordcount", info.id, "24h", 0, 86_400, total=10)
    run = open_run(job, files, tmp_path)
    read = [next(run.feed) for _ in range(4)]  # lines 1-4 fed; 1, 2 and 4 finish
    for number, offset, _ in read:
        run.inflight[f"t{number}"] = (number, offset, f"r{number - 1}")
    for number in (1, 2, 4):
        run.out.write(b"out %d\n" % number)
        run.mark(number)
        del run.inflight[f"t{number}"]
        job.completed += 1
    commit(job, run, tmp_path)
    run.out.write(b"written after the commit\n")  # lost with the crash: cut back
    run.src.close()
    run.out.release()
    run.err.release()

    again = open_run(job, FileStore(tmp_path, 10**9), tmp_path)
    assert job.completed == 3
    assert again.out.info.bytes == len(b"out 1\nout 2\nout 4\n")
    fed = [number for number, _, _ in again.feed if not again.is_done(number)]
    assert fed == [3, 5, 6, 7, 8, 9, 10]  # from line 3, the first one not finished
    again.src.close()
    again.out.release()
    again.err.release()
    assert (tmp_path / f"{job.output['id']}.jsonl").read_bytes() == b"out 1\nout 2\nout 4\n"


def test_an_upload_left_idle_is_dropped_with_its_bytes(tmp_path: Path) -> None:
    files = FileStore(tmp_path, 10**9)
    idle, busy = files.open("a", "batch"), files.open("b", "batch")
    files.write(idle, b"cut off")
    assert files.drop_idle(idle_s=3600) == []
    files._uploads[idle].touched -= 3601  # its ingress went away an hour ago
    files.write(busy, b"x")
    assert files.drop_idle(idle_s=3600) == [idle]
    assert not files.path(idle).exists() and files.path(busy).exists()
    with pytest.raises(NotFoundError):
        files.write(idle, b"more")
    files.close(busy)
