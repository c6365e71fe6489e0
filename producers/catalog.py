"""The CATALOG of the captured tables, read from pg_catalog, and the rows of a table.

The CATALOG is plain JSON (see DESIGN and the stream contract): enough DDL to re-create
the tables in an empty database, plus the keys the restore needs (primary keys, unique
keys, foreign keys, the detected natural key). It is read with an empty ``search_path``,
as pg_dump does, so every name that PostgreSQL prints (types, defaults, constraint and
index definitions) comes out schema-qualified and means the same thing in any database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from journal.catalog import Column, TableSchema
from journal.errors import SourceError
from producers.values import RowLoader, copy_rows

# Tables the journal itself writes into a database (restore state and the like): never
# captured, even when they live in a captured schema.
JOURNAL_TABLE_PREFIX = "journal_"

_UUID_OID = 2950
_TEXT_OIDS = frozenset({25, 1043})  # text, varchar


def read_catalog(conn: psycopg.Connection[Any], schemas: Sequence[str] = ("public",),
                 tables: Sequence[str] = ()) -> dict[str, Any]:
    """The CATALOG of ``tables`` ("schema.table"), or of every ordinary table of ``schemas``."""
    with _empty_search_path(conn), conn.cursor(row_factory=dict_row) as cur:
        oids = _table_oids(cur, schemas, tables)
        result: dict[str, Any] = {"types": _enum_types(cur, oids), "tables": {}}
        for oid in oids:
            entry = _table(cur, oid)
            result["tables"][f"{entry['schema']}.{entry['name']}"] = entry
    return result


def table_schema(catalog_table: dict[str, Any]) -> TableSchema:
    """The journal's schema of one CATALOG table."""
    columns = tuple(Column(c["name"], c["pg_type"], int(c["type_oid"]), bool(c["not_null"]))
                    for c in catalog_table["columns"])
    return TableSchema(catalog_table["schema"], catalog_table["name"], columns,
                       tuple(catalog_table["primary_key"]))


def table_schemas(catalog: dict[str, Any]) -> dict[str, TableSchema]:
    return {name: table_schema(t) for name, t in catalog["tables"].items()}


def tables_without_primary_key(catalog: dict[str, Any]) -> list[str]:
    """Tables that capture cannot key: each needs a primary key (or REPLICA IDENTITY FULL)."""
    return sorted(name for name, t in catalog["tables"].items() if not t["primary_key"])


def detect_natural_key(table_catalog: dict[str, Any]) -> list[str] | None:
    """The natural key per DESIGN "Natural keys": a unique key, other than the primary
    key, whose columns are all NOT NULL; a single uuid column first, then keys made of
    text columns, then the fewest columns. None when the table has none."""
    columns = {c["name"]: c for c in table_catalog["columns"]}
    primary = set(table_catalog["primary_key"])
    candidates = []
    for unique in table_catalog["unique"]:
        names = unique["columns"]
        if set(names) == primary or not all(columns[n]["not_null"] for n in names):
            continue
        oids = [columns[n]["type_oid"] for n in names]
        single_uuid = len(names) == 1 and oids[0] == _UUID_OID
        all_text = all(o in _TEXT_OIDS for o in oids)
        candidates.append(((not single_uuid, not all_text, len(names), unique["name"]), names))
    return list(min(candidates)[1]) if candidates else None


