"""``journal verify``: compare a database with the journal's state at a position.

Ids may differ between the two (a restore into a populated database assigns its own), so
rows are compared through natural keys: every foreign key (and every declared generic
foreign key) is replaced by the natural identity of the row it points at, surrogate
primary keys are left out, and each table is compared as a multiset of such rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from journal.catalog import Catalog
from journal.config import redact
from journal.targets import RestoreTarget
from journal.values import read_rows
from restorer import schema
from restorer.comparable import comparable
from restorer.generic_keys import (
    GenericForeignKey,
    GenericKeys,
    object_key,
    resolve_generic_foreign_keys,
)
from restorer.graph import TableGraph
from restorer.journal_state import fold
from restorer.natural_keys import (
    NaturalKey,
    disabled,
    infer_natural_key,
    inference_candidates,
    is_surrogate_key,
    resolve_natural_keys,
)
from restorer.plan import find_xid, make_plan
from restorer.tail import scan_after_packages, segments

Rows = Mapping[str, Mapping[tuple[Any, ...], Mapping[str, Any]]]
SAMPLE = 3  # differing rows shown per table


@dataclass
class TableDiff:
    expected: int
    actual: int
    missing: int  # in the journal's state, not in the database
    extra: int  # in the database, not in the journal's state
    examples: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    target: str
    position: str | None
    tables: dict[str, TableDiff]
    allow_extra: bool = False

    @property
    def ok(self) -> bool:
        return all(d.missing == 0 and (self.allow_extra or d.extra == 0)
                   for d in self.tables.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        lines = [f"verify {self.target} against the journal at {self.position}: "
                 f"{'OK' if self.ok else 'DIFFERENT'}"]
        for name, d in sorted(self.tables.items()):
            status = "OK" if d.missing == 0 and (self.allow_extra or d.extra == 0) else "FAILED"
            lines.append(f"{status:6} {name}: {d.expected} expected, {d.actual} found, "
                         f"{d.missing} missing, {d.extra} extra")
            lines.extend(f"         {e}" for e in d.examples)
        return "\n".join(lines)


class Canonical:
    """Rows of one database state rewritten so that ids no longer matter."""

    def __init__(self, catalog: Catalog, rows: Rows,
                 keys: Mapping[str, NaturalKey | None],
                 generic: GenericKeys) -> None:
        self.catalog = catalog
        self.rows = rows
        self.keys = keys
        self.generic = generic
        self.graph = TableGraph(catalog)
        self._identity: dict[tuple[str, tuple[Any, ...]], Any] = {}
        self._column_kinds: dict[str, dict[str, int | None]] = {}

    def identity(self, table: str, key: tuple[Any, ...], depth: int = 0) -> Any:
        """What names the row ``key`` of ``table`` independently of ids."""
        cache_key = (table, key)
        if cache_key in self._identity:
            return self._identity[cache_key]
        row = self.rows.get(table, {}).get(key)
        if row is None:
            # a reference to a row that is gone: its id names nothing in either database
            # (and differs between them after a remapping restore)
            return ("dangling", table)
        if depth > 8:  # a long chain of tables without natural keys: stop descending
            return ("deep", table)
        nk = self.keys.get(table)
        if nk is not None:
            ident = (table, self._values(table, row, nk.columns, depth))
        else:
            cols = self._compared_columns(table)
            ident = (table, self._values(table, row, cols, depth))
        self._identity[cache_key] = ident
        return ident

    def _values(self, table: str, row: Mapping[str, Any], columns: Any, depth: int
                ) -> tuple[Any, ...]:
        by_column: dict[str, Any] = {}
        for fk in self.graph.foreign_keys.get(table, ()):
            ref = self.catalog.tables.get(fk.ref_table)
            if ref is None or ref.primary_key != fk.ref_columns:
                continue
            value = fk.value_of(row)
            ident = None if value is None else self.identity(fk.ref_table, value, depth + 1)
            for c in fk.columns:
                by_column[c] = ident
        for g in self.generic.get(table, ()):
            by_column[g.object_id] = self._generic(g, row, depth)
        kinds = self._kinds(table)
        return tuple((c, by_column[c] if c in by_column else _stored(row.get(c), kinds[c]))
                     for c in columns)

    def _kinds(self, table: str) -> dict[str, int | None]:
        """Per column, its type OID, or None for a generated column: PostgreSQL computes
        it from the others (a restore writes none; the stream may not carry it)."""
        kinds = self._column_kinds.get(table)
        if kinds is None:
            kinds = self._column_kinds[table] = {
                c.name: None if c.generated else c.type_oid
                for c in self.catalog.tables[table].columns}
        return kinds

    def _generic(self, g: GenericForeignKey, row: Mapping[str, Any], depth: int) -> Any:
        object_id, ct = row.get(g.object_id), row.get(g.content_type)
        ct_row = self.rows.get(g.content_type_table, {}).get((ct,))
        if object_id is None or ct_row is None:
            return object_id
        target = g.target_table(ct_row["app_label"], ct_row["model"], self.catalog.tables)
        spec = self.catalog.tables.get(target)
        if spec is None or len(spec.primary_key) != 1:
            return object_id
        return self.identity(target, (object_key(object_id, spec),), depth + 1)

    def table(self, table: str) -> Counter[Any]:
        cols = self._compared_columns(table)
        return Counter(self._values(table, row, cols, 0)
                       for row in self.rows.get(table, {}).values())

    def _compared_columns(self, table: str) -> list[str]:
        """Every column but a surrogate primary key, whose ids differ between databases."""
        spec = self.catalog.tables[table]
        surrogate = is_surrogate_key(spec)
        return [c for c in spec.column_names if not (surrogate and c in spec.primary_key)]


def compare(catalog: Catalog, expected: Rows, actual: Rows,
            keys: Mapping[str, NaturalKey | None], generic: GenericKeys,
            tables: list[str] | None = None) -> dict[str, TableDiff]:
    """Per table: how the ``actual`` rows differ from the ``expected`` ones, ids aside."""
    want, have = Canonical(catalog, expected, keys, generic), Canonical(catalog, actual, keys,
                                                                        generic)
    out = {}
    for t in tables or sorted(catalog.tables):
        a, b = want.table(t), have.table(t)
        missing, extra = a - b, b - a
        examples = [f"missing: {_short(r)}" for r in list(missing)[:SAMPLE]]
        examples += [f"extra: {_short(r)}" for r in list(extra)[:SAMPLE]]
        out[t] = TableDiff(sum(a.values()), sum(b.values()), sum(missing.values()),
                           sum(extra.values()), examples)
    return out


def _stored(value: Any, type_oid: int | None) -> Any:
    return "(generated)" if type_oid is None else comparable(value, type_oid)


def _short(row: Any) -> str:
    text = repr(dict(row))
    return text if len(text) < 200 else text[:197] + "..."


def read_database(url: str, catalog: Catalog, tables: list[str]) -> dict[str, Any]:
    """The rows of ``tables`` in a database, in the journal's value representation."""
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        present = schema.existing_tables(conn, tables)
        for t in tables:
            if t not in present:
                out[t] = {}
                continue
            ts = catalog.tables[t].table_schema()
            if ts.primary_key:
                out[t] = {ts.key_of(r): r for r in read_rows(conn, ts)}
            else:  # no primary key: every row counts, equal ones too (a multiset)
                out[t] = {(i,): r for i, r in enumerate(read_rows(conn, ts))}
    return out


