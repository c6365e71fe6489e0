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

from journal.errors import ConfigError

_INTEGER_TYPES = ("integer", "bigint", "smallint")
_PREFERRED_OIDS = {2950, 25, 1043, 1042}  # uuid, text, varchar, char
_UUID_OID = 2950
# columns whose name says "identifier" (in this order of preference), when typed as text,
# uuid or an integer: never a time, a float or free text
INFERRED_NAMES = ("uuid", "slug", "code", "username", "codename", "internal_name")
_IDENTIFIER_OIDS = {2950, 25, 1043, 1042, 21, 23, 20}


@dataclass(frozen=True)
class NaturalKey:
    table: str
    columns: tuple[str, ...]
    origin: str  # "config" | "catalog" | "primary key" | "inferred from data"


def qualify(name: str) -> str:
    """``auth_user`` -> ``public.auth_user``; qualified names are kept."""
    return name if "." in name else f"public.{name}"


def is_surrogate_key(table: Mapping[str, Any]) -> bool:
    """A single integer primary key filled by a sequence or an identity."""
    pk = table.get("primary_key") or []
    if len(pk) != 1:
        return False
    col = next((c for c in table["columns"] if c["name"] == pk[0]), None)
    if col is None or col["pg_type"] not in _INTEGER_TYPES:
        return False
    if col.get("identity") or "nextval(" in (col.get("default") or ""):
        return True
    return any(s.get("column") == pk[0] for s in table.get("sequences", []))


def _single_integer_key(table: Mapping[str, Any]) -> bool:
    pk = table.get("primary_key") or []
    types = {c["name"]: c["pg_type"] for c in table["columns"]}
    return len(pk) == 1 and types.get(pk[0]) in _INTEGER_TYPES


def detect_natural_key(table: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The best unique, all-NOT-NULL column set that is not the surrogate primary key."""
    columns = {c["name"]: c for c in table["columns"]}
    pk = tuple(table.get("primary_key") or ())
    candidates = []
    for unique in table.get("unique", []):
        cols = tuple(unique["columns"])
        if cols == pk or not all(columns.get(c, {}).get("not_null") for c in cols):
            continue
        preferred = sum(columns[c]["type_oid"] in _PREFERRED_OIDS for c in cols)
        candidates.append((-preferred, len(cols), cols))
    if candidates:
        return min(candidates)[2]
    return None


def resolve_natural_keys(catalog: Mapping[str, Any],
                         configured: Mapping[str, tuple[str, ...]] | None = None
                         ) -> dict[str, NaturalKey | None]:
    """The natural key of every table of ``catalog`` (None: the table has none)."""
    tables = catalog.get("tables", {})
    config = {qualify(k): tuple(v) for k, v in (configured or {}).items()}
    for name, cols in config.items():
        if name not in tables:
            continue  # configuration may name tables this source does not have
        known = {c["name"] for c in tables[name]["columns"]}
        missing = [c for c in cols if c not in known]
        if missing:
            raise ConfigError(f"[natural_keys] {name}: no column(s) {missing} in that table "
                              f"(it has {sorted(known)})")
    keys: dict[str, NaturalKey | None] = {}
    for name, table in tables.items():
        if name in config:
            keys[name] = NaturalKey(name, config[name], "config") if config[name] else None
        elif table.get("natural_key"):
            keys[name] = NaturalKey(name, tuple(table["natural_key"]), "catalog")
        elif "natural_key" not in table and (cols := detect_natural_key(table)):
            keys[name] = NaturalKey(name, cols, "catalog")
        elif table.get("primary_key") and not _single_integer_key(table):
            keys[name] = NaturalKey(name, tuple(table["primary_key"]), "primary key")
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


def _convention(name: str, table: Mapping[str, Any]) -> tuple[str, ...] | None:
    cols = _CONVENTIONS.get(name.split(".", 1)[-1])
    known = {c["name"] for c in table["columns"]}
    return cols if cols is not None and set(cols) <= known else None


def disabled(configured: Mapping[str, tuple[str, ...]] | None) -> set[str]:
    """Tables configured with an empty natural key: rows always inserted as new ones,
    never matched (by key or by content)."""
    return {qualify(k) for k, v in (configured or {}).items() if not tuple(v)}


def inference_candidates(table: Mapping[str, Any]) -> list[str]:
    """Columns that may serve as an inferred natural key, best first: uuid-typed columns,
    then identifier-named ones; never the surrogate primary key."""
    pk = set(table.get("primary_key") or ())
    columns = [c for c in table["columns"] if c["name"] not in pk and not c.get("generated")]
    by_type = [c["name"] for c in columns if c["type_oid"] == _UUID_OID]
    by_name = [c["name"] for n in INFERRED_NAMES for c in columns
               if c["name"] == n and c["type_oid"] in _IDENTIFIER_OIDS]
    return list(dict.fromkeys(by_type + by_name))


def infer_natural_key(table: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]
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


def config_line(table: str, catalog: Mapping[str, Any]) -> str | None:
    """A journal.toml entry that would give ``table`` a natural key, when one of its
    columns can be one (see ``inference_candidates``); None rather than a guess."""
    t = catalog.get("tables", {}).get(table)
    if t is None:
        return None
    candidates = inference_candidates(t)
    if not candidates:
        return None
    return f'[natural_keys]\n"{table}" = ["{candidates[0]}"]'
