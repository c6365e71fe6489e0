"""Key remapping: source ids → target ids, and what to do with each incoming row.

Pure decisions over data. ``KeyMap`` remembers, per table, the source primary keys whose
row has a different primary key in the target (a natural-key match, or a fresh id the
restore assigned); every other key maps to itself. ``RowRemapper`` rewrites the foreign
keys of a row through it, including generic foreign keys (a content-type column plus an
object-id column) declared in journal.toml.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg

from journal.errors import ConfigError, RestoreError
from restorer.graph import ForeignKey, TableGraph
from restorer.keystore import KeyStore
from restorer.natural_keys import qualify

ON_CONFLICT = ("update", "skip", "fail")
DEFAULT_CONTENT_TYPE_TABLE = "public.django_content_type"
DEFAULT_TABLE_FORMAT = "{app_label}_{model}"
_OBJECT_ID_NAMES = re.compile(r"^(object_id|object_pk|.+_object_id)$")


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

    Only differences are stored, in a ``KeyStore``: in memory by default, in a temporary
    table of the target's transaction with ``in_target`` (what a restore uses, so the map
    may grow with the data while memory does not).
    """

    def __init__(self, store: KeyStore | None = None) -> None:
        self.store = store or KeyStore()

    @classmethod
    def in_target(cls, conn: psycopg.Connection[Any], catalog: Mapping[str, Any]) -> KeyMap:
        oids = {name: _pk_oids(spec) for name, spec in catalog.get("tables", {}).items()}
        return cls(KeyStore(conn, WORK_TABLE,
                            lambda table, value: typed_key(value, oids.get(table, []))))

    def set(self, table: str, source: tuple[Any, ...], target: tuple[Any, ...]) -> None:
        self.store.put(table, source, None if source == target else target)

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


WORK_TABLE = "journal_restore_keymap_work"
OBJECTS_TABLE = "journal_restore_objects_work"


def _pk_oids(spec: Mapping[str, Any]) -> list[int]:
    types = {c["name"]: c["type_oid"] for c in spec.get("columns", [])}
    return [types.get(c, 0) for c in spec.get("primary_key") or ()]


def typed_key(values: Sequence[Any], oids: Sequence[int]) -> tuple[Any, ...]:
    """A key read back from JSON: JSON keeps ints and strings; a uuid comes back as its
    text."""
    return tuple(uuid.UUID(v) if oid == 2950 and isinstance(v, str) else v
                 for v, oid in zip(values, oids, strict=False))


@dataclass(frozen=True)
class GenericForeignKey:
    """A content-type column plus an object-id column, resolved to ``<app_label>_<model>``."""

    table: str
    content_type: str
    object_id: str
    content_type_table: str = DEFAULT_CONTENT_TYPE_TABLE
    table_format: str = DEFAULT_TABLE_FORMAT
    schema: str = "public"
    models: Mapping[str, str] = field(default_factory=dict)  # "app_label.model" -> table

    def target_table(self, app_label: str, model: str,
                     known: Collection[str] = ()) -> str:
        """The table of a content type: configured ``models`` entry, else ``table_format``
        (Django's default ``<app_label>_<model>``), else the one known table whose name
        without underscores is the model's (a custom ``db_table`` such as document_type)."""
        if (name := self.models.get(f"{app_label}.{model}")) is not None:
            return qualify(name)
        table = f"{self.schema}.{self.table_format.format(app_label=app_label, model=model)}"
        if table in known or not known:
            return table
        guesses = [t for t in known if t.split(".", 1)[0] == self.schema
                   and t.split(".", 1)[1].replace("_", "") in (model, app_label + model)]
        return guesses[0] if len(guesses) == 1 else table


def generic_foreign_keys(configured: Mapping[str, Mapping[str, str]]
                         ) -> dict[str, GenericForeignKey]:
    """Parse ``[generic_foreign_keys]``: ``"table" = {content_type = "...", object_id = "..."}``
    with optional ``content_type_table``, ``table_format``, ``schema`` and ``models``
    (``{"app_label.model" = "table"}`` for tables not named the default way)."""
    out = {}
    for table, spec in configured.items():
        if "content_type" not in spec or "object_id" not in spec:
            raise ConfigError(f"[generic_foreign_keys] {table}: needs content_type and object_id")
        out[qualify(table)] = GenericForeignKey(
            qualify(table), spec["content_type"], spec["object_id"],
            qualify(spec.get("content_type_table", DEFAULT_CONTENT_TYPE_TABLE)),
            spec.get("table_format", DEFAULT_TABLE_FORMAT), spec.get("schema", "public"),
            dict(spec.get("models", {})))
    return out


