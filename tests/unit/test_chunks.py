"""The manager's store of a generator task's chunks (raytask.core.chunks)."""

from __future__ import annotations

import tracemalloc

import pytest

from raytask.core.chunks import ChunkLog
from raytask.core.endpoint import encode_chunk


def test_a_log_keeps_chunks_as_json_and_answers_slices_values_and_the_array() -> None:
    log = ChunkLog.of(3, ["a", {"b": [1, 2]}, None, 1.5, b"\x00"])
    assert (log.attempt, len(log)) == (3, 5)
    assert log.slice(1, 3) == [b'{"b":[1,2]}', b"null"]
    assert log.slice(4, 99) == [b'"AA=="'] and log.slice(5, 9) == []
    assert log.values() == ["a", {"b": [1, 2]}, None, 1.5, "AA=="]
    assert log.json_array() == b'["a",{"b":[1,2]},null,1.5,"AA=="]'
    assert log.nbytes == sum(len(c) for c in log.slice(0, 5))
    assert ChunkLog(1).values() == [] and ChunkLog(1).json_array() == b"[]"


def test_groups_hold_only_what_came_since_the_last_and_rebuild_the_log() -> None:
    log = ChunkLog(2)
    assert log.unjournaled()  # even an empty log: the attempt's start is news
    groups = []
    for values in ([], ["a", "b"], ["c"], [{"d": 4}]):
        log.extend(encode_chunk(v) for v in values)
        groups.append(log.group(len(log)))
        log.journaled = len(log)
        assert not log.unjournaled()
    assert [ChunkLog.first_of(g) for g in groups] == [0, 0, 2, 3]
    assert len(groups[2]) < len(groups[1])  # a group does not repeat earlier chunks
    rebuilt = ChunkLog.rebuild(groups)
    assert rebuilt == log and rebuilt is not None and rebuilt.journaled == 4
    assert ChunkLog.rebuild([]) is None


@pytest.mark.parametrize("drop", [0, 1])  # (a lost last group: the row's count tells)
def test_groups_that_do_not_follow_each_other_are_refused(drop: int) -> None:
    log = ChunkLog(1)
    groups = []
    for value in ("a", "b", "c"):
        log.extend([encode_chunk(value)])
        groups.append(log.group(len(log)))
        log.journaled = len(log)
    del groups[drop]
    with pytest.raises(ValueError, match="does not follow"):
        ChunkLog.rebuild(groups)
    other = ChunkLog(2)
    other.extend([encode_chunk("x")])
    first = ChunkLog.of(1, ["a"]).group(1)
    with pytest.raises(ValueError, match="does not follow"):  # another attempt's
        ChunkLog.rebuild([first, other.group(1)])
    with pytest.raises(ValueError, match="cut short"):
        ChunkLog.rebuild([first[:-1]])


def test_a_kept_chunk_costs_its_json_and_a_few_bytes() -> None:
    chunks = [encode_chunk(f"token {i}") for i in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        log = ChunkLog(1)
        for chunk in chunks:  # one at a time, as a fast stream brings them
            log.extend([chunk])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the issue: at most size + 100 B; a list of bytes objects would cost 53 B over each
    assert grown <= log.nbytes + 32 * len(log), grown / len(log)


def test_a_row_journaled_before_chunk_groups_still_reads() -> None:
    from raytask.core.config import TaskOptions
    from raytask.core.record import TaskRecord

    row = TaskRecord("a" * 32, "words", {}, TaskOptions(), 1.0).to_dict()
    row.update(status="in_progress", chunks=["x", {"y": 1}], chunk_attempt=2, chunk_bytes=9)
    record = TaskRecord.from_dict(row)
    assert record.chunks is not None and record.chunks.attempt == 2
    assert record.chunks.values() == ["x", {"y": 1}] and record.chunks.unjournaled()
