"""The records of the change stream: row changes, transaction markers, logical messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from journal.catalog import TableSchema
from journal.positions import Position

MARK_PREFIX = "edms_journal.mark"
HEARTBEAT_PREFIX = "edms_journal.heartbeat"
# Opens a snapshot generation; content is JSON {"generation", "slot", "catalog"}.
SNAPSHOT_PREFIX = "edms_journal.snapshot"
# A catalog change (DDL) inside a transaction; content is JSON {"catalog", "change"}: the
# entries of the tables it created or changed (and the enum types), and which tables it
# created, changed, renamed or dropped (see journal.schema_change). Without "change" (older
# journals) "catalog" is the whole catalog and replaces the last.
CATALOG_PREFIX = "edms_journal.catalog"
# Written by the source's DDL event trigger in the DDL's own transaction (see
# producers/ddl_trigger.py); capture turns it into a CATALOG message and never journals it.
DDL_PREFIX = "edms_journal.ddl"
# Written by a BEFORE TRUNCATE trigger on each partition (content: "schema.table"): the
# stream carries a TRUNCATE of a partitioned table, never one of a partition alone, which
# capture must therefore refuse. Never journaled either.
PARTITION_TRUNCATE_PREFIX = "edms_journal.partition_truncate"

OPS = frozenset("curdt")


def micros_to_datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def datetime_to_micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change (``c``/``u``/``d``), snapshot read (``r``) or truncate (``t``).

    ``unchanged_toast`` names the columns PostgreSQL did not send (unchanged TOASTed
    values); their entries in ``after`` are ``None`` and mean "as before", never null.
    """

    op: str
    database: str
    table: TableSchema
    position: Position
    xid: int
    commit_ts: int  # microseconds since the epoch, UTC
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    unchanged_toast: tuple[str, ...] = ()
    snapshot: bool = False
    ts_ms: int = 0  # when capture processed it

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}")

    @property
    def key(self) -> tuple[Any, ...]:
        row = self.after if self.after is not None else self.before
        if row is None:
            return ()
        return self.table.key_of(row)


@dataclass(frozen=True, slots=True)
class TransactionMarker:
    status: str  # "BEGIN" or "END"
    database: str
    position: Position
    xid: int
    commit_ts: int
    event_count: int = 0


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    database: str
    prefix: str
    content: bytes
    transactional: bool
    position: Position
    xid: int
    commit_ts: int

    @property
    def is_mark(self) -> bool:
        return self.prefix == MARK_PREFIX


Record = ChangeEvent | TransactionMarker | LogicalMessage


@dataclass(slots=True)
class Transaction:
    """A complete source transaction: what replay and compaction apply as a unit."""

    begin: TransactionMarker
    records: list[ChangeEvent | LogicalMessage] = field(default_factory=list)
    end: TransactionMarker | None = None

    @property
    def commit_lsn(self) -> int:
        return self.begin.position.commit_lsn

    @property
    def changes(self) -> list[ChangeEvent]:
        return [r for r in self.records if isinstance(r, ChangeEvent)]
