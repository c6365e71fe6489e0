"""A snapshot's table written into a populated target in SQL, not row by row.

The rows are staged with COPY into a temporary table of the restore's transaction, and
every decision ``restorer.target.TargetWriter.write_rows`` makes per row is one statement
over all of them: foreign keys rewritten by joining the key map, natural keys matched by
joining the target table, primary keys already in use found the same way, fresh ids drawn
from the column's sequence in SQL, rows inserted, matched rows updated, and the key map's
new entries written from the stage. The database does the joins; Python streams rows.

It serves the tables where that is the same decision: a primary key, keys of the types
the key map's text form spells the same in SQL and in Python (integers, text, uuids), no
column of a foreign key deferred to break a cycle in another key, not a content-type
table. Generic foreign keys are resolved by ``restorer.staged_generic``; tables matched
by content are matched as a multiset join. Every other table keeps the per-row path
(``why_not_staged`` says why).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import count
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from journal.catalog import TableEntry, oid_of
from journal.errors import RestoreError, RestoreRefused
from journal.packages import PackageReader
from restorer.copying import CopyWriter, member_text, write_items
from restorer.keystore import integer_key, key_text
from restorer.natural_keys import is_surrogate_key
from restorer.net_apply import aliased, equal, staging_types
from restorer.refusals import no_fresh_id, refused_match, rows_holding, violation_message
from restorer.staged_generic import stage_generic_keys

if TYPE_CHECKING:
    from restorer.target import TargetWriter

# Key columns whose key-map text (JSON of the Python value, as jsonb prints it) is what
# jsonb_build_array(column)::text prints in SQL: both sides find the same entries.
_SQL_KEY_TYPES = frozenset(oid_of(n) for n in ("int2", "int4", "int8", "text", "varchar",
                                                  "uuid"))
_N, _MATCHED, _TAKEN = "_journal_n", "_journal_matched", "_journal_taken"


def _src(i: int) -> str:
    return f"_journal_src_{i}"


def _to(i: int) -> str:
    return f"_journal_to_{i}"


def why_not_staged(writer: TargetWriter, table: str, deferred: frozenset[str]) -> str | None:
    """None when ``table`` can be written by ``write_staged``; else why not."""
    spec = writer.catalog.tables[table]
    remapper = writer.remapper
    if not writer.remap:
        return "not a remapping restore"
    if not spec.primary_key:
        return "no primary key"
    if table in remapper.content_type_tables:
        return "a content-type table (its rows name the tables of generic foreign keys)"
    fks = remapper.graph.foreign_keys.get(table, ())
    deferred_columns = {c for fk in fks if fk.name in deferred for c in fk.columns}
    other_columns = {c for fk in fks if fk.name not in deferred for c in fk.columns}
    nk = writer.keys.get(table)
    if deferred_columns & (other_columns | set(spec.primary_key)
                           | set(nk.columns if nk else ())):
        return "a column of a deferred foreign key is in another key"
    remapped = [c for fk in fks if fk.name not in deferred and remapper.remaps(fk)
                for c in fk.columns]
    if len(remapped) != len(set(remapped)):
        # row by row each key maps from the source's value; the stage's UPDATEs run in turn
        return "foreign keys that share a column"
    keyed = set(spec.primary_key) | {c for fk in fks if remapper.remaps(fk)
                                     for c in fk.columns}
    oids = {c.name: c.type_oid for c in spec.columns}
    if any(oids.get(c) not in _SQL_KEY_TYPES for c in keyed):
        return "a key column of another type than integer, text or uuid"
    return None


def write_staged(writer: TargetWriter, table: str, rows: Iterable[Mapping[str, Any]],
                 deferred: frozenset[str] = frozenset(),
                 package: PackageReader | None = None) -> int:
    """Write every source row of ``table`` (the whole table, once) as ``write_rows`` would
    write them in batches; returns how many rows there were. The ``deferred`` foreign
    keys (names) are written NULL and set by the writer's ``apply_fixups``. ``package``:
    the snapshot ``rows`` come from, whose member is then staged as COPY text written
    from its bytes (``copy_member``), not row by row."""
    return _Stage(writer, table, deferred).run(rows, package)


_STAGES = count()  # a stage outlives its load when its deferred keys are set later


class _Stage:
    def __init__(self, writer: TargetWriter, table: str, deferred: frozenset[str]) -> None:
        self.writer, self.name = writer, table
        self.conn = writer.conn
        self.spec: TableEntry = writer.catalog.tables[table]
        self.ident = sql.Identifier(self.spec.schema, self.spec.name)
        number = next(_STAGES)
        self.stage = sql.Identifier(f"_journal_stage_{number}")
        self.pk = self.spec.primary_key
        self.srcs = [_src(i) for i in range(len(self.pk))]
        self.tos = [_to(i) for i in range(len(self.pk))]
        self.columns = writer.columns_of(table)
        self.store = writer.keymap.store
        self.counts = writer.counts_of(table)
        fks = writer.remapper.graph.foreign_keys.get(table, ())
        self.deferred = [fk for fk in fks if fk.name in deferred]
        self.remapped = [fk for fk in fks if fk.name not in deferred
                         and writer.remapper.remaps(fk)]
        self.content = table in writer.content_matched
        # A DEFERRABLE key (all are deferred by the restore) is written with its source
        # value and corrected after the load only where its parent moved: one UPDATE of
        # those few rows instead of all of them (an UPDATE of rows inserted by the same
        # transaction fires every foreign-key trigger again). Other deferred keys are
        # written NULL, their source values kept aside until they are set. Content
        # matching compares rows as the per-row path does: with the deferred keys NULL.
        self.direct = [fk for fk in self.deferred if fk.deferrable and not self.content]
        self.nulled = [fk for fk in self.deferred if fk not in self.direct]
        self.aside = {c: f"_journal_deferred_{k}" for k, c in enumerate(
            c for fk in self.nulled for c in fk.columns)}

    def run(self, rows: Iterable[Mapping[str, Any]], package: PackageReader | None = None
            ) -> int:
        n = self._copy(rows, package)
        keep = False
        try:
            if n:
                matched = self._match_content() if self.content else self._match()
                self._refuse_matches(matched)
                self._insert()
                self._update_matched(matched)
                self._record_keys()
                if self.deferred:
                    self.writer.fixups.later(self._set_deferred)
                    keep = True
        finally:
            if not keep:
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.stage))
        return n

    # -- staging ---------------------------------------------------------------------------

    def _copy(self, rows: Iterable[Mapping[str, Any]], package: PackageReader | None) -> int:
        """The source rows COPYed into the stage, each numbered in order (an identity)
        with its source key beside it, the deferred keys that must wait NULL (their source
        values aside); then the foreign keys whose parent moved rewritten through the key
        map. From ``package``, a row's source columns are written as COPY text straight
        from its bytes, a key column twice, a deferred one into its place aside."""
        types = self.types = staging_types(self.conn, self.ident)
        extra = [(_N, "bigint GENERATED ALWAYS AS IDENTITY"),
                 *((s, types[c]) for s, c in zip(self.srcs, self.pk, strict=True)),
                 *((t, types[c]) for t, c in zip(self.tos, self.pk, strict=True)),
                 (_MATCHED, "boolean NOT NULL DEFAULT false"),
                 (_TAKEN, "boolean NOT NULL DEFAULT false"),
                 *((a, types[c]) for c, a in self.aside.items())]
        self.conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(
            self.stage, sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
                for c, t in [*((c, types[c]) for c in self.columns), *extra])))
        # the stage's columns, and the source column each is written from
        copied = [*(self.aside.get(c, c) for c in self.columns), *self.srcs]
        sources = [*self.columns, *self.pk]
        out = CopyWriter(self.conn, self.stage, copied, self.spec.qualified)
        pairs = [(a, c) for a, c in zip(copied, sources, strict=True) if a != c]
        items = member_text(out, package, self.name, sources) if package is not None else None

        def shape(row: Mapping[str, Any]) -> Mapping[str, Any]:
            return {**row, **{a: row[c] for a, c in pairs}}

        try:
            write_items(out, rows if items is None else items, shape)
        except BaseException as exc:
            out.close(exc)
            raise
        out.close()
        n = out.rows
        # before any UPDATE of the stage: an index built over rows updated in the same
        # transaction is unusable until it ends (PostgreSQL's indcheckxmin), and the
        # writes, which read the rows in their order, would sort them instead (200,000
        # document versions: 75 MB spilled to disk and read again)
        self.conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(
            self.stage, sql.Identifier(_N)))
        self.store.flush()
        # statistics before the first join: guessing a few dozen rows, the planner probes
        # the key map once per staged row, at random (500,000 admin log entries against a
        # map of millions: 40 s, against 4 s hashed). The keys the map rewrites next keep
        # their counts and spread, which is what the plans depend on
        self.conn.execute(sql.SQL("ANALYZE {} ({})").format(self.stage, sql.SQL(", ").join(
            sql.Identifier(c) for c in self._joined())))
        stage_generic_keys(self)  # by the source's content types: before they are remapped
        for fk in self.remapped:
            if self.store.may_have(fk.ref_table):  # else every key maps to itself
                self._remap(fk)
        return n

    def _joined(self) -> list[str]:
        """The stage's columns the decisions' joins and filters read: the planner's
        statistics of these alone (a wide text column's cost more than the rest)."""
        if self.content:
            return [*self.columns, _N, *self.srcs, *self.tos]  # rows compared whole
        nk = self.writer.keys.get(self.name)
        fks = self.writer.remapper.graph.foreign_keys.get(self.name, ())
        wanted = [*self.pk, *(nk.columns if nk else ()), *(c for fk in fks for c in fk.columns),
                  *(c for g in self.writer.remapper.generic.get(self.name, ())
                    for c in (g.content_type, g.object_id)),
                  _N, *self.srcs, *self.tos, _MATCHED, _TAKEN, *self.aside.values()]
        return list(dict.fromkeys(wanted))

    def _remap(self, fk: Any) -> None:
        """One foreign key of the staged rows through the key map: only the rows whose
        parent has another key in the target are written (a tracked parent's entries
        include the ones that map to themselves)."""
        built = self._key_of("s", fk.columns)
        self.conn.execute(sql.SQL(
            "UPDATE {stage} s SET {sets} FROM {keymap} m WHERE m.table_name = %s"
            " AND m.key = {built} AND m.moved").format(
                stage=self.stage, keymap=self.store.table, built=built,
                sets=sql.SQL(", ").join(
                    sql.SQL("{c} = (m.value ->> {i})::{t}").format(
                        c=sql.Identifier(c), i=sql.Literal(i), t=sql.SQL(self.types[c]))
                    for i, c in enumerate(fk.columns))), (fk.ref_table,))

    # -- decisions -------------------------------------------------------------------------

    def _match(self) -> int:
        """Rows whose natural key the target holds: matched, their target key noted."""
        nk = self.writer.keys.get(self.name)
        if not nk:
            return 0
        on = equal("s", nk.columns, "t", nk.columns)
        dup = self.conn.execute(sql.SQL(
            # no LIMIT: with one the planner walks the target's key index in a nested loop
            "SELECT {nk} FROM {stage} s JOIN {table} t ON {on} GROUP BY s.{n}, {nk}"
            " HAVING count(*) > 1").format(
                nk=aliased("s", nk.columns), stage=self.stage, table=self.ident, on=on,
                n=sql.Identifier(_N))).fetchone()
        if dup is not None:
            raise RestoreError(f"{self.name}: natural key {nk.columns} is not unique in the "
                               f"target ({tuple(dup)} matches several rows); configure another "
                               "one under [natural_keys]")
        return self.conn.execute(sql.SQL(
            "UPDATE {stage} s SET {matched} = true, {sets} FROM {table} t WHERE {on}").format(
                stage=self.stage, matched=sql.Identifier(_MATCHED), table=self.ident, on=on,
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = t.{}").format(sql.Identifier(_to(i)), sql.Identifier(c))
                    for i, c in enumerate(self.pk)))).rowcount

    def _first(self, where: sql.Composable, cols: Iterable[str]) -> tuple[Any, ...]:
        row = self.conn.execute(sql.SQL("SELECT {} FROM {} s WHERE {} ORDER BY s.{} LIMIT 1")
                                .format(aliased("s", cols), self.stage, where,
                                        sql.Identifier(_N))).fetchone()
        return tuple(row) if row else ()

    def _match_content(self) -> int:
        """Rows equal to a target row in every column but a surrogate key (foreign keys
        remapped), as a multiset: the k-th source row of a content takes the k-th target
        row of it (by primary key) that no restore has claimed, as row by row."""
        spec = self.spec
        cols = [c.name for c in spec.columns if not c.generated
                and not (is_surrogate_key(spec) and c.name in self.pk)]

        def text(alias: str) -> sql.Composable:
            return sql.SQL("ROW({})::text").format(aliased(alias, cols))

        tpk = aliased("t", self.pk)
        keys = [sql.Identifier(f"k{i}") for i in range(len(self.pk))]
        return self.conn.execute(sql.SQL(
            "WITH src AS (SELECT s.{n} AS n, {s_text} AS body, row_number() OVER"
            " (PARTITION BY {s_text} ORDER BY s.{n}) AS k FROM {stage} s),"
            " tgt AS (SELECT {t_keys}, {t_text} AS body, row_number() OVER"
            " (PARTITION BY {t_text} ORDER BY {tpk}) AS k FROM {table} t"
            " WHERE NOT EXISTS (SELECT 1 FROM {keymap} m WHERE m.table_name = %s"
            " AND m.value = jsonb_build_array({tpk})) AND {t_text} IN (SELECT body FROM src))"
            " UPDATE {stage} s SET {matched} = true, {sets} FROM src JOIN tgt"
            " ON src.body = tgt.body AND src.k = tgt.k WHERE s.{n} = src.n").format(
                n=sql.Identifier(_N), s_text=text("s"), stage=self.stage, t_text=text("t"),
                t_keys=sql.SQL(", ").join(sql.SQL("t.{} AS {}").format(sql.Identifier(c), k)
                                         for c, k in zip(self.pk, keys, strict=True)),
                tpk=tpk, table=self.ident, keymap=self.store.table,
                matched=sql.Identifier(_MATCHED),
                sets=sql.SQL(", ").join(sql.SQL("{} = tgt.{}").format(sql.Identifier(t), k)
                                        for t, k in zip(self.tos, keys, strict=True))),
            (self.name,)).rowcount

    def _refuse_matches(self, matched: int) -> None:
        """--on-conflict fail: a match is refused (counted, and taken as a skip, in a
        rehearsal, so references to it still map)."""
        if not matched or self.writer.on_conflict != "fail":
            return
        self.counts.refused += matched
        if self.writer.dry_run:
            return
        nk = self.writer.keys.get(self.name)
        names = list(nk.columns) if nk and not self.content else []
        first = self._first(sql.SQL("s.{}").format(sql.Identifier(_MATCHED)),
                            [*names, *self.srcs])
        what = (f"natural key {dict(zip(names, first, strict=False))}" if names
                else "the same content")
        raise RestoreRefused(refused_match(self.name, what, self.pk, first[len(names):]))

    def _insert(self) -> None:
        """The rows nothing matched: with their own ids where the target does not use
        them, then the others under fresh ids from the sequence (moved past every id in
        use first, the ones just inserted too)."""
        pk = self.pk
        taken = self.conn.execute(sql.SQL(
            "UPDATE {stage} s SET {taken} = true FROM {table} t WHERE NOT s.{matched}"
            " AND {on}").format(stage=self.stage, taken=sql.Identifier(_TAKEN),
                                table=self.ident, matched=sql.Identifier(_MATCHED),
                                on=equal("s", pk, "t", pk))).rowcount
        if taken and not is_surrogate_key(self.spec):
            first = self._first(sql.SQL("s.{}").format(sql.Identifier(_TAKEN)), self.srcs)
            raise RestoreRefused(no_fresh_id(self.name, pk, first, self.writer.catalog))
        plain = self._write(sql.SQL("NOT s.{} AND NOT s.{}").format(
            sql.Identifier(_MATCHED), sql.Identifier(_TAKEN)))
        if taken:
            self._fresh_ids()
            self._write(sql.SQL("s.{}").format(sql.Identifier(_TAKEN)))
        self.counts.inserted += plain + taken
        self.counts.remapped += taken

    def _target_key_parts(self, alias: str) -> list[sql.Composable]:
        """Where each staged row is in the target: its match, or its (maybe fresh) key."""
        a, m = sql.Identifier(alias), sql.Identifier(_MATCHED)
        return [sql.SQL("CASE WHEN {a}.{m} THEN {a}.{t} ELSE {a}.{c} END").format(
                    a=a, m=m, t=sql.Identifier(t), c=sql.Identifier(c))
                for c, t in zip(self.pk, self.tos, strict=True)]

    def _key_of(self, alias: str, columns: Iterable[str]) -> sql.Composable:
        """The key map's text of the key the stage's ``columns`` hold."""
        columns = list(columns)
        return key_text([sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                         for c in columns], integer_key([self.types[c] for c in columns]))

    def _target_key(self, alias: str) -> sql.Composable:
        return sql.SQL(", ").join(self._target_key_parts(alias))

    def _fresh_ids(self) -> None:
        column = self.pk[0]
        qualified = self.ident.as_string(self.conn)
        seq = self.conn.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                (qualified, column)).fetchone()
        if seq is None or seq[0] is None:
            raise RestoreError(f"{self.name}.{column} has no sequence in the target: "
                               "cannot give fresh ids")
        col = sql.Identifier(column)
        self.conn.execute(sql.SQL(
            "SELECT setval(%(s)s, greatest(m, (SELECT last_value FROM pg_sequences WHERE "
            "format('%%I.%%I', schemaname, sequencename)::regclass = %(s)s::regclass)))"
            " FROM (SELECT max({col}) AS m FROM {table}) x WHERE m IS NOT NULL").format(
                col=col, table=self.ident), {"s": seq[0]})
        # in the rows' order, as the per-row path hands them out
        self.conn.execute(sql.SQL(
            "UPDATE {stage} s SET {col} = f.id FROM (SELECT o.n, nextval(%s) AS id FROM"
            " (SELECT {n} AS n FROM {stage} WHERE {taken} ORDER BY {n}) o) f"
            " WHERE s.{n} = f.n").format(stage=self.stage, col=col, n=sql.Identifier(_N),
                                         taken=sql.Identifier(_TAKEN)), (seq[0],))

    def _write(self, where: sql.Composable) -> int:
        always = any(c.identity == "a" for c in self.spec.columns)
        names = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        with self._explained():
            return self.conn.execute(sql.SQL(
                "INSERT INTO {} ({}) {}SELECT {} FROM {} s WHERE {} ORDER BY s.{}").format(
                    self.ident, names, sql.SQL("OVERRIDING SYSTEM VALUE " if always else ""),
                    aliased("s", self.columns), self.stage, where,
                    sql.Identifier(_N))).rowcount

    def _update_matched(self, matched: int) -> None:
        """Matched rows: updated from the source (--on-conflict update, natural keys),
        else skipped; a target row two source rows match takes the later one's values, as
        row by row."""
        if not matched or self.writer.on_conflict == "fail":
            return  # refused (a rehearsal goes on as if skipped, uncounted)
        remapped = self.conn.execute(sql.SQL(
            "SELECT count(*) FROM {} s WHERE s.{} AND ({}) IS DISTINCT FROM ({})").format(
                self.stage, sql.Identifier(_MATCHED), aliased("s", self.srcs),
                aliased("s", self.tos))).fetchone()
        self.counts.remapped += int(remapped[0]) if remapped else 0
        if self.writer.on_conflict == "skip" or self.content:
            self.counts.skipped += matched
            return
        always = {c.name for c in self.spec.columns if c.identity == "a"}
        settable = [c for c in self.columns if c not in self.pk and c not in always]
        if settable:
            with self._explained():
                self.conn.execute(sql.SQL(
                    "UPDATE {table} t SET {sets} FROM (SELECT DISTINCT ON ({tos}) * FROM {stage}"
                    " WHERE {matched} ORDER BY {tos}, {n} DESC) s WHERE {on}").format(
                        table=self.ident, stage=self.stage, n=sql.Identifier(_N),
                        matched=sql.Identifier(_MATCHED),
                        tos=sql.SQL(", ").join(sql.Identifier(c) for c in self.tos),
                        sets=sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(
                            c=sql.Identifier(c)) for c in settable),
                        on=equal("t", self.pk, "s", self.tos)))
        self.counts.updated += matched

    def _record_keys(self) -> None:
        """The key map's entries of this table: every source key whose target key differs
        (all of them for a tracked table), written where the per-row path keeps them."""
        tracked = self.name in self.writer.keymap.tracked
        differs = sql.SQL("({}) IS DISTINCT FROM ({})").format(
            aliased("s", self.srcs), self._target_key("s"))
        where = sql.SQL("true") if tracked else differs
        integer = integer_key([self.types[c] for c in self.pk])
        key = key_text([sql.SQL("s.{}").format(sql.Identifier(c)) for c in self.srcs],
                       integer)  # the source key, aside
        value = sql.SQL("jsonb_build_array({})").format(self._target_key("s"))
        # moved: the value's text differs from the key's; for an integer key, whose text is
        # its value's, the values compared (cheaper than printing the jsonb again)
        moved = differs if integer else sql.SQL("{} <> {}::text").format(key, value)
        self.store.flush()
        # a table with no entry yet takes a plain insert: an upsert costs half as much again
        upsert = sql.SQL(" ON CONFLICT (table_name, key) DO UPDATE SET value = excluded.value,"
                         " moved = excluded.moved" if self.store.may_have(self.name) else "")
        added = self.conn.execute(sql.SQL(
            "INSERT INTO {keymap} (table_name, key, value, moved) SELECT %s, k, v, m FROM"
            " (SELECT {key} COLLATE \"C\" AS k, {value} AS v, {moved} AS m FROM {stage} s"
            # in the index's order: inserted at random, a large map's index costs 2.5x
            " WHERE {where}) e ORDER BY k{upsert}"
        ).format(keymap=self.store.table, key=key, value=value, moved=moved,
                 stage=self.stage, where=where, upsert=upsert),
            (self.name,)).rowcount
        if added:
            self.store.written_in_database(self.name, added)

    def _set_deferred(self) -> None:
        """The deferred foreign keys, once every table is loaded: each source value
        through the key map of the table it references (a key to another unique column
        carries its value as it is), on the target row of every staged row written: a
        skipped or refused match keeps its own."""
        self.store.flush()
        written = (sql.SQL("") if self.writer.on_conflict == "update" and not self.content
                   else sql.SQL(" AND NOT s.{}").format(sql.Identifier(_MATCHED)))
        on = sql.SQL(" AND ").join(
            sql.SQL("t.{} = ({})").format(sql.Identifier(c), e)
            for c, e in zip(self.pk, self._target_key_parts("s"), strict=True))
        for fk in self.direct:
            if not (self.writer.remapper.remaps(fk) and self.store.may_have(fk.ref_table)):
                continue  # the source value is the target's
            built = self._key_of("s", fk.columns)
            with self._explained():
                self.conn.execute(sql.SQL(
                    "UPDATE {table} t SET {sets} FROM {stage} s JOIN {keymap} m"
                    " ON m.table_name = %s AND m.key = {built} AND m.moved"
                    " WHERE {on}{written}").format(
                        table=self.ident, stage=self.stage, keymap=self.store.table,
                        built=built, on=on, written=written, sets=sql.SQL(", ").join(
                            sql.SQL("{c} = (m.value ->> {i})::{t}").format(
                                c=sql.Identifier(c), i=sql.Literal(i),
                                t=sql.SQL(self.types[c]))
                            for i, c in enumerate(fk.columns))), (fk.ref_table,))
        for j, fk in enumerate(self.nulled):
            m = sql.Identifier(f"m{j}")
            through = self.writer.remapper.remaps(fk) and self.store.may_have(fk.ref_table)
            sets = []
            for i, c in enumerate(fk.columns):
                kept = sql.SQL("s.{}").format(sql.Identifier(self.aside[c]))
                sets.append(sql.SQL("{} = {}").format(sql.Identifier(c), sql.SQL(
                    "coalesce(({m}.value ->> {i})::{t}, {kept})").format(
                        m=m, i=sql.Literal(i), t=sql.SQL(self.types[c]), kept=kept)
                    if through else kept))
            join = (sql.SQL(" LEFT JOIN {keymap} {m} ON {m}.table_name = %s AND {m}.key ="
                            " {key}").format(keymap=self.store.table, m=m, key=key_text(
                                [sql.SQL("s.{}").format(sql.Identifier(self.aside[c]))
                                 for c in fk.columns],
                                integer_key([self.types[c] for c in fk.columns])))
                    if through else sql.SQL(""))
            with self._explained():
                self.conn.execute(sql.SQL(
                    "UPDATE {table} t SET {sets} FROM {stage} s{join} WHERE {on} AND {present}"
                    "{written}").format(written=written, table=self.ident,
                                        sets=sql.SQL(", ").join(sets), stage=self.stage,
                         join=join, on=on,
                         present=sql.SQL(" AND ").join(
                             sql.SQL("s.{} IS NOT NULL").format(sql.Identifier(self.aside[c]))
                             for c in fk.columns)),
                    [fk.ref_table] if through else [])
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.stage))

    @contextmanager
    def _explained(self) -> Iterator[None]:
        """A constraint violation, told as the per-row path tells it, with the source row
        the DETAIL's values lead to in the stage. The statement runs in a savepoint so the
        stage can still be asked."""
        try:
            with self.conn.transaction():
                yield
        except psycopg.errors.IntegrityError as exc:
            source, mapped = self._offending(exc)
            raise RestoreRefused(violation_message(self.name, exc, self.pk, source, mapped,
                                                   self.writer.catalog)) from exc

    def _offending(self, exc: psycopg.Error) -> tuple[list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
        columns, values, rows = rows_holding(self.conn, exc, self.stage, self.srcs, 1)
        if not rows or not set(columns) <= set(self.columns):
            return [], []
        return ([dict(zip(self.pk, rows[0], strict=True))],
                [dict(zip(columns, values, strict=True))])
