"""The chunks a generator task streamed (SPEC 10), as the manager keeps and journals them.

A replica encodes each chunk to JSON as it is yielded (:func:`~raytask.core.endpoint.
encode_chunk`); the manager never decodes it to send it on. :class:`ChunkLog` keeps an
attempt's chunks in one ``bytearray`` with an array of their end offsets: 8 bytes a chunk
over its JSON, where a list of Python objects costs some 100 bytes more (the memory target
of SPEC 10's issue). A generator task's result is this log; it is decoded to the array of
chunks only when a client asks for the result.

The journal writes a log in groups (:meth:`ChunkLog.group`): each write holds the chunks
that came since the last one, so a stream of ``n`` chunks costs ``O(n)`` journal bytes,
not a row rewritten per change. A group's bytes say their attempt and first index, and
:meth:`ChunkLog.rebuild` checks that the groups it is given follow each other.
"""

from __future__ import annotations

import json
import struct
from array import array
from collections.abc import Iterable
from typing import Any

_HEAD = struct.Struct("<QQQ")  # attempt, first index, count


class ChunkLog:
    """The JSON chunks of one attempt, in order.

    Attributes:
        attempt: the attempt that streamed them.
        journaled: how many the journal holds (the journal moves it; -1: not even
            that the attempt started streaming).
    """

    __slots__ = ("_data", "_ends", "attempt", "journaled")

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.journaled = -1
        self._data = bytearray()
        self._ends = array("Q")

    def __len__(self) -> int:
        return len(self._ends)

    def __repr__(self) -> str:
        return f"ChunkLog(attempt={self.attempt}, chunks={len(self)}, bytes={self.nbytes})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkLog):
            return NotImplemented
        return (self.attempt, self._ends, self._data) == (other.attempt, other._ends, other._data)

    @property
    def nbytes(self) -> int:
        """The bytes of the chunks' JSON (what ``max_stream_bytes`` limits)."""
        return len(self._data)

    def extend(self, encoded: Iterable[bytes]) -> None:
        """Append chunks, each one's JSON."""
        for chunk in encoded:
            self._data += chunk
            self._ends.append(len(self._data))

    def _start(self, index: int) -> int:
        return self._ends[index - 1] if index else 0

    def slice(self, start: int, end: int) -> list[bytes]:
        """The JSON of chunks ``start`` to ``end`` (excluded)."""
        end = min(end, len(self))
        return [
            bytes(self._data[self._start(i) : self._ends[i]]) for i in range(max(start, 0), end)
        ]

    def values(self) -> list[Any]:
        """The chunks as values: the result of a generator task."""
        return json.loads(self.json_array())

    def json_array(self) -> bytes:
        """The chunks as one JSON array."""
        return b"[" + b",".join(self.slice(0, len(self))) + b"]"

    # -- the journal ------------------------------------------------------------------

    def unjournaled(self) -> bool:
        """Whether the journal lacks some of this log (or its start)."""
        return self.journaled < len(self)

    def group(self, end: int) -> bytes:
        """The chunks from :attr:`journaled` to ``end``, as the bytes of one journal group
        (its attempt, its first index and the chunks' ends and JSON); the group that
        starts at index 0 replaces the task's earlier ones."""
        first = max(self.journaled, 0)
        base = self._start(first)
        ends = array("Q", (e - base for e in self._ends[first:end]))
        head = _HEAD.pack(self.attempt, first, len(ends))
        return head + ends.tobytes() + bytes(self._data[base : self._start(end)])

    @staticmethod
    def first_of(group: bytes) -> int:
        """The index of the first chunk of a group."""
        return _HEAD.unpack_from(group)[1]

    @classmethod
    def rebuild(cls, groups: Iterable[bytes]) -> ChunkLog | None:
        """The log the journal's groups of one task make (in the order written; the
        first starts at index 0); None when there are none.

        Raises:
            ValueError: the groups do not follow each other (a lost or foreign group).
        """
        log: ChunkLog | None = None
        for group in groups:
            attempt, first, count = _HEAD.unpack_from(group)
            if log is None:
                log = cls(attempt)
            if attempt != log.attempt or first != len(log):
                raise ValueError(
                    f"a chunk group of attempt {attempt} from {first} does not follow "
                    f"attempt {log.attempt}'s {len(log)} chunks"
                )
            ends = array("Q")
            ends.frombytes(group[_HEAD.size : _HEAD.size + 8 * count])
            data = group[_HEAD.size + 8 * count :]
            if count and ends[-1] != len(data):
                raise ValueError("a chunk group's bytes are cut short")
            base = len(log._data)
            log._data += data
            log._ends.extend(base + e for e in ends)
        if log is not None:
            log.journaled = len(log)
        return log

    @classmethod
    def of(cls, attempt: int, values: Iterable[Any]) -> ChunkLog:
        """A log of values (each encoded as a replica encodes it): tests, old journals."""
        from .endpoint import encode_chunk

        log = cls(attempt)
        log.extend(encode_chunk(value) for value in values)
        return log
