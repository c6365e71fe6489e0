"""What a restore did (or, in a dry run, would do): per-table counts and the reached position."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from restorer.plan import TAIL_ID


@dataclass
class TableCounts:
    before: int = 0
    after: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    remapped: int = 0  # rows whose target primary key differs from the source's
    refused: int = 0


@dataclass
class RestoreReport:
    target: str  # redacted URL
    mode: str  # "empty" (ids kept, COPY) | "remap" (natural keys) | "noop"
    dry_run: bool
    restore_target: str
    package_ids: list[str] = field(default_factory=list)
    start_position: str | None = None
    reached_position: str | None = None
    transactions_replayed: int = 0
    events_replayed: int = 0
    tables: dict[str, TableCounts] = field(default_factory=dict)
    unresolved_generic_keys: int = 0
    # per "table.column": generic foreign key values that point at nothing in the restore
    dangling_generic_keys: dict[str, int] = field(default_factory=dict)
    # how rows were recognised: "table.object_id_column" -> content-type column (origin),
    # table -> natural key columns (origin), and the tables matched by content
    generic_foreign_keys: dict[str, str] = field(default_factory=dict)
    natural_keys: dict[str, str] = field(default_factory=dict)
    content_matched: list[str] = field(default_factory=list)
    seconds: float = 0.0
    replay_seconds: float = 0.0  # reading, decoding and applying the segments
    # "net changes" (folded into the snapshot, COPYed once) or "ordered" (each
    # transaction applied in turn); empty when nothing was replayed
    replay: str = ""
    # why net changes were not applied set-wise: into an empty target, the tables were
    # rewritten merged with them; into a live one, they were replayed in order
    net_rewrite: str = ""
    journal_tail: str = ""  # what came from the journal after the newest package
    # rows of a set-wise replay that exchanged unique values with each other, replayed in
    # order instead, and their events
    ordered_rows: int = 0
    ordered_events: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """Human-readable table of the counts."""
        verb = "would restore" if self.dry_run else "restored"
        lines = [f"{verb} {self.restore_target} into {self.target} ({self.mode}): "
                 f"position {self.start_position} -> {self.reached_position}, "
                 f"{len([i for i in self.package_ids if i != TAIL_ID])} package(s), "
                 f"{self.transactions_replayed} transaction(s) replayed"
                 f"{f' ({self.replay})' if self.transactions_replayed else ''}, "
                 f"{self.seconds:.1f}s"]
        if self.journal_tail:
            lines.append(f"journal tail: {self.journal_tail}")
        if self.ordered_rows:
            lines.append(f"net changes: {self.ordered_rows} row(s) that exchanged unique "
                         f"values replayed in order ({self.ordered_events} event(s))")
        if self.net_rewrite and self.replay == "ordered":
            lines.append(f"net changes replayed in order: {self.net_rewrite}")
        elif self.net_rewrite:
            lines.append(f"net changes: tables rewritten merged with them ({self.net_rewrite})")
        if self.tables:
            lines.append(f"{'table':40} {'before':>9} {'after':>9} {'insert':>8} {'update':>8} "
                         f"{'delete':>8} {'skip':>6} {'remap':>7} {'refuse':>6}")
            for name, c in sorted(self.tables.items()):
                lines.append(f"{name:40} {c.before:9} {c.after:9} {c.inserted:8} {c.updated:8} "
                             f"{c.deleted:8} {c.skipped:6} {c.remapped:7} {c.refused:6}")
        if self.mode == "remap":
            for table, key in sorted(self.natural_keys.items()):
                lines.append(f"natural key {table}: {key}")
            for column, ct in sorted(self.generic_foreign_keys.items()):
                lines.append(f"generic foreign key {column} by {ct}")
            for table in self.content_matched:
                lines.append(f"matched by content (no natural key): {table}")
        for column, n in sorted(self.dangling_generic_keys.items()):
            lines.append(f"{column}: {n} generic foreign key value(s) point at nothing in the "
                         "restore and were kept as they are (--strict refuses them)")
        return "\n".join(lines)


def diagnosed(exc: psycopg.Error) -> str:
    """PostgreSQL's message with what it names: the table, the constraint, the DETAIL."""
    diag = exc.diag
    text = first_line(exc)
    if diag.table_name:
        text += f" (table {diag.schema_name}.{diag.table_name}" if diag.schema_name \
            else f" (table {diag.table_name}"
        text += f", constraint {diag.constraint_name})" if diag.constraint_name else ")"
    if diag.message_detail:
        text += f"; DETAIL: {diag.message_detail.strip()}"
    return text


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