def undeclared_generic_keys(graph: TableGraph, declared: Mapping[str, GenericForeignKey],
                            content_type_table: str = DEFAULT_CONTENT_TYPE_TABLE
                            ) -> list[tuple[str, str]]:
    """Tables that look like they hold a generic foreign key nobody declared.

    A foreign key to the content-type table plus an ``object_id``-like column that no
    foreign key covers: its values are ids of other tables, which a remapping restore
    would silently leave pointing at the wrong rows. Returns (table, suggested line).
    """
    found = []
    for name, table in graph.tables.items():
        if name in declared:
            continue
        fk_columns = {c for fk in graph.foreign_keys[name] for c in fk.columns}
        ct_fks = [fk for fk in graph.foreign_keys[name] if fk.ref_table == content_type_table]
        object_cols = [c["name"] for c in table["columns"]
                       if _OBJECT_ID_NAMES.match(c["name"]) and c["name"] not in fk_columns]
        if ct_fks and object_cols:
            line = (f'[generic_foreign_keys]\n"{name}" = {{ content_type = '
                    f'"{ct_fks[0].columns[0]}", object_id = "{object_cols[0]}" }}')
            found.append((name, line))
    return found


class RowRemapper:
    """Rewrites the foreign keys of incoming rows into target ids."""

    def __init__(self, graph: TableGraph, keymap: KeyMap,
                 generic: Mapping[str, GenericForeignKey] | None = None) -> None:
        self.graph = graph
        self.keymap = keymap
        self.generic = dict(generic or {})
        # content type source id -> (app_label, model), fed with the source's rows
        self._content_types: dict[str, dict[Any, tuple[str, str]]] = {}
        self._ct_tables = {g.content_type_table for g in self.generic.values()}
        self._pk_of = {t: tuple(d.get("primary_key") or ()) for t, d in graph.tables.items()}
        self.unresolved_generic = 0
        # source keys of the tables generic foreign keys point into, when every row of
        # them passed through here (a full load): tells a dangling reference apart
        self._seen: KeyStore | None = None
        self._object_tables: dict[str, bool] = {}
        # (generic FK table, content type) -> object table, until content types change
        self._generic_targets: dict[tuple[str, Any], str | None] = {}

    def track_objects(self, conn: psycopg.Connection[Any] | None = None) -> None:
        """Start remembering the source keys of generic-FK target tables (call before a
        full load, once the content types are known or about to be loaded); with
        ``conn``, in a temporary table of the target's transaction."""
        self._seen = KeyStore(conn, OBJECTS_TABLE)

    def observe(self, table: str, row: Mapping[str, Any]) -> None:
        """Remember a source content type row (needed to resolve generic foreign keys),
        and the keys of rows generic foreign keys may point at."""
        if table in self._ct_tables:
            pk = self._pk_of[table]
            self._content_types.setdefault(table, {})[row[pk[0]]] = (
                row["app_label"], row["model"])
            self._object_tables.clear()
            self._generic_targets.clear()
        elif self._seen is not None and self._is_object_table(table):
            self._seen.put(table, (row[self._pk_of[table][0]],), True)

    def forget(self, table: str, row: Mapping[str, Any]) -> None:
        if self._seen is not None and table in self._pk_of and self._pk_of[table]:
            self._seen.put(table, (row.get(self._pk_of[table][0]),), None)

    def _is_object_table(self, table: str) -> bool:
        if table not in self._object_tables:
            self._object_tables[table] = self._points_into(table)
        return self._object_tables[table]

    def _points_into(self, table: str) -> bool:
        if len(self._pk_of.get(table, ())) != 1 or not self.generic:
            return False
        known = self.graph.tables.keys()
        return any(g.target_table(*am, known=known) == table
                   for g in self.generic.values()
                   for am in self._content_types.get(g.content_type_table, {}).values())

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
        for fk in self.graph.foreign_keys.get(table, ()):
            if fk.name not in deferred and self.remaps(fk) and may_have(fk.ref_table):
                wanted.extend((fk.ref_table, v) for row in rows
                              if (v := fk.value_of(row)) is not None)
        if (g := self.generic.get(table)) is not None:
            objects = [k for row in rows if (k := self._generic_key(g, row)) is not None]
            if self._seen is not None:
                self._seen.prefetch(objects)
            wanted.extend(objects)
        self.keymap.prefetch(wanted)

    def remap(self, table: str, row: dict[str, Any], deferred: frozenset[str] = frozenset()
              ) -> dict[str, Any]:
        """``row`` with its foreign keys in target ids; columns of the ``deferred`` FKs
        (names) are NULL, to be set in a second pass."""
        out = dict(row)
        for fk in self.graph.foreign_keys.get(table, ()):
            if fk.name in deferred:
                for c in fk.columns:
                    out[c] = None
                continue
            if not self.remaps(fk):
                continue
            value = fk.value_of(row)
            if value is not None:
                out.update(zip(fk.columns, self.keymap.target_of(fk.ref_table, value),
                               strict=True))
        if (g := self.generic.get(table)) is not None:
            out[g.object_id] = self.remap_generic(g, row)
        return out

    def generic_target(self, g: GenericForeignKey, row: Mapping[str, Any]) -> str | None:
        """The table the generic foreign key of ``row`` points to (None: unknown)."""
        ct = row.get(g.content_type)
        if ct is None:
            return None
        if (g.table, ct) in self._generic_targets:
            return self._generic_targets[g.table, ct]
        app_model = self._content_types.get(g.content_type_table, {}).get(ct)
        target = (None if app_model is None
                  else g.target_table(*app_model, known=self.graph.tables.keys()))
        self._generic_targets[g.table, ct] = target
        return target

    def _generic_key(self, g: GenericForeignKey, row: Mapping[str, Any]
                     ) -> tuple[str, tuple[Any, ...]] | None:
        """(object table, source key) a generic foreign key of ``row`` points at, or None
        when its table is not part of this restore."""
        object_id = row.get(g.object_id)
        target = self.generic_target(g, row)
        pk = self._pk_of.get(target or "", ())
        if object_id is None or target is None or len(pk) != 1:
            return None
        return target, (_like_key(object_id, self.graph.tables[target]["columns"], pk[0]),)

    def remap_generic(self, g: GenericForeignKey, row: Mapping[str, Any]) -> Any:
        object_id = row.get(g.object_id)
        found = self._generic_key(g, row)
        if found is None:
            # the object's table is not part of this restore: nothing to map it through
            self.unresolved_generic += object_id is not None
            return object_id
        target, source_key = found
        if self._seen is not None and self._seen.get(target, source_key) is None:
            # the object was deleted in the source: nothing to map it to, kept as it is
            self.unresolved_generic += 1
            return object_id
        mapped = self.keymap.target_of(target, source_key)[0]
        return str(mapped) if isinstance(object_id, str) else mapped


