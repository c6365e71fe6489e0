"""The audit trail as a hash chain in the job database.

Every entry carries the SHA-256 of the one before (``prev_hash``) and its own hash over its
content and that link, so editing an entry breaks its own hash, deleting one breaks the
numbering and the next entry's link, and ``verify`` names the entry where it happened.
Appends are serialised by the primary key: two writers that read the same head race for
the same ``seq`` and the loser retries on the new head.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from journal.jobs.database import JobDatabase, JobDatabaseError
from journal.jobs.models import AuditEntry, utcnow

GENESIS = "0" * 64


def entry_hash(seq: int, at: datetime, user: str, host: str, command: str, args: list[str],
               outcome: str, detail: str, seconds: float, prev_hash: str) -> str:
    """SHA-256 of a canonical JSON text of the entry (UTC time to the microsecond)."""
    text = json.dumps({"seq": seq, "at": at.isoformat(timespec="microseconds"), "user": user,
                       "host": host, "command": command, "args": list(args),
                       "outcome": outcome, "detail": detail, "seconds": seconds,
                       "prev_hash": prev_hash}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _hash_of(e: AuditEntry) -> str:
    return entry_hash(e.seq, e.at, e.user, e.host, e.command, e.args, e.outcome, e.detail,
                      e.seconds, e.prev_hash)


def append(db: JobDatabase, command: str, args: list[str], outcome: str, detail: str = "",
           *, started: datetime | None = None, seconds: float = 0.0, user: str | None = None,
           ) -> AuditEntry:
    """Add one entry at the head of the chain; ``args`` and ``detail`` must be redacted."""
    at = started or utcnow()
    user = user or getpass.getuser()
    host = socket.gethostname()
    seconds = round(float(seconds), 3)
    for _attempt in range(20):
        try:
            with db.session() as session:
                head = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())
                                       .limit(1)).first()
                seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
                entry = AuditEntry(seq=seq, at=at, user=user, host=host, command=command,
                                   args=list(args), outcome=outcome, detail=detail,
                                   seconds=seconds, prev_hash=prev)
                entry.hash = _hash_of(entry)
                session.add(entry)
            return entry
        except JobDatabaseError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
    raise JobDatabaseError("the audit trail's head kept moving: 20 appends lost the race")


def entries(db: JobDatabase, since: datetime | None = None, limit: int | None = None
            ) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.seq)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    with db.session() as session:
        rows = list(session.scalars(stmt))
    return rows[-limit:] if limit else rows


@dataclass(frozen=True)
class Break:
    seq: int
    problem: str

    def line(self) -> str:
        return f"entry {self.seq}: {self.problem}"


def verify(db: JobDatabase) -> tuple[int, list[Break]]:
    """Walk the chain from the first entry: (entries checked, every break found)."""
    rows = entries(db)
    breaks: list[Break] = []
    expected_seq, prev = 1, GENESIS
    for e in rows:
        if e.seq != expected_seq:
            missing = (f"entry {expected_seq}" if e.seq == expected_seq + 1
                       else f"entries {expected_seq}..{e.seq - 1}")
            breaks.append(Break(e.seq, f"{missing} deleted (the chain jumps from "
                                       f"{expected_seq - 1} to {e.seq})"))
        if e.prev_hash != prev:
            breaks.append(Break(e.seq, "its link to the previous entry does not match "
                                       "(an entry before it was deleted, edited or replaced)"))
        if e.hash != _hash_of(e):
            breaks.append(Break(e.seq, f"edited: its content no longer matches its hash "
                                       f"({e.command} {e.outcome} at {e.at:%Y-%m-%d %H:%M:%S}Z)"))
        expected_seq, prev = e.seq + 1, e.hash
    return len(rows), breaks


def cross_check(db: JobDatabase, copies: list[dict[str, Any]]) -> list[Break]:
    """Compare with the entries' copies in the JSON-lines file: a deleted last entry leaves
    the chain itself intact, but not its copy."""
    by_seq = {e.seq: e.hash for e in entries(db)}
    breaks = []
    for copy in copies:
        seq, digest = copy.get("seq"), copy.get("hash")
        if seq is None or digest is None:
            continue  # written before the chain existed
        if seq not in by_seq:
            breaks.append(Break(seq, f"deleted: the audit file has it ({copy.get('command')} "
                                     f"{copy.get('outcome')} at {copy.get('started')}), the "
                                     "job database does not"))
        elif by_seq[seq] != digest:
            breaks.append(Break(seq, "its hash differs from the audit file's copy"))
    return breaks


def to_json(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at.isoformat(), "user": e.user, "host": e.host,
            "command": e.command, "args": e.args, "outcome": e.outcome, "detail": e.detail,
            "seconds": e.seconds, "prev_hash": e.prev_hash, "hash": e.hash}


def page(db: JobDatabase, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
    """Up to ``limit`` entries, newest first, with ``seq`` below ``before`` (paging back)."""
    stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(AuditEntry.seq < before)
    with db.session() as session:
        return list(session.scalars(stmt))
