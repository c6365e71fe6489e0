"""Generic foreign keys of a staged table, resolved as ``RowRemapper.remap`` resolves them.

A (content type, object id) pair points into the table its source content type names.
For each such table the object ids whose row this restore has written or matched (the
table is tracked, so the key map knows every one) take that row's target id, in one
``UPDATE`` of the stage joined with the key map; the others keep their source value and
become the remapper's ``pending`` references, decided once every row has arrived, as row
by row; pairs naming a table outside the restore are counted in ``outside``.

The key-map key of an object id is spelled in SQL where the spelling is certain: object
ids in the canonical text of an integer or a uuid, or of the object key's own type. Any
other value (``" 7"``, a braced uuid, a key type the SQL does not spell) goes through
``object_key`` in Python, a chunk of rows at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

from journal.catalog import oid_of
from restorer.generic_keys import GenericForeignKey, object_key
from restorer.keystore import key_text
from restorer.net_apply import aliased

if TYPE_CHECKING:
    from restorer.staged_remap import _Stage

_INTEGERS = frozenset(oid_of(n) for n in ("int2", "int4", "int8"))
_TEXTS = frozenset(oid_of(n) for n in ("text", "varchar"))
_UUID = oid_of("uuid")
_CANONICAL = {  # object ids held as text whose key SQL spells as Python does
    "integer": r"^-?[0-9]{1,18}$",
    "uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
CHUNK = 5_000


def stage_generic_keys(stage: _Stage) -> None:
    """Resolve every generic foreign key of the stage's table; run before the content-type
    column itself is remapped (the content types named are the source's)."""
    for g in stage.writer.remapper.generic.get(stage.name, ()):
        _Pair(stage, g).resolve()


class _Pair:
    def __init__(self, stage: _Stage, g: GenericForeignKey) -> None:
        self.stage, self.g = stage, g
        self.conn = stage.conn
        self.remapper = stage.writer.remapper
        self.ct = sql.Identifier(g.content_type)
        self.obj = sql.Identifier(g.object_id)
        oids = {c.name: c.type_oid for c in stage.spec.columns}
        self.obj_oid = oids[g.object_id]

    def resolve(self) -> None:
        by_table: dict[str | None, list[Any]] = {}
        for (ct,) in self.conn.execute(sql.SQL(
                "SELECT DISTINCT {ct} FROM {stage} WHERE {ct} IS NOT NULL AND {obj} IS NOT NULL"
        ).format(ct=self.ct, obj=self.obj, stage=self.stage.stage)).fetchall():
            target = self.remapper.generic_target(self.g, {self.g.content_type: ct})
            by_table.setdefault(target, []).append(ct)
        outside = by_table.pop(None, [])
        if outside:
            n = self._count(sql.SQL("true"), outside)
            self.remapper.outside[self.g.label] = self.remapper.outside.get(self.g.label, 0) + n
        for table, cts in by_table.items():
            self._resolve_into(table, cts)

    def _where(self, cts: Sequence[Any], extra: sql.Composable) -> sql.Composable:
        return sql.SQL("s.{ct} = ANY(%s) AND s.{obj} IS NOT NULL AND {extra}").format(
            ct=self.ct, obj=self.obj, extra=extra)

    def _count(self, extra: sql.Composable, cts: Sequence[Any]) -> int:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {} s WHERE {}").format(
            self.stage.stage, self._where(cts, extra)), (list(cts),)).fetchone()
        return int(row[0]) if row else 0

    def _key_sql(self, table: str) -> tuple[sql.Composable, sql.Composable] | None:
        """(the condition under which SQL spells the object id's key, that key as the key
        map's text), or None: Python spells every one."""
        spec = self.remapper.graph.tables[table]
        key_oid = next(c.type_oid for c in spec.columns if c.name == spec.primary_key[0])
        obj, oid = sql.SQL("s.{}").format(self.obj), self.obj_oid

        if oid in _INTEGERS and key_oid in _INTEGERS:
            return sql.SQL("true"), key_text([obj], integer=True)
        if oid == key_oid or (oid in _TEXTS and key_oid in _TEXTS):
            return sql.SQL("true"), key_text([obj])
        if oid in _INTEGERS and key_oid in _TEXTS:
            return sql.SQL("true"), key_text([sql.SQL("{}::text").format(obj)])
        if oid in _TEXTS and key_oid in _INTEGERS:
            kind, cast = "integer", "bigint"
        elif oid in _TEXTS and key_oid == _UUID:
            kind, cast = "uuid", "uuid"
        else:
            return None
        return (sql.SQL("{} ~ {}").format(obj, sql.Literal(_CANONICAL[kind])),
                key_text([sql.SQL("{}::{}").format(obj, sql.SQL(cast))],
                         integer=kind == "integer"))

    def _resolve_into(self, table: str, cts: list[Any]) -> None:
        spelled = self._key_sql(table)
        if spelled is not None:
            where, key = spelled
            self._pending_in_sql(table, cts, where, key)
            # known objects: their target id, in the column's own type
            value = sql.SQL("(m.value ->> 0)")
            if self.obj_oid not in _TEXTS:
                value = sql.SQL("{}::{}").format(value, sql.SQL(self.stage.types[
                    self.g.object_id]))
            self.conn.execute(sql.SQL(
                "UPDATE {stage} s SET {obj} = {value} FROM {keymap} m WHERE {where}"
                " AND m.table_name = %s AND m.key = {key}"
                " AND (m.value ->> 0) IS DISTINCT FROM s.{obj}::text").format(
                    stage=self.stage.stage, obj=self.obj, value=value,
                    keymap=self.stage.store.table, key=key,
                    where=self._where(cts, where)), (list(cts), table))
            rest = sql.SQL("NOT ({})").format(where)
        else:
            rest = sql.SQL("true")
        self._in_python(table, cts, rest)

    def _pending_in_sql(self, table: str, cts: list[Any], where: sql.Composable,
                        key: sql.Composable) -> None:
        """Object ids not (yet) in the target: left as they are, and pending."""
        stage = self.stage
        rows = self.conn.execute(sql.SQL(
            "SELECT {srcs}, s.{obj} FROM {stage} s WHERE {where} AND NOT EXISTS (SELECT 1"
            " FROM {keymap} m WHERE m.table_name = %s AND m.key = {key})").format(
                srcs=aliased("s", stage.srcs), obj=self.obj, stage=stage.stage,
                where=self._where(cts, where), keymap=stage.store.table, key=key),
            (list(cts), table)).fetchall()
        self._pend(table, rows)

    def _pend(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        spec = self.remapper.graph.tables[table]
        width = len(self.stage.pk)
        pending = self.remapper.pending
        for row in rows:
            obj = row[width]
            pending[(self.stage.name, tuple(row[:width]), self.g.object_id)] = (
                (table, (object_key(obj, spec),)), obj)

    def _in_python(self, table: str, cts: list[Any], rest: sql.Composable) -> None:
        """The object ids SQL does not spell, a chunk at a time in the order of the rows:
        resolved by ``object_key`` and the key map, as ``RowRemapper.remap`` does."""
        stage, spec = self.stage, self.remapper.graph.tables[table]
        keymap = self.remapper.keymap
        n = sql.Identifier("_journal_n")
        last = 0
        while True:
            rows = self.conn.execute(sql.SQL(
                "SELECT s.{n}, s.{obj}, {srcs} FROM {stage} s WHERE {where} AND s.{n} > %s"
                " ORDER BY s.{n} LIMIT {chunk}").format(
                    n=n, obj=self.obj, srcs=aliased("s", stage.srcs), stage=stage.stage,
                    where=self._where(cts, rest), chunk=sql.Literal(CHUNK)),
                (list(cts), last)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            objs = [(table, (object_key(r[1], spec),)) for r in rows]
            keymap.prefetch(objs)
            known, unknown = [], []
            for r, obj in zip(rows, objs, strict=True):
                if keymap.known(*obj):
                    known.append((self.remapper.object_value(self.g, r[1], obj), r[0]))
                else:
                    unknown.append((*r[2:], r[1]))
            self._pend(table, unknown)
            if known:
                with self.conn.cursor() as cur:
                    cur.executemany(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                        stage.stage, self.obj, n), known)