def _like_key(value: Any, columns: list[dict[str, Any]], pk: str) -> Any:
    """An object id stored as text, converted to the referenced primary key's type."""
    col = next(c for c in columns if c["name"] == pk)
    if isinstance(value, str) and col["pg_type"] in ("integer", "bigint", "smallint"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def refuse_unsafe(graph: TableGraph, keys: Mapping[str, Any],
                  generic: Mapping[str, GenericForeignKey], catalog: Mapping[str, Any],
                  tables: set[str]) -> None:
    """Fail before writing when a populated target cannot be mapped safely."""
    from restorer.natural_keys import config_line, is_surrogate_key

    problems = []
    for table, line in undeclared_generic_keys(graph, generic):
        if table in tables:
            problems.append(f"{table} looks like it has a generic foreign key; declare it:\n"
                            f"{line}")
    for table in sorted(tables):
        spec = graph.tables[table]
        if keys.get(table) is None and not is_surrogate_key(spec):
            problems.append(f"{table} has no natural key and no generated primary key, so its "
                            "rows cannot be matched or given fresh ids; add:\n"
                            f"{config_line(table, catalog)}")
    for table, g in generic.items():
        if table in tables and g.content_type_table not in graph.tables:
            problems.append(f"[generic_foreign_keys] {table}: content type table "
                            f"{g.content_type_table} is not in the packages")
    if problems:
        raise RestoreError("no safe mapping into the populated target:\n" + "\n".join(problems))
