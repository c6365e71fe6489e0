"""Positions: the total order of every event of one source database."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """Parse PostgreSQL's ``XXXXXXXX/XXXXXXXX`` LSN notation into an integer."""
    m = _LSN.match(text.strip())
    if not m:
        raise ValueError(f"not an LSN: {text!r} (expected the form 16/B374D848)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


_PACKED = struct.Struct(">QQ")


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """``(commit_lsn, seq)``: commit LSN of the source transaction, index inside it.

    Within a transaction seq 0 is the begin marker, 1..n the changes and n+1 the end
    marker, so every record of the stream has its own position.
    """

    commit_lsn: int
    seq: int = 0

    def __str__(self) -> str:
        return f"{format_lsn(self.commit_lsn)}:{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position:
        lsn, sep, seq = text.rpartition(":")
        if not sep:
            return cls(parse_lsn(text), 0)
        return cls(parse_lsn(lsn), int(seq))

    def to_bytes(self) -> bytes:
        if not (0 <= self.commit_lsn < 1 << 64 and 0 <= self.seq < 1 << 64):
            raise OverflowError(f"position {self.commit_lsn}:{self.seq} outside 64 bits")
        return _PACKED.pack(self.commit_lsn, self.seq)  # once per captured record

    @classmethod
    def from_bytes(cls, data: bytes) -> Position:
        return cls(int.from_bytes(data[:8], "big"), int.from_bytes(data[8:16], "big"))


ORIGIN = Position(0, 0)
