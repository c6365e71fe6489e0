"""Named restore marks: what a valid name is, and whether a name is already taken.

A mark is a transactional ``pg_logical_emit_message`` with MARK_PREFIX; ``--to-mark NAME``
finds it in the packages' manifests. A name therefore has to mean one point: it is
unique in the stream. Uniqueness is decided from what the stream already holds, read
where it is recorded -- every package's manifest lists its marks, and the journal's tail
not yet packaged (from the compactor's committed offset) holds the newer ones. Reading
the source instead would miss nothing newer but cannot see the past; reading the whole
journal would cost its full size on every mark. What neither holds yet -- a mark written
in the last moment and not yet captured -- can still be named twice by two concurrent
callers; capture lag (about a second) bounds that window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from journal.codec import decode
from journal.errors import ConfigError
from journal.events import MARK_PREFIX, LogicalMessage, micros_to_datetime
from journal.packages import Manifest
from journal.positions import Position
from journal.transport import JournalReader

MAX_MARK_NAME = 100
_MARK_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_MARK_NAME - 1}}}$")
_MARK_KEY = MARK_PREFIX.encode()  # a message's transport key is its prefix


@dataclass(frozen=True)
class MarkSeen:
    name: str
    position: Position
    commit_ts: int
    where: str  # "package <id>" or "the journal"

    def describe(self) -> str:
        when = micros_to_datetime(self.commit_ts).isoformat()
        return f"at {self.position}, committed {when} (in {self.where})"


def check_mark_name(name: str) -> None:
    """Non-empty, at most MAX_MARK_NAME characters, letters, digits and ``. _ : -``, starting
    with a letter or digit: safe in a shell, a URL, a log line and a file name."""
    if not _MARK_NAME.match(name):
        shown = repr(name) if len(name) <= MAX_MARK_NAME else f"{name[:40]!r}… ({len(name)} chars)"
        raise ConfigError(f"mark name {shown} is not valid: use 1-{MAX_MARK_NAME} letters, "
                          "digits, '.', '_', ':' or '-', starting with a letter or digit")


def marks_in_packages(manifests: Iterable[Manifest]) -> Iterator[MarkSeen]:
    for m in manifests:
        for name, position, commit_ts in m.marks:
            yield MarkSeen(name, position, commit_ts, f"package {m.package_id}")


def marks_in_journal(reader: JournalReader, from_offset: int = 0) -> Iterator[MarkSeen]:
    """The marks of the journal from a transport offset on (only marks are decoded)."""
    registry = None
    for raw in reader.read(from_offset):
        if raw.key != _MARK_KEY:
            continue
        registry = registry or reader.registry()
        record = decode(raw.value, registry)
        if isinstance(record, LogicalMessage) and record.is_mark and record.transactional:
            yield MarkSeen(record.content.decode("utf-8", "replace"), record.position,
                           record.commit_ts, "the journal")


def find_mark(name: str, seen: Iterable[MarkSeen]) -> MarkSeen | None:
    return next((m for m in seen if m.name == name), None)
