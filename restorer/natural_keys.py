"""Natural keys: how a row is recognised in a database whose surrogate ids differ.

Resolution per table: configuration (``[natural_keys]`` in journal.toml; an empty list
says "none") → the catalog's detected key (a unique constraint whose columns are all NOT
NULL and not the surrogate primary key, uuid and text columns preferred) → a primary key
other than one integer column (a text session key, a composite key) → a known convention
(Django's ``django_migrations`` by ``(app, name)``) → a key inferred from
the data (a uuid column, or a column named like ``uuid``, ``slug``, ``code``, ``username``,
``codename`` or ``internal_name``, whose values in the source are unique and never NULL)
→ none, and then the table's rows are matched by content. A natural key may contain a
foreign key (a permission's content type); its value is then compared through the
referenced row's own natural key, which is why tables are matched parents first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from journal.catalog import Catalog, TableEntry, natural_key_of, oid_of
from journal.errors import ConfigError

_INTEGER_TYPES = ("integer", "bigint", "smallint")
_UUID_OID = oid_of("uuid")
_PREFERRED_OIDS = {oid_of(n) for n in ("uuid", "text", "varchar", "bpchar")}
# columns whose name says "identifier" (in this order of preference), when typed as text,
# uuid or an integer: never a time, a float or free text
INFERRED_NAMES = ("uuid", "slug", "code", "username", "codename", "internal_name")
_IDENTIFIER_OIDS = _PREFERRED_OIDS | {oid_of(n) for n in ("int2", "int4", "int8")}


@dataclass(frozen=True)
class NaturalKey:
    table: str
    columns: tuple[str, ...]
    origin: str  # "config" | "catalog" | "primary key" | "inferred from data"


def qualify(name: str) -> str:
    """``auth_user`` -> ``public.auth_user``; qualified names are kept."""
    return name if "." in name else f"public.{name}"


def is_surrogate_key(table: TableEntry) -> bool:
    """A single integer primary key filled by a sequence or an identity."""
    pk = table.primary_key
    if len(pk) != 1:
        return False
    col = table.column(pk[0])
    if col is None or col.pg_type not in _INTEGER_TYPES:
        return False
    return col.uses_sequence or any(s.column == pk[0] for s in table.sequences)


def _single_integer_key(table: TableEntry) -> bool:
    col = table.column(table.primary_key[0]) if len(table.primary_key) == 1 else None
    return col is not None and col.pg_type in _INTEGER_TYPES


def detect_natural_key(table: TableEntry) -> tuple[str, ...] | None:
    """The natural key capture would have detected (``journal.catalog.natural_key_of``),
    for a CATALOG written before capture recorded it."""
    return natural_key_of({c.name: (c.not_null, c.type_oid) for c in table.columns},
                          table.primary_key, [(u.name, u.columns) for u in table.unique])


def resolve_natural_keys(catalog: Catalog,
                         configured: Mapping[str, tuple[str, ...]] | None = None
                         ) -> dict[str, NaturalKey | None]:
    """The natural key of every table of ``catalog`` (None: the table has none)."""
    tables = catalog.tables
    config = {qualify(k): tuple(v) for k, v in (configured or {}).items()}
    for name, cols in config.items():
        if name not in tables:
            continue  # configuration may name tables this source does not have
        known = set(tables[name].column_names)
        missing = [c for c in cols if c not in known]
        if missing:
            raise ConfigError(f"[natural_keys] {name}: no column(s) {missing} in that table "
                              f"(it has {sorted(known)})")
    keys: dict[str, NaturalKey | None] = {}
    for name, table in tables.items():
        if name in config:
            keys[name] = NaturalKey(name, config[name], "config") if config[name] else None
        elif table.natural_key:
            keys[name] = NaturalKey(name, table.natural_key, "catalog")
        elif not table.natural_key_detected and (cols := detect_natural_key(table)):
            keys[name] = NaturalKey(name, cols, "catalog")
        elif table.primary_key and not _single_integer_key(table):
            keys[name] = NaturalKey(name, table.primary_key, "primary key")
        elif (cols := _convention(name, table)) is not None:
            keys[name] = NaturalKey(name, cols, "convention")
        else:
            keys[name] = None
    return keys


# Keys that well-known applications treat as unique without declaring it.
_CONVENTIONS = {
    # Django's migration recorder: one row per applied (app, migration name)
    "django_migrations": ("app", "name"),
}


def _convention(name: str, table: TableEntry) -> tuple[str, ...] | None:
    cols = _CONVENTIONS.get(name.split(".", 1)[-1])
    return cols if cols is not None and set(cols) <= set(table.column_names) else None


def disabled(configured: Mapping[str, tuple[str, ...]] | None) -> set[str]:
    """Tables configured with an empty natural key: rows always inserted as new ones,
    never matched (by key or by content)."""
    return {qualify(k) for k, v in (configured or {}).items() if not tuple(v)}


def inference_candidates(table: TableEntry) -> list[str]:
    """Columns that may serve as an inferred natural key, best first: uuid-typed columns,
    then identifier-named ones; never the surrogate primary key."""
    columns = [c for c in table.columns if c.name not in table.primary_key and not c.generated]
    by_type = [c.name for c in columns if c.type_oid == _UUID_OID]
    by_name = [c.name for n in INFERRED_NAMES for c in columns
               if c.name == n and c.type_oid in _IDENTIFIER_OIDS]
    return list(dict.fromkeys(by_type + by_name))


def infer_natural_key(table: TableEntry, rows: Iterable[Mapping[str, Any]]
                      ) -> str | None:
    """The first candidate column whose values in ``rows`` are all present and distinct
    (None when no candidate qualifies, or there are no rows to judge by)."""
    candidates = inference_candidates(table)
    if not candidates:
        return None
    seen: dict[str, set[Any]] = {c: set() for c in candidates}
    alive = set(candidates)
    n = 0
    for row in rows:
        n += 1
        for c in list(alive):
            value = row.get(c)
            if value is None or value in seen[c]:
                alive.discard(c)
                seen[c] = set()
            else:
                seen[c].add(value)
        if not alive:
            return None
    return next((c for c in candidates if c in alive), None) if n else None


def config_line(table: str, catalog: Catalog) -> str | None:
    """A journal.toml entry that would give ``table`` a natural key, when one of its
    columns can be one (see ``inference_candidates``); None rather than a guess."""
    t = catalog.tables.get(table)
    if t is None:
        return None
    candidates = inference_candidates(t)
    if not candidates:
        return None
    return f'[natural_keys]\n"{table}" = ["{candidates[0]}"]'