def read_rows(conn: psycopg.Connection[Any], table: TableSchema) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` in primary-key order, values as the journal represents them.

    Streams through ``COPY ... TO STDOUT``: memory stays flat whatever the table size.
    """
    loader = RowLoader(table, conn)
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        sql.Identifier(table.schema, table.name))
    if table.primary_key:
        query = sql.SQL("{} ORDER BY {}").format(
            query, sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key))
    names = table.column_names
    for values in copy_rows(conn, query, loader):
        yield dict(zip(names, values, strict=True))


def format_types(conn: psycopg.Connection[Any],
                 types: Sequence[tuple[int, int]]) -> list[str]:
    """``format_type(oid, typmod)`` as the CATALOG spells it (user types schema-qualified),
    for readers of pgoutput relation messages that must match the CATALOG's ``pg_type``."""
    if not types:
        return []
    with _empty_search_path(conn):
        rows = conn.execute(
            "SELECT format_type(t.oid, t.typmod) FROM unnest(%s::oid[], %s::int[]) "
            "WITH ORDINALITY AS t(oid, typmod, n) ORDER BY n",
            ([t[0] for t in types], [t[1] for t in types])).fetchall()
    return [r[0] for r in rows]


@contextmanager
def _empty_search_path(conn: psycopg.Connection[Any]) -> Iterator[None]:
    previous = conn.execute("SELECT current_setting('search_path')").fetchone()
    conn.execute("SELECT set_config('search_path', '', false)")
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('search_path', %s, false)", (previous[0],))


def _table_oids(cur: psycopg.Cursor[Any], schemas: Sequence[str],
                tables: Sequence[str]) -> list[int]:
    if tables:
        oids = []
        for qualified in tables:
            schema, dot, name = qualified.partition(".")
            if not dot:
                raise SourceError(f"table {qualified!r}: name it as schema.table")
            row = cur.execute(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'r'",
                (schema, name)).fetchone()
            if row is None:
                raise SourceError(f"table {qualified} does not exist in the source database")
            oids.append(row["oid"])
        return oids
    rows = cur.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind = 'r' AND NOT c.relispartition "
        "AND left(c.relname, %s) <> %s ORDER BY n.nspname, c.relname",
        (list(schemas), len(JOURNAL_TABLE_PREFIX), JOURNAL_TABLE_PREFIX)).fetchall()
    return [r["oid"] for r in rows]


# Enum types the tables of an oid[] use (the DDL event trigger runs it too).
ENUM_TYPES_QUERY = """
        SELECT n.nspname AS schema, t.typname AS name,
               array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels,
               format('CREATE TYPE %%I.%%I AS ENUM (%%s)', n.nspname, t.typname,
                      string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder))
                 AS ddl
        FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.oid IN (
            SELECT coalesce(nullif(ty.typelem, 0), ty.oid)
            FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
            WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped)
        GROUP BY n.nspname, t.typname
        ORDER BY n.nspname, t.typname
        """


def _enum_types(cur: psycopg.Cursor[Any], table_oids: list[int]) -> list[dict[str, Any]]:
    return enum_types(cur.execute(ENUM_TYPES_QUERY, (table_oids,)).fetchall())


def enum_types(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CATALOG type entries from the rows of ``ENUM_TYPES_QUERY``."""
    return [{"schema": r["schema"], "name": r["name"], "kind": "enum",
             "labels": list(r["labels"]), "ddl": r["ddl"]} for r in rows]


# The per-table queries of the CATALOG, each with one parameter: the relation's oid. The
# DDL event trigger (producers/ddl_trigger.py) runs the same texts inside the DDL's own
# transaction, so an entry built from its message is the entry read_catalog would read.
TABLE_QUERIES: dict[str, str] = {
    "names": "SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind, "
             "c.relispartition AS partition FROM pg_class c "
             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
    "columns": """
        SELECT a.attnum::int AS attnum, a.attname AS name,
               format_type(a.atttypid, a.atttypmod) AS pg_type,
               a.atttypid::int AS type_oid, a.attnotnull AS not_null,
               pg_get_expr(d.adbin, d.adrelid) AS expression,
               a.attidentity::text AS identity, a.attgenerated::text AS generated,
               CASE WHEN a.attcollation <> ty.typcollation
                    THEN format('%%I.%%I', cn.nspname, co.collname) END AS collation
        FROM pg_attribute a
        JOIN pg_type ty ON ty.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
    "primary_key": """
        SELECT array_agg(a.attname ORDER BY k.n) AS columns
        FROM pg_constraint con
        CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        WHERE con.conrelid = %s AND con.contype = 'p'
        """,
    # Unique constraints and plain unique indexes alike: both make a key.
    "unique": """
        SELECT coalesce(con.conname, ic.relname) AS name,
               array_agg(a.attname ORDER BY k.n) AS columns
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s AND i.indisunique AND NOT i.indisprimary AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND k.n <= i.indnkeyatts
        GROUP BY 1
        ORDER BY 1
        """,
    "foreign_keys": """
        SELECT con.conname AS name,
               (SELECT array_agg(a.attname ORDER BY k.n)
                FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum)
                 AS columns,
               rn.nspname || '.' || rc.relname AS ref_table,
               (SELECT array_agg(a.attname ORDER BY k.n)
                FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum)
                 AS ref_columns,
               con.condeferrable AS deferrable,
               format('ALTER TABLE ONLY %%I.%%I ADD CONSTRAINT %%I %%s', n.nspname, c.relname,
                      con.conname, pg_get_constraintdef(con.oid)) AS ddl
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class rc ON rc.oid = con.confrelid
        JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE con.conrelid = %s AND con.contype = 'f'
        ORDER BY con.conname
        """,
    # Primary key first (the restore creates it before the rest), then by name. NOT NULL
    # constraints (contype 'n', PostgreSQL 18) are already part of create_table.
    "constraints": """
        SELECT format('ALTER TABLE ONLY %%I.%%I ADD CONSTRAINT %%I %%s', n.nspname, c.relname,
                      con.conname, pg_get_constraintdef(con.oid)) AS ddl
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.conrelid = %s AND con.contype IN ('p', 'u', 'c', 'x')
        ORDER BY con.contype <> 'p', con.conname
        """,
    "indexes": """
        SELECT pg_get_indexdef(i.indexrelid) AS ddl
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = %s
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                          WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                            AND con.contype IN ('p', 'u', 'x'))
        ORDER BY ic.relname
        """,
    "sequences": """
        SELECT sn.nspname AS seq_schema, s.relname AS seq_name, a.attname AS column,
               a.attidentity::text AS identity, n.nspname AS schema, c.relname AS table,
               format_type(ps.seqtypid, NULL) AS seq_type,
               format('INCREMENT BY %%s MINVALUE %%s MAXVALUE %%s START WITH %%s '
                      'CACHE %%s%%s', ps.seqincrement,
                      ps.seqmin, ps.seqmax, ps.seqstart, ps.seqcache,
                      CASE WHEN ps.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END) AS options
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        JOIN pg_sequence ps ON ps.seqrelid = s.oid
        JOIN pg_class c ON c.oid = d.refobjid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = %s AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        ORDER BY a.attnum
        """,
}


def is_captured_kind(names: dict[str, Any]) -> bool:
    """Whether a relation (its ``TABLE_QUERIES["names"]`` row) is of a kind read_catalog
    captures: the rule of ``_table_oids``."""
    return names["relkind"] == "r" and not names["partition"]


def _table(cur: psycopg.Cursor[Any], oid: int) -> dict[str, Any]:
    raw = {kind: cur.execute(query, (oid,)).fetchall() for kind, query in TABLE_QUERIES.items()}
    return table_entry(cur.connection, oid, raw)


def table_entry(conn: psycopg.Connection[Any], oid: int,
                raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One CATALOG table from the rows of ``TABLE_QUERIES`` (read here, or carried by a
    DDL message). ``oid`` and each column's ``attnum`` say which relation and column an
    entry describes across renames."""
    schema, name = raw["names"][0]["schema"], raw["names"][0]["name"]
    columns = raw["columns"]
    for c in columns:
        # A generated column's expression is its "default" in the CATALOG too; "generated"
        # says which it is.
        c["default"] = c["expression"]
    primary = raw["primary_key"][0]["columns"] if raw["primary_key"] else None
    entry: dict[str, Any] = {
        "oid": oid,
        "schema": schema,
        "name": name,
        "columns": [{k: c[k] for k in ("name", "pg_type", "type_oid", "not_null", "default",
                                       "identity", "generated", "attnum")} for c in columns],
        "primary_key": list(primary or []),
        "unique": [{"name": r["name"], "columns": list(r["columns"])} for r in raw["unique"]],
        "foreign_keys": [{"name": r["name"], "columns": list(r["columns"]),
                          "ref_table": r["ref_table"], "ref_columns": list(r["ref_columns"]),
                          "deferrable": r["deferrable"], "ddl": r["ddl"]}
                         for r in raw["foreign_keys"]],
        "create_table": _create_table(conn, schema, name, columns),
        "constraints": [r["ddl"] for r in raw["constraints"]],
        "indexes": [r["ddl"] for r in raw["indexes"]],
        "sequences": _sequences(conn, raw["sequences"]),
    }
    entry["natural_key"] = detect_natural_key(entry)
    return entry


def _is_sequence_default(column: dict[str, Any]) -> bool:
    return bool(column["identity"]) or (
        not column["generated"] and (column["expression"] or "").startswith("nextval("))


def _create_table(conn: psycopg.Connection[Any], schema: str, name: str,
                  columns: list[dict[str, Any]]) -> str:
    parts = []
    for c in columns:
        part = sql.SQL("{} {}").format(sql.Identifier(c["name"]), sql.SQL(c["pg_type"]))
        if c["collation"]:
            part = sql.SQL("{} COLLATE {}").format(part, sql.SQL(c["collation"]))
        if c["generated"]:
            kind = "STORED" if c["generated"] == "s" else "VIRTUAL"
            part = sql.SQL("{} GENERATED ALWAYS AS ({}) " + kind).format(
                part, sql.SQL(c["expression"]))
        elif c["expression"] is not None and not _is_sequence_default(c):
            part = sql.SQL("{} DEFAULT {}").format(part, sql.SQL(c["expression"]))
        if c["not_null"]:
            part = sql.SQL("{} NOT NULL").format(part)
        parts.append(part)
    ddl = sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(schema, name), sql.SQL(", ").join(parts))
    return ddl.as_string(conn)


def _sequences(conn: psycopg.Connection[Any], rows: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """Sequences owned by a column (serial or identity), with the DDL that brings the
    sequence and the column's default or identity back after the load."""
    result = []
    for r in rows:
        seq = sql.Identifier(r["seq_schema"], r["seq_name"])
        table = sql.Identifier(r["schema"], r["table"])
        column = sql.Identifier(r["column"])
        options = sql.SQL(r["options"])
        if r["identity"]:
            kind = "ALWAYS" if r["identity"] == "a" else "BY DEFAULT"
            ddl = sql.SQL(
                "ALTER TABLE ONLY {} ALTER COLUMN {} ADD GENERATED " + kind
                + " AS IDENTITY (SEQUENCE NAME {} {})").format(
                table, column, seq, options)
        else:
            ddl = sql.SQL(
                "CREATE SEQUENCE {seq} AS {seq_type} {options}; "
                "ALTER SEQUENCE {seq} OWNED BY {table}.{column}; "
                "ALTER TABLE ONLY {table} ALTER COLUMN {column} "
                "SET DEFAULT nextval({name}::regclass)"
            ).format(seq=seq, seq_type=sql.SQL(r["seq_type"]), options=options, table=table,
                     column=column, name=sql.Literal(seq.as_string(conn)))
        result.append({"name": f"{r['seq_schema']}.{r['seq_name']}", "column": r["column"],
                       "ddl": ddl.as_string(conn)})
    return result
