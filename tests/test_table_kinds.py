"""Every kind of table: partitioned tables, tables without a primary key (REPLICA IDENTITY
FULL, equal rows included), UNLOGGED tables, and replica identities.

The unit tests hold the fold and the in-memory state to multiset semantics; the
integration tests capture through pgoutput from a real PostgreSQL 18 and 15, compact
(a fold included), restore into an empty database and compare with the source's rows as
SQL recorded them, row for row and count for count.
"""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from journal.catalog import Column, TableSchema
from journal.cli import main
from journal.codec import SchemaRegistry
from journal.config import Config
from journal.errors import SourceError, ValidationError
from journal.events import TransactionMarker
from journal.fold import SortedRowSink, fold
from journal.packages import PackageBuilder, open_package
from journal.positions import Position
from journal.row_identity import row_identity
from producers.capture import run_capture
from restorer.fold import JournalState
from restorer.verify import verify
from tests.conftest import scratch_database
from tests.test_capture import capture_config
from tests.test_fold import StreamBuilder, write_segment

BAG = TableSchema("public", "bag", (Column("a", "integer", 23, False),
                                    Column("b", "text", 25, False)), ())


def _bag_catalog() -> dict[str, Any]:
    return {"types": [], "tables": {"public.bag": {
        "schema": "public", "name": "bag",
        "columns": [{"name": c.name, "pg_type": c.pg_type, "type_oid": c.type_oid,
                     "not_null": c.not_null, "default": None, "identity": "",
                     "generated": ""} for c in BAG.columns],
        "primary_key": [], "unique": [], "foreign_keys": [], "create_table": "",
        "constraints": [], "indexes": [], "sequences": [], "natural_key": None}}}


def _row(a: int | None, b: str | None) -> dict[str, Any]:
    return {"a": a, "b": b}


def _bag_full(workdir: Path, rows: list[dict[str, Any]], position: Position,
              commit_ts: int) -> Path:
    builder = PackageBuilder("full", workdir)
    sink = SortedRowSink(builder, BAG, workdir, spill_bytes=4096)
    for row in rows:
        sink.write(row)
    sink.close()
    tmp, m = builder.finish(system_identifier="42", database="edms", generation="gen-1",
                            to_position=position, first_commit_ts=commit_ts,
                            last_commit_ts=commit_ts, catalog=_bag_catalog())
    final = workdir / f"{m.package_id}.tar"
    tmp.rename(final)
    return final


def _fold_bag(tmp_path: Path, base_rows: list[dict[str, Any]],
              changes: list[tuple[Any, ...]]) -> tuple[Counter[Any], JournalState]:
    """Fold ``changes`` (one transaction) into a full package of ``base_rows``; the
    folded rows as a multiset, and the in-memory state of the same changes."""
    sb = StreamBuilder()
    full = open_package(_bag_full(tmp_path, base_rows, Position(sb.lsn, 9), sb.ts))
    records = sb.change(changes)
    segment = open_package(write_segment(tmp_path, records, full.manifest, SchemaRegistry()))
    out, _ = fold(full, [segment], tmp_path, spill_bytes=4096)
    folded = Counter(tuple(sorted(r.items())) for r in open_package(out).rows("public.bag"))
    state = JournalState({"public.bag": ()})
    state.load("public.bag", base_rows)
    for record in records:
        if not isinstance(record, TransactionMarker):
            state.apply(record)
    return folded, state


def _multiset(rows: Any) -> Counter[Any]:
    return Counter(tuple(sorted(r.items())) for r in rows)


def test_row_identity_tells_apart_what_equality_would_merge() -> None:
    cols = ("v",)
    assert row_identity(cols, {"v": 0.0}) != row_identity(cols, {"v": -0.0})
    assert row_identity(cols, {"v": Decimal("1.0")}) != row_identity(cols, {"v": Decimal("1.00")})
    assert row_identity(cols, {"v": 1}) != row_identity(cols, {"v": "1"})
    assert row_identity(cols, {"v": float("nan")}) == row_identity(cols, {"v": float("nan")})
    assert row_identity(cols, {"v": [1, None]}) == row_identity(cols, {"v": [1, None]})
    # a total order: rows with NULLs in arrays and NaNs sort without error
    sorted(row_identity(cols, {"v": v}) for v in ([None, 1], [1, None], float("nan"), None))


def test_fold_of_a_table_without_primary_key_keeps_equal_rows_as_many(tmp_path: Path) -> None:
    x, y, z = _row(1, "x"), _row(2, "y"), _row(3, "z")
    base = [y, x, _row(None, None), x]  # out of order: the snapshot sink sorts them
    changes = [
        ("c", BAG, None, x, ()),          # a third (1, x)
        ("u", BAG, x, z, ()),             # one of them becomes (3, z)
        ("d", BAG, x, None, ()),          # one more goes
        ("d", BAG, y, None, ()),
        ("c", BAG, None, y, ()),
        ("c", BAG, None, y, ()),          # (2, y) twice
        ("u", BAG, _row(None, None), _row(None, "n"), ()),
    ]
    folded, state = _fold_bag(tmp_path, base, changes)
    expected = _multiset([x, z, y, y, _row(None, "n")])
    assert folded == expected
    assert _multiset(state.rows("public.bag")) == expected


def test_fold_refuses_a_delete_of_a_row_the_table_does_not_hold(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="removes a row the table does not hold"):
        _fold_bag(tmp_path, [_row(1, "x")], [("d", BAG, _row(1, "x"), None, ()),
                                              ("d", BAG, _row(1, "x"), None, ())])


def test_fold_refuses_a_keyless_update_without_the_whole_old_row(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="REPLICA IDENTITY FULL"):
        _fold_bag(tmp_path, [_row(1, "x")], [("u", BAG, None, _row(1, "y"), ())])


def test_keyless_update_takes_unchanged_toast_columns_from_the_old_row(tmp_path: Path) -> None:
    old = _row(1, "long" * 1000)
    folded, state = _fold_bag(tmp_path, [old, old], [("u", BAG, old, _row(2, None), ("b",))])
    expected = _multiset([old, _row(2, "long" * 1000)])
    assert folded == expected
    assert _multiset(state.rows("public.bag")) == expected
