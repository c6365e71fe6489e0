"""Where a restore, a verify or an export stops.

``RestoreTarget`` is the point a person names (the latest state, a time, an LSN, a
transaction id, a named mark), built in one place from the options of the CLI and the API.
``Cutoff`` is the rule it resolves to once the packages are known (a mark or an xid
becomes the LSN of its commit): which source transactions a fold or a replay applies.
Targets follow PostgreSQL's recovery targets: a time stops *before* the first transaction
that committed after it (``recovery_target_time``); an LSN, a transaction id and a named
mark are inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from journal.errors import ConfigError
from journal.events import Transaction, datetime_to_micros, micros_to_datetime
from journal.positions import format_lsn

KINDS = ("latest", "time", "lsn", "xid", "mark")


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restore stops. ``value``: µs UTC (time), int LSN (lsn), xid, mark name."""

    kind: str = "latest"
    value: int | str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown restore target kind {self.kind!r}")

    @classmethod
    def at_time(cls, when: datetime | int) -> RestoreTarget:
        return cls("time", when if isinstance(when, int) else datetime_to_micros(when))

    @classmethod
    def from_options(cls, *, time: datetime | int | None = None, lsn: int | None = None,
                     xid: int | None = None, mark: str | None = None) -> RestoreTarget:
        """The target named by at most one of the options a command or the API takes;
        none of them is the latest state."""
        given = [k for k, v in (("time", time), ("lsn", lsn), ("xid", xid), ("mark", mark))
                 if v is not None]
        if len(given) > 1:
            raise ConfigError(f"choose one restore target, not {' and '.join(given)}")
        if time is not None:
            return cls.at_time(time)
        if lsn is not None:
            return cls("lsn", lsn)
        if xid is not None:
            return cls("xid", xid)
        if mark is not None:
            return cls("mark", mark)
        return cls()

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest"
        if self.kind == "time":
            assert isinstance(self.value, int)
            return f"time {micros_to_datetime(self.value).isoformat()}"
        if self.kind == "lsn":
            assert isinstance(self.value, int)
            return f"lsn {format_lsn(self.value)}"
        return f"{self.kind} {self.value}"


@dataclass(frozen=True)
class Cutoff:
    """Which source transactions a replay applies: those with ``commit_lsn <= max_lsn``
    and ``commit_ts <= max_commit_ts``; the first one that fails stops the replay."""

    max_lsn: int | None = None
    max_commit_ts: int | None = None

    def includes(self, commit_lsn: int, commit_ts: int) -> bool:
        if self.max_lsn is not None and commit_lsn > self.max_lsn:
            return False
        return self.max_commit_ts is None or commit_ts <= self.max_commit_ts

    def stops_before(self, txn: Transaction) -> bool:
        """Whether ``txn`` lies past the cut (the fold stops at the first such one)."""
        return not self.includes(txn.commit_lsn, txn.begin.commit_ts)
