"""Key remapping: source ids → target ids, and what to do with each incoming row.

Pure decisions over data. ``KeyMap`` remembers, per table, the source primary keys whose
row has a different primary key in the target (a natural-key match, or a fresh id the
restore assigned); every other key maps to itself. ``RowRemapper`` rewrites the foreign
keys of a row through it, including generic foreign keys (a content-type column plus an
object-id column, see ``restorer.generic_keys``), whatever the order the rows arrive in:
a generic reference to an object not loaded yet is kept as a pending fix-up and set
before commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog, TableEntry, oid_of
from journal.errors import RestoreRefused
from restorer.generic_keys import (
    GenericForeignKey,
    GenericKeys,
    object_key,
    unpaired_object_columns,
)
from restorer.graph import ForeignKey, TableGraph
from restorer.keystore import KeyStore

ON_CONFLICT = ("update", "skip", "fail")


class Decision(Enum):
    INSERT = "insert"  # with the source id, which is free in the target
    INSERT_FRESH = "insert with a fresh id"  # the source id is taken by another row
    UPDATE = "update"  # natural-key match, --on-conflict update
    SKIP = "skip"  # natural-key match, --on-conflict skip
    REFUSE = "refuse"  # natural-key match, --on-conflict fail


def decide(*, matched: bool, id_taken: bool, on_conflict: str) -> Decision:
    """What happens to one incoming row of a table.

    ``matched``: a target row has the same natural key. ``id_taken``: a target row (not
    a natural-key match) already uses the source primary key.
    """
    if matched:
        return {"update": Decision.UPDATE, "skip": Decision.SKIP,
                "fail": Decision.REFUSE}[on_conflict]
    return Decision.INSERT_FRESH if id_taken else Decision.INSERT


class KeyMap:
    """source primary key -> target primary key, per table; unknown keys map to themselves.

    Only differences are stored, in a ``KeyStore``: in memory by default, in a table of
    the target's transaction with ``in_target`` (what a restore uses, so the map may grow
    with the data while memory does not; the restore keeps that table as the recorded map,
    ``record.write_keymap``). For ``tracked`` tables every mapping is
    stored, identities too, so ``known`` tells the rows a restore put in the target from
    the target's own rows: the tables generic foreign keys point into (an object id not
    restored yet must not be taken for a target row that happens to have the same id),
    and the tables matched by content (a target row already claimed by one source row
    cannot match a second, equal one).
    """

    def __init__(self, store: KeyStore | None = None, tracked: Iterable[str] = ()) -> None:
        self.store = store or KeyStore()
        self.tracked: set[str] = set(tracked)

    @classmethod
    def in_target(cls, conn: psycopg.Connection[Any], catalog: Catalog) -> KeyMap:
        oids = {name: _pk_oids(spec) for name, spec in catalog.tables.items()}
        return cls(KeyStore(conn, WORK_TABLE,
                            lambda table, value: typed_key(value, oids.get(table, [])),
                            schema=WORK_SCHEMA))

    def set(self, table: str, source: tuple[Any, ...], target: tuple[Any, ...]) -> None:
        self.store.put(table, source,
                       None if source == target and table not in self.tracked else target)

    def known(self, table: str, source: tuple[Any, ...]) -> bool:
        """A tracked table's row that a restore wrote (or matched) in the target."""
        return self.store.get(table, source) is not None

    def target_of(self, table: str, source: tuple[Any, ...]) -> tuple[Any, ...]:
        return self.store.get(table, source, source)  # type: ignore[no-any-return]

    def prefetch(self, keys: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Load the mappings of ``(table, source key)`` pairs a batch will ask for."""
        self.store.prefetch(keys)

    def forget(self, table: str, source: tuple[Any, ...]) -> None:
        self.store.put(table, source, None)

    def remapped(self, table: str) -> int:
        return self.store.count(table)

    def items(self) -> Iterator[tuple[str, tuple[Any, ...], tuple[Any, ...]]]:
        yield from self.store.items()


# beside the recorded map it becomes: a rename, where a copy of millions of entries and
# a build of their index would cost a sixth of a large natural-key restore
WORK_SCHEMA, WORK_TABLE = "public", "journal_restore_keymap_work"


def _pk_oids(spec: TableEntry) -> list[int]:
    types = {c.name: c.type_oid for c in spec.columns}
    return [types[c] for c in spec.primary_key]


_UUID_OID = oid_of("uuid")


def typed_key(values: Sequence[Any], oids: Sequence[int]) -> tuple[Any, ...]:
    """A key read back from JSON: JSON keeps ints and strings; a uuid comes back as its
    text."""
    return tuple(uuid.UUID(v) if oid == _UUID_OID and isinstance(v, str) else v
                 for v, oid in zip(values, oids, strict=False))


class RowRemapper:
    """Rewrites the foreign keys of incoming rows into target ids."""

    def __init__(self, graph: TableGraph, keymap: KeyMap,
                 generic: GenericKeys | None = None) -> None:
        self.graph = graph
        self.keymap = keymap
        self.generic: dict[str, tuple[GenericForeignKey, ...]] = dict(generic or {})
        # per content-type table: source id -> (app_label, model), from the source's rows
        self._content_types: dict[str, dict[Any, tuple[str, str]]] = {}
        # per content-type table: target id -> (app_label, model), from the target's rows
        # (an incremental restore sees only the content types its segments change)
        self._target_content_types: dict[str, dict[Any, tuple[str, str]]] = {}
        self._ct_tables = {g.content_type_table for gs in self.generic.values() for g in gs}
        self._pk_of = {t: d.primary_key for t, d in graph.tables.items()}
        # (table, content type) -> object table, until content types change
        self._generic_targets: dict[tuple[str, Any], str | None] = {}
        # (table, deferred foreign keys) -> what remap does to each foreign key
        self._steps: dict[tuple[str, frozenset[str]], tuple[tuple[ForeignKey, bool], ...]] = {}
        # generic references to objects not (yet) in the target:
        # (table, source key of the row, object-id column) -> (object table, source key)
        # (table, source key of the row, object-id column) -> ((object table, source key),
        # the column's source value)
        self.pending: dict[tuple[str, tuple[Any, ...], str],
                           tuple[tuple[str, tuple[Any, ...]], Any]] = {}
        # per "table.column": generic values naming a table outside the restore
        self.outside: dict[str, int] = {}

    @property
    def content_type_tables(self) -> set[str]:
        """The content-type tables generic foreign keys name (their rows are observed)."""
        return self._ct_tables

    def schema_changed(self, graph: TableGraph, generic: GenericKeys) -> None:
        """A schema change of the stream (a table created): map through its tables now."""
        self.graph = graph
        self.generic = dict(generic)
        self._ct_tables = {g.content_type_table for gs in self.generic.values() for g in gs}
        self._pk_of = {t: d.primary_key for t, d in graph.tables.items()}
        self._generic_targets.clear()
        self._steps.clear()

    # -- content types ---------------------------------------------------------------------

    def observe(self, table: str, row: Mapping[str, Any]) -> None:
        """Remember a source content type row (needed to resolve generic foreign keys)."""
        if table in self._ct_tables:
            pk = self._pk_of[table]
            self._content_types.setdefault(table, {})[row[pk[0]]] = (
                row["app_label"], row["model"])
            self._generic_targets.clear()

    def learn_target_content_types(self, conn: psycopg.Connection[Any]) -> None:
        """Read the content types the target has (a source content type maps to one of them
        through the key map)."""
        for table in self._ct_tables:
            spec = self.graph.tables.get(table)
            if spec is None or conn.execute("SELECT to_regclass(%s)", (sql.Identifier(
                    spec.schema, spec.name).as_string(conn),)).fetchone()[0] is None:
                continue
            pk = self._pk_of[table][0]
            rows = conn.execute(sql.SQL("SELECT {}, app_label, model FROM {}").format(
                sql.Identifier(pk), sql.Identifier(spec.schema, spec.name))).fetchall()
            self._target_content_types[table] = {r[0]: (r[1], r[2]) for r in rows}
        self._generic_targets.clear()

    def content_type(self, ct_table: str, source_id: Any) -> tuple[str, str] | None:
        """(app_label, model) of a source content type id."""
        found = self._content_types.get(ct_table, {}).get(source_id)
        if found is None and ct_table in self._target_content_types:
            target = self.keymap.target_of(ct_table, (source_id,))[0]
            found = self._target_content_types[ct_table].get(target)
        return found

    def object_tables(self) -> set[str]:
        """The restore's tables that the known content types point into."""
        known = self.graph.tables.keys()
        found = set()
        for gs in self.generic.values():
            for g in gs:
                models = set(self._content_types.get(g.content_type_table, {}).values())
                models |= set(self._target_content_types.get(g.content_type_table, {})
                              .values())
                found |= {t for am in models
                          if len(self._pk_of.get(t := g.target_table(*am, known=known), ()))
                          == 1}
        return found

    # -- foreign keys ----------------------------------------------------------------------

    def remaps(self, fk: ForeignKey) -> bool:
        """Foreign keys to a parent's primary key carry surrogate ids; others carry
        natural values already (a reference to a unique username) and pass through."""
        return self._pk_of.get(fk.ref_table) == fk.ref_columns

    def prefetch(self, table: str, rows: Iterable[Mapping[str, Any]],
                 deferred: frozenset[str] = frozenset(),
                 keys: Iterable[tuple[str, tuple[Any, ...]]] = ()) -> None:
        """Load, with one query per store, what remapping ``rows`` will look up (plus
        ``keys``, other ``(table, source key)`` pairs the caller is about to map)."""
        rows = list(rows)
        wanted = list(keys)
        may_have = self.keymap.store.may_have
        for fk, nulled in self._remap_steps(table, deferred):  # what remap will ask
            if not nulled and may_have(ref := fk.ref_table):
                value_of = fk.value_of
                wanted.extend((ref, v) for row in rows if (v := value_of(row)) is not None)
        for g in self.generic.get(table, ()):
            wanted.extend(k for row in rows if (k := self.generic_key(g, row)) is not None)
        self.keymap.prefetch(wanted)

    def remap(self, table: str, row: dict[str, Any], deferred: frozenset[str] = frozenset()
              ) -> dict[str, Any]:
        """``row`` with its foreign keys in target ids; columns of the ``deferred`` FKs
        (names) are NULL, to be set in a second pass, and generic references to objects
        not in the target yet keep their source value and become ``pending``."""
        out = dict(row)
        may_have = self.keymap.store.may_have
        target_of = self.keymap.target_of
        for fk, nulled in self._remap_steps(table, deferred):
            if nulled:
                for c in fk.columns:
                    out[c] = None
            # a parent without entries maps every key to itself: nothing to look up
            elif may_have(fk.ref_table) and (value := fk.value_of(row)) is not None:
                mapped = target_of(fk.ref_table, value)
                if mapped is not value:
                    out.update(zip(fk.columns, mapped, strict=True))
        for g in self.generic.get(table, ()):
            out[g.object_id] = self._remap_generic(table, g, row)
        return out

    def _remap_steps(self, table: str, deferred: frozenset[str]
                     ) -> tuple[tuple[ForeignKey, bool], ...]:
        """The foreign keys of ``table`` that ``remap`` changes, in order, each with
        whether it is deferred (set NULL): worked out once per table and deferred set,
        not once per row."""
        key = (table, deferred)
        steps = self._steps.get(key)
        if steps is None:
            steps = self._steps[key] = tuple(
                (fk, fk.name in deferred) for fk in self.graph.foreign_keys.get(table, ())
                if fk.name in deferred or self.remaps(fk))
        return steps

    def generic_target(self, g: GenericForeignKey, row: Mapping[str, Any]) -> str | None:
        """The table the generic foreign key of ``row`` points to (None: unknown)."""
        ct = row.get(g.content_type)
        if ct is None:
            return None
        cache = (g.label, ct)
        if cache in self._generic_targets:
            return self._generic_targets[cache]
        app_model = self.content_type(g.content_type_table, ct)
        target = (None if app_model is None
                  else g.target_table(*app_model, known=self.graph.tables.keys()))
        if target is not None and len(self._pk_of.get(target, ())) != 1:
            target = None  # not a table of this restore, or no single-column key to name
        self._generic_targets[cache] = target
        return target

    def generic_key(self, g: GenericForeignKey, row: Mapping[str, Any]
                    ) -> tuple[str, tuple[Any, ...]] | None:
        """(object table, source key) a generic foreign key of ``row`` points at, or None
        when it points at nothing this restore knows."""
        object_id = row.get(g.object_id)
        target = self.generic_target(g, row) if object_id is not None else None
        if target is None:
            return None
        return target, (object_key(object_id, self.graph.tables[target]),)

    def object_value(self, g: GenericForeignKey, source_value: Any,
                     obj: tuple[str, tuple[Any, ...]]) -> Any:
        """The object id column's value for the object's target key."""
        mapped = self.keymap.target_of(*obj)[0]
        return str(mapped) if isinstance(source_value, str) else mapped

    def _remap_generic(self, table: str, g: GenericForeignKey, row: Mapping[str, Any]) -> Any:
        object_id = row.get(g.object_id)
        pk = self._pk_of.get(table, ())
        row_key = tuple(row.get(c) for c in pk)
        if pk:
            self.pending.pop((table, row_key, g.object_id), None)  # the latest value wins
        if object_id is None or row.get(g.content_type) is None:
            return object_id
        obj = self.generic_key(g, row)
        if obj is None:
            self.outside[g.label] = self.outside.get(g.label, 0) + 1
            return object_id
        if not self.keymap.known(*obj):
            # not restored yet (later in the load order, or later in the stream), or gone
            # from the source: decided before commit, when every row has arrived
            if pk:
                self.pending[(table, row_key, g.object_id)] = (obj, object_id)
            return object_id
        return self.object_value(g, object_id, obj)

    def forget(self, table: str, row: Mapping[str, Any]) -> None:
        """A deleted source row: its pending generic references go with it."""
        pk = self._pk_of.get(table, ())
        if pk:
            key = tuple(row.get(c) for c in pk)
            for g in self.generic.get(table, ()):
                self.pending.pop((table, key, g.object_id), None)


def refuse_unsafe(graph: TableGraph, keys: Mapping[str, Any], generic: GenericKeys,
                  catalog: Catalog, tables: set[str]) -> None:
    """Fail before writing when a populated target cannot be mapped safely."""
    problems = unpaired_object_columns(catalog, generic, tables)
    for table, gs in generic.items():
        for g in gs:
            if table in tables and g.content_type_table not in graph.tables:
                problems.append(f"[generic_foreign_keys] {table}: content type table "
                                f"{g.content_type_table} is not in the packages")
    if problems:
        raise RestoreRefused("no safe mapping into the populated target:\n"
                             + "\n".join(problems))
