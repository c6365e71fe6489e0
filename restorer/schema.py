"""Schema in the target: create what the packages describe, in pg_restore's order.

Types and tables first, rows next (by the loader), then primary keys, unique and check
constraints, indexes, foreign keys, and finally sequences set past the highest id. The
DDL comes from the package's CATALOG, where PostgreSQL itself quoted every identifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

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


def create_types(conn: psycopg.Connection[Any], catalog: Mapping[str, Any]) -> None:
    for schema in sorted({t["schema"] for t in catalog.get("tables", {}).values()}
                         | {t["schema"] for t in catalog.get("types", [])}):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for t in catalog.get("types", []):
        exists = conn.execute(
            "SELECT 1 FROM pg_type y JOIN pg_namespace n ON n.oid = y.typnamespace "
            "WHERE n.nspname = %s AND y.typname = %s", (t["schema"], t["name"])).fetchone()
        if not exists:
            ddl.run(conn, "type", t["ddl"], t["schema"], t["name"])


def create_tables(conn: psycopg.Connection[Any], catalog: Mapping[str, Any],
                  tables: Iterable[str]) -> None:
    """Each table; a partitioned one with all its partitions (parents first), so the rows
    loaded through it land where the source had them."""
    for name in tables:
        t = catalog["tables"][name]
        ddl.run(conn, "table", t["create_table"], t["schema"], t["name"])
        for p in t.get("partitions", []):
            if p["schema"] != t["schema"]:  # a partition may live in another schema
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(p["schema"])))
            ddl.run(conn, "partition", p["ddl"], p["schema"], p["name"])


def add_constraints(conn: psycopg.Connection[Any], catalog: Mapping[str, Any],
                    tables: Iterable[str]) -> None:
    """Primary keys, unique and check constraints, then the other indexes, then the
    replica identities (which may name one of those indexes)."""
    tables = list(tables)
    for name in tables:
        t = catalog["tables"][name]
        for statement in t.get("constraints", []):
            ddl.run(conn, "constraint", statement, t["schema"], t["name"])
        for p in t.get("partitions", []):  # what a partition has beyond its parent's
            for statement in p.get("constraints", []):
                ddl.run(conn, "constraint", statement, p["schema"], p["name"])
    for name in tables:
        t = catalog["tables"][name]
        for statement in t.get("indexes", []):
            ddl.run(conn, "index", statement, t["schema"], t["name"])
        for p in t.get("partitions", []):
            for statement in p.get("indexes", []):
                ddl.run(conn, "index", statement, p["schema"], p["name"])
    set_replica_identity(conn, catalog, tables)


def set_replica_identity(conn: psycopg.Connection[Any], catalog: Mapping[str, Any],
                         tables: Iterable[str]) -> None:
    """The replica identity each table (and each partition) had at the source, once the
    index it may name exists."""
    for name in tables:
        t = catalog["tables"][name]
        for rel in [t, *t.get("partitions", [])]:
            statement = (rel.get("replica_identity") or {}).get("ddl")
            if statement:
                ddl.run(conn, "replica identity", statement, rel["schema"], rel["name"])


def add_foreign_keys(conn: psycopg.Connection[Any], catalog: Mapping[str, Any],
                     tables: Iterable[str]) -> None:
    tables = set(tables)
    for name in sorted(tables):
        t = catalog["tables"][name]
        for fk in t.get("foreign_keys", []):
            if fk["ref_table"] in tables:  # a subset restore leaves the rest out
                ddl.run(conn, "foreign key", fk["ddl"], t["schema"], t["name"])


def add_sequences(conn: psycopg.Connection[Any], catalog: Mapping[str, Any],
                  tables: Iterable[str]) -> None:
    """Serial defaults and identities (created after the load, as pg_restore does)."""
    for name in tables:
        t = catalog["tables"][name]
        for seq in t.get("sequences", []):
            for statement in ddl.split_sequence_ddl(seq["ddl"]):
                ddl.run(conn, "sequence", statement, t["schema"], t["name"])


def set_sequences(conn: psycopg.Connection[Any], catalog: Mapping[str, Any],
                  tables: Iterable[str]) -> None:
    """Move every owned sequence past the highest value in its column (never backwards)."""
    for name in tables:
        table = catalog["tables"][name]
        for seq in table.get("sequences", []):
            ident = sql.Identifier(table["schema"], table["name"])
            col = sql.Identifier(seq["column"])
            conn.execute(sql.SQL(
                "SELECT setval(s, greatest(m, (SELECT last_value FROM pg_sequences "
                "WHERE format('%%I.%%I', schemaname, sequencename)::regclass = s::regclass)))"
                " FROM (SELECT pg_get_serial_sequence(%s, %s) AS s, max({col}) AS m "
                "FROM {table}) x WHERE m IS NOT NULL AND s IS NOT NULL"
            ).format(col=col, table=ident), (ident.as_string(conn), seq["column"]))


def row_count(conn: psycopg.Connection[Any], table: Mapping[str, Any]) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table["schema"], table["name"]))).fetchone()
    return int(row[0]) if row else 0
