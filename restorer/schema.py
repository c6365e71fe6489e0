"""Schema in the target: create what the packages describe, in pg_restore's order.

Types and tables first, rows next (by the loader), then primary keys, unique and check
constraints, indexes, foreign keys, and finally sequences set past the highest id. The
DDL comes from the package's CATALOG, where PostgreSQL itself quoted every identifier.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import Catalog, ExtensionEntry, PartitionEntry, TableEntry
from journal.errors import RestoreError
from restorer import ddl


def existing_tables(conn: psycopg.Connection[Any], names: Iterable[str]) -> set[str]:
    """Which of ``names`` ("schema.table") exist in the target."""
    names = list(names)
    if not names:
        return set()
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)",
        (names,)).fetchall()
    return {r[0] for r in rows}


def create_types(conn: psycopg.Connection[Any], catalog: Catalog) -> None:
    """Schemas, the extensions the tables' types come from, then the user-defined types
    (the CATALOG lists them in dependency order); what the target has already is kept."""
    for schema in sorted({t.schema for t in catalog.tables.values()}
                         | {t.schema for t in catalog.types}
                         | {e.schema for e in catalog.extensions}):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for extension in catalog.extensions:
        create_extension(conn, extension)
    for t in catalog.types:
        exists = conn.execute(
            "SELECT 1 FROM pg_type y JOIN pg_namespace n ON n.oid = y.typnamespace "
            "WHERE n.nspname = %s AND y.typname = %s", (t.schema, t.name)).fetchone()
        if not exists:
            ddl.run(conn, "type", t.ddl, t.schema, t.name)


def create_extension(conn: psycopg.Connection[Any], extension: ExtensionEntry) -> None:
    """``CREATE EXTENSION IF NOT EXISTS`` in the schema the source has it in (the CATALOG
    names its types there), or RestoreError naming the extension."""
    name, schema = extension.name, extension.schema
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                       "ON n.oid = e.extnamespace WHERE e.extname = %s", (name,)).fetchone()
    if row is not None:
        if row[0] != schema:
            raise RestoreError(f"extension {name} is installed in schema {row[0]} of the "
                               f"target, the tables need it in schema {schema}: move it "
                               f"(ALTER EXTENSION {name} SET SCHEMA {schema}) or restore "
                               "into another database")
        return
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s",
                             (name,)).fetchone()
    if available is None:
        raise RestoreError(f"the tables need extension {name} (version "
                           f"{extension.version} in the source), which the target's "
                           "server does not have: install it there, then restore again")
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(
                sql.Identifier(name), sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise RestoreError(f"cannot create extension {name} in schema {schema} of the "
                           f"target: {exc.diag.message_primary or exc}; create it as a "
                           "user allowed to, then restore again") from exc


def create_tables(conn: psycopg.Connection[Any], catalog: Catalog,
                  tables: Iterable[str]) -> None:
    """Each table; a partitioned one with all its partitions (parents first), so the rows
    loaded through it land where the source had them."""
    for name in tables:
        t = catalog.tables[name]
        if t.create_table is None:
            raise RestoreError(f"the catalog has no CREATE TABLE for {name}: packages "
                               "written before the catalog carried DDL restore only into "
                               "a database that has the table")
        ddl.run(conn, "table", t.create_table, t.schema, t.name)
        for p in t.partitions:
            if p.schema != t.schema:  # a partition may live in another schema
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(p.schema)))
            ddl.run(conn, "partition", p.ddl, p.schema, p.name)


def add_constraints(conn: psycopg.Connection[Any], catalog: Catalog,
                    tables: Iterable[str], primary: bool | None = None) -> None:
    """Primary keys, unique and check constraints, then the other indexes, then the
    replica identities (which may name one of those indexes). ``primary`` True: the
    primary keys alone; False: everything but them (added before)."""
    tables = list(tables)
    for name in tables:
        t = catalog.tables[name]
        relations: list[TableEntry | PartitionEntry] = [t, *t.partitions]
        for rel in relations:  # a partition: what it has beyond its parent's
            for statement in rel.constraints:
                if primary is None or primary == ddl.is_primary_key(statement):
                    ddl.run(conn, "constraint", statement, rel.schema, rel.name)
    if primary:
        return
    for name in tables:
        t = catalog.tables[name]
        for statement in t.indexes:
            ddl.run(conn, "index", statement, t.schema, t.name)
        for p in t.partitions:
            for statement in p.indexes:
                ddl.run(conn, "index", statement, p.schema, p.name)
    set_replica_identity(conn, catalog, tables)


def set_replica_identity(conn: psycopg.Connection[Any], catalog: Catalog,
                         tables: Iterable[str]) -> None:
    """The replica identity each table (and each partition) had at the source, once the
    index it may name exists."""
    for name in tables:
        t = catalog.tables[name]
        relations: list[TableEntry | PartitionEntry] = [t, *t.partitions]
        for rel in relations:
            if rel.replica_identity is not None and rel.replica_identity.ddl:
                ddl.run(conn, "replica identity", rel.replica_identity.ddl, rel.schema,
                        rel.name)


def add_foreign_keys(conn: psycopg.Connection[Any], catalog: Catalog,
                     tables: Iterable[str]) -> None:
    tables = set(tables)
    for name in sorted(tables):
        t = catalog.tables[name]
        for fk in t.foreign_keys:
            if fk.ref_table in tables:  # a subset restore leaves the rest out
                if fk.ddl is None:
                    raise RestoreError(f"the catalog has no DDL for foreign key {fk.name} "
                                       f"of {name}")
                ddl.run(conn, "foreign key", fk.ddl, t.schema, t.name)


def add_sequences(conn: psycopg.Connection[Any], catalog: Catalog,
                  tables: Iterable[str]) -> None:
    """Serial defaults and identities (created after the load, as pg_restore does)."""
    for name in tables:
        t = catalog.tables[name]
        for seq in t.sequences:
            for statement in ddl.split_sequence_ddl(seq.ddl):
                ddl.run(conn, "sequence", statement, t.schema, t.name)


def set_sequences(conn: psycopg.Connection[Any], catalog: Catalog,
                  tables: Iterable[str], *, empty: bool = False) -> None:
    """Every owned sequence where the source's stood (``setval(last_value, is_called)``,
    recorded with the catalog), and never below the highest value now in its column;
    in a populated target (``empty`` false) never below where the target's stood either."""
    for name in tables:
        table = catalog.tables[name]
        for seq in table.sequences:
            ident = sql.Identifier(table.schema, table.name)
            col = sql.Identifier(seq.column)
            row = conn.execute(sql.SQL(
                "SELECT pg_get_serial_sequence(%s, %s), max({col}) FROM {table}").format(
                    col=col, table=ident), (ident.as_string(conn), seq.column)).fetchone()
            if row is None or row[0] is None:
                continue
            sequence, highest = row
            current = conn.execute(
                "SELECT last_value FROM pg_sequences WHERE format('%%I.%%I', schemaname,"
                " sequencename)::regclass = %s::regclass", (sequence,)).fetchone()
            value = seq.last_value
            called = True if seq.is_called is None else seq.is_called
            candidates = [(v, True) for v in (highest, None if empty else (
                current[0] if current else None)) if v is not None]
            if value is not None:
                candidates.append((value, called))
            if not candidates:
                continue
            # the highest wins; at a tie, "called" (the next value is past it) wins
            target, is_called = max(candidates, key=lambda c: (c[0], c[1]))
            conn.execute("SELECT setval(%s, %s, %s)", (sequence, target, is_called))


def row_count(conn: psycopg.Connection[Any], table: TableEntry) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table.schema, table.name))).fetchone()
    return int(row[0]) if row else 0
