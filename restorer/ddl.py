"""DDL from a package, checked before it runs.

A package's checksums prove its bytes match its manifest, not who wrote it, so the
statements it carries are treated as input: each must be ONE statement (sent as a
prepared statement, which PostgreSQL refuses to hold several of) of the shape its place
in the catalog implies, on the table it belongs to. ``CREATE TABLE x …; DROP …`` or a
"constraint" that is really ``COPY … TO PROGRAM`` is refused before anything runs.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from journal.errors import ValidationError

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"({_IDENT})\.({_IDENT})"

_PRIMARY_KEY = re.compile(
    rf"ALTER TABLE (?:ONLY )?{_QUALIFIED} ADD CONSTRAINT {_IDENT} PRIMARY KEY\b")


def is_primary_key(statement: str) -> bool:
    """Whether a catalog constraint statement adds a primary key."""
    return _PRIMARY_KEY.match(statement) is not None


SHAPES = {
    # an enum, composite or range type, or a domain
    "type": rf"(?:CREATE TYPE {_QUALIFIED} AS (?:ENUM |RANGE )?\(|CREATE DOMAIN {_QUALIFIED} AS )",
    "table": rf"CREATE (?:UNLOGGED )?TABLE {_QUALIFIED} \(",
    # a partition of a partitioned table (checked on the partition's own name)
    "partition": rf"CREATE TABLE {_QUALIFIED} PARTITION OF {_QUALIFIED} (?:FOR VALUES |DEFAULT)",
    # without ONLY on a partitioned table: keys and foreign keys must reach its partitions
    "constraint": rf"ALTER TABLE (?:ONLY )?{_QUALIFIED} ADD CONSTRAINT {_IDENT} "
                  r"(?:PRIMARY KEY|UNIQUE|CHECK|EXCLUDE)\b",
    "index": rf"CREATE (?:UNIQUE )?INDEX {_IDENT} ON (?:ONLY )?{_QUALIFIED} USING ",
    "foreign key": rf"ALTER TABLE (?:ONLY )?{_QUALIFIED} ADD CONSTRAINT {_IDENT} FOREIGN KEY ",
    "replica identity": rf"ALTER TABLE ONLY {_QUALIFIED} REPLICA IDENTITY "
                        rf"(?:FULL|NOTHING|DEFAULT|USING INDEX {_IDENT})$",
    # a serial column's sequence: created, owned by the column, set as its default; or an
    # identity column (ALTER TABLE … ADD GENERATED … AS IDENTITY)
    "create sequence": rf"CREATE SEQUENCE {_QUALIFIED} ",
    "own sequence": rf"ALTER SEQUENCE {_IDENT}\.{_IDENT} OWNED BY {_QUALIFIED}\.{_IDENT}$",
    "column default": rf"ALTER TABLE (?:ONLY )?{_QUALIFIED} ALTER COLUMN {_IDENT} "
                      r"(?:SET DEFAULT nextval\(|ADD GENERATED )",
    # schema changes of the stream (restorer/evolve.py)
    "alter table": rf"ALTER TABLE ONLY {_QUALIFIED} (?:ADD COLUMN|DROP COLUMN|RENAME COLUMN|"
                   r"RENAME TO|ALTER COLUMN|DROP CONSTRAINT) ",
    "drop table": rf"DROP TABLE {_QUALIFIED} CASCADE$",
    "drop index": rf"DROP INDEX {_QUALIFIED}$",
    "alter type": rf"ALTER TYPE {_QUALIFIED} RENAME TO {_IDENT}$",
    "drop type": rf"DROP TYPE {_QUALIFIED}$",
}
_SEQUENCE_KINDS = ("create sequence", "own sequence", "column default")
_COMPILED = {kind: re.compile(shape) for kind, shape in SHAPES.items()}


def _unquote(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


def check(kind: str, statement: str, schema: str, name: str | None = None) -> None:
    """Raise ValidationError unless ``statement`` has the shape of ``kind`` on
    ``schema.name`` (``name`` None: any object of that schema, as for enum types)."""
    m = _COMPILED[kind].match(statement)
    if m is None:
        raise ValidationError(f"package DDL refused: not a {kind} statement: {statement[:120]!r}")
    groups = [g for g in m.groups() if g is not None]
    pairs = list(zip(groups[::2], groups[1::2], strict=False))
    objects = {(_unquote(s), _unquote(n)) for s, n in pairs}
    if kind == "partition":
        # the partition itself, of a parent in any schema
        ok = (_unquote(groups[0]), _unquote(groups[1])) == (schema, name)
    elif name is None or kind == "create sequence":
        # an enum type or a sequence: any name, but in the table's schema
        ok = all(s == schema for s, _ in objects)
    else:
        ok = objects == {(schema, name)}
    if not ok:
        raise ValidationError(f"package DDL refused: a {kind} statement for {schema}.{name} "
                              f"names another object: {statement[:120]!r}")


def split_sequence_ddl(ddl: str) -> list[str]:
    """The catalog joins a sequence's statements with '; '; each piece is checked alone."""
    return [part.strip() for part in ddl.split("; ") if part.strip()]


def run(conn: psycopg.Connection[Any], kind: str, statement: str, schema: str,
        name: str | None = None) -> None:
    if kind == "sequence":
        kind = next((k for k in _SEQUENCE_KINDS if _COMPILED[k].match(statement)), kind)
        if kind == "sequence":
            raise ValidationError(f"package DDL refused: not a sequence statement: "
                                  f"{statement[:120]!r}")
    check(kind, statement, schema, name)
    # prepare=True: the extended protocol, in which PostgreSQL accepts one statement only
    conn.execute(statement, prepare=True)
