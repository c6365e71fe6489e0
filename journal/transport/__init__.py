"""The journal transport: one small interface, a Kafka and a file implementation.

Writers append encoded records and ``flush()`` only returns once everything appended is
durable (Kafka acknowledged with acks=all, or the file journal fsynced). Readers return
records in transport order; delivery is at-least-once, and ``deduplicate`` turns that
into exactly-once in effect by dropping every position at or below the last one seen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from journal.codec import SchemaRegistry, decode
from journal.config import redact
from journal.errors import ConfigError
from journal.events import Record
from journal.positions import Position


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as the transport holds it: position (for dedupe), key and value bytes.

    ``offset`` is the transport's own cursor of this record (Kafka offset, file journal
    byte offset): ``read(offset)`` starts with it. ``next_offset`` is the cursor just past
    it: once a consumer has durably processed the record it calls
    ``commit_offset(name, record.next_offset)``, and ``read(committed_offset(name))``
    resumes with the record after it.
    """

    position: Position
    key: bytes | None
    value: bytes
    offset: int
    next_offset: int | None = None  # None only for records built outside a transport


@dataclass(frozen=True, slots=True)
class Committed:
    """What a consumer committed: the offset it resumes at and, when it said so, the
    stream position everything before that offset reaches (for the compactor: the end of
    the package that covers it, which is where a restore may continue in the journal)."""

    offset: int
    position: Position | None = None


class JournalWriter(ABC):
    @abstractmethod
    def publish_schemas(self, registry: SchemaRegistry) -> None:
        """Publish every schema of the registry not yet published (idempotent)."""

    @abstractmethod
    def append(self, position: Position, key: bytes | None, value: bytes) -> None:
        """Queue one encoded record; it is durable only after ``flush``."""

    @abstractmethod
    def flush(self) -> None:
        """Block until every appended record is durable; raise TransportError otherwise."""

    @abstractmethod
    def close(self) -> None: ...


class JournalReader(ABC):
    @abstractmethod
    def registry(self) -> SchemaRegistry:
        """Every schema published so far (re-read on each call)."""

    @abstractmethod
    def read(self, from_offset: int = 0, *, follow: bool = False,
             idle_timeout: float = 1.0) -> Iterator[RawRecord]:
        """Records from a transport offset on. Without ``follow`` it stops at the end of
        what is durable now; with it, it stops after ``idle_timeout`` seconds without data."""

    @abstractmethod
    def committed(self, consumer: str) -> Committed:
        """The offset after the last record ``consumer`` committed (0 if none), and the
        position it was committed with."""

    def committed_offset(self, consumer: str) -> int:
        return self.committed(consumer).offset

    @abstractmethod
    def commit_offset(self, consumer: str, offset: int, *,
                      position: Position | None = None) -> None:
        """Durably record that ``consumer`` processed everything before ``offset``
        (which reaches stream position ``position``, when given)."""

    def release(self, offset: int, *, min_age_s: float = 0.0) -> int:
        """Everything before ``offset`` is durably packaged: the transport may delete it
        once it is ``min_age_s`` old. The file journal deletes whole segments; Kafka leaves
        it to the topic's own retention. Returns the number of segments deleted."""
        return 0

    @abstractmethod
    def close(self) -> None: ...


def deduplicate(records: Iterable[RawRecord], after: Position | None = None
                ) -> Iterator[RawRecord]:
    """Drop every record at or below the highest position already seen (or ``after``)."""
    last = after
    for raw in records:
        if last is not None and raw.position <= last:
            continue
        last = raw.position
        yield raw


def decoded(records: Iterable[RawRecord], registry: SchemaRegistry) -> Iterator[Record]:
    for raw in records:
        yield decode(raw.value, registry)


def open_writer(url: str, database: str) -> JournalWriter:
    """A writer for ``kafka://host:port[,host:port]`` or ``file:///dir``."""
    return _journal(url, database).writer()


def open_reader(url: str, database: str) -> JournalReader:
    return _journal(url, database).reader()


def _journal(url: str, database: str) -> Any:
    scheme = urlsplit(url).scheme
    if scheme == "file":
        from journal.transport.file import FileJournal

        return FileJournal.from_url(url, database)
    if scheme == "kafka":
        from journal.transport.kafka import KafkaJournal

        return KafkaJournal.from_url(url, database)
    raise ConfigError(f"unsupported journal URL {redact(url)!r}: "
                      "use kafka://host:port or file:///dir")