def verify(target_url: str, packages_url: str = "", at: datetime | RestoreTarget | None = None,
           *, store: Any = None, natural_keys: Mapping[str, tuple[str, ...]] | None = None,
           generic: Mapping[str, Any] | None = None, allow_extra: bool = False,
           tables: list[str] | None = None, journal_url: str = "") -> VerifyReport:
    """Compare the database at ``target_url`` with the journal's state at ``at`` (with
    ``journal_url``, the journal's records after the newest package count too)."""
    if store is None:
        from journal.packages.store import open_store

        store = open_store(packages_url)
    target = at if isinstance(at, RestoreTarget) else (
        RestoreTarget.at_time(at) if at is not None else RestoreTarget())
    with ExitStack() as stack:
        journal, tail, _, manifests = scan_after_packages(journal_url, store, target, None,
                                                          stack)
        manifests += [tail] if tail else []
        xid_lsn = find_xid(store, manifests, int(target.value)) if target.kind == "xid" else None  # type: ignore[arg-type]
        plan = make_plan(manifests, target, xid_lsn=xid_lsn)
        catalog = Catalog.parse(plan.full.catalog)
        wanted = tables or sorted(catalog.tables)
        full = stack.enter_context(store.open(plan.full.package_id))
        state = fold(catalog, full.rows, segments(store, plan, stack, journal), plan.cutoff,
                     plan.start, wanted, follow_schema=not tables)
    if not tables:  # the tables as the stream's schema changes left them
        catalog, wanted = state.catalog, sorted(state.catalog.tables)
    actual = read_database(target_url, catalog, wanted)
    keys = resolve_natural_keys(catalog, natural_keys)
    off = disabled(natural_keys)
    for t in wanted:  # the keys a remapping restore infers, from the same source rows
        if keys.get(t) is None and t not in off and inference_candidates(catalog.tables[t]):
            column = infer_natural_key(catalog.tables[t], state.rows(t))
            if column:
                keys[t] = NaturalKey(t, (column,), "inferred from data")
    diffs = compare(catalog, state.tables, actual, keys,
                    resolve_generic_foreign_keys(catalog, generic), wanted)
    return VerifyReport(redact(target_url), str(state.reached), diffs, allow_extra)
