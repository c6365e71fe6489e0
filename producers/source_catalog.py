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
from psycopg.rows import dict_row, tuple_row

from journal.catalog import fills_from_sequence, natural_key_of
from journal.errors import SourceError
from producers.source_types import user_types

# Tables the journal itself writes into a database (restore state and the like): never
# captured, even when they live in a captured schema.
JOURNAL_TABLE_PREFIX = "journal_"



def read_catalog(conn: psycopg.Connection[Any], schemas: Sequence[str] = ("public",),
                 tables: Sequence[str] = ()) -> dict[str, Any]:
    """The CATALOG of ``tables`` ("schema.table"), or of every ordinary and partitioned
    table of ``schemas`` (a partition is described with its root, never on its own).

    Refuses (SourceError) an UNLOGGED or temporary table: logical decoding never sees its
    rows, so it would be captured, and restored, as an empty table.
    """
    with _empty_search_path(conn), conn.cursor(row_factory=dict_row) as cur:
        oids = _table_oids(cur, schemas, tables)
        unlogged = _unlogged_problems(cur, oids)
        if unlogged:
            raise SourceError("\n".join(unlogged))
        types, extensions = user_types(cur, oids)
        result: dict[str, Any] = {"types": types, "extensions": extensions, "tables": {}}
        for oid in oids:
            entry = _table(cur, oid)
            result["tables"][f"{entry['schema']}.{entry['name']}"] = entry
    return result



def tables_without_primary_key(catalog: dict[str, Any]) -> list[str]:
    """Tables without a primary key: captured only under REPLICA IDENTITY FULL, where a
    row is identified by all its columns (see ``capture_problems``)."""
    return sorted(name for name, t in catalog["tables"].items() if not t["primary_key"])


# Each captured root (an oid[] parameter) and every relation under it, partitions at any
# depth: root, rn (its namespace), c, n (the relation and its namespace).
_RELATIONS_OF_ROOTS = """
    FROM unnest(%s::oid[]) AS r(oid)
    JOIN pg_class root ON root.oid = r.oid
    JOIN pg_namespace rn ON rn.oid = root.relnamespace
    CROSS JOIN LATERAL (SELECT r.oid AS relid
                        UNION SELECT relid FROM pg_partition_tree(r.oid)) AS t
    JOIN pg_class c ON c.oid = t.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
"""


def capture_problems(conn: psycopg.Connection[Any], tables: Sequence[str]) -> list[str]:
    """Why some of ``tables`` ("schema.table", partitioned roots included) cannot be
    captured exactly: one line per problem, saying why and what to do. Empty when all is
    well.

    - UNLOGGED or temporary tables (or partitions): logical decoding never sees their rows.
    - A table without a primary key whose relations (the table, or each partition of a
      partitioned one, where the changes really happen) are not REPLICA IDENTITY FULL:
      its updates and deletes would not say which row they changed.
    - A replica identity index other than the primary key: an update that changes the
      primary key but not that index would be captured under the wrong key.
    """
    if not tables:
        return []
    with _empty_search_path(conn), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname || '.' || c.relname = ANY(%s) AND c.relkind IN ('r', 'p') "
            "ORDER BY n.nspname, c.relname", (list(tables),)).fetchall()
        oids = [r["oid"] for r in rows]
        problems = _unlogged_problems(cur, oids)
        for r in cur.execute(
            """
            SELECT format('%%I.%%I', rn.nspname, root.relname) AS root,
                   format('%%I.%%I', n.nspname, c.relname) AS rel,
                   EXISTS (SELECT 1 FROM pg_index i
                           WHERE i.indrelid = root.oid AND i.indisprimary) AS keyed,
                   c.relreplident::text AS ident,
                   (SELECT i.indisprimary FROM pg_index i
                    WHERE i.indrelid = c.oid AND i.indisreplident) AS ident_is_primary,
                   (SELECT format('%%I', ic.relname) FROM pg_index i
                    JOIN pg_class ic ON ic.oid = i.indexrelid
                    WHERE i.indrelid = c.oid AND i.indisreplident) AS ident_index
            """ + _RELATIONS_OF_ROOTS + """            ORDER BY 1, c.oid <> root.oid, 2
            """, (oids,)).fetchall():  # noqa: S608 — our own constant texts
            if not r["keyed"] and r["ident"] != "f":
                which = "it" if r["rel"] == r["root"] else f"its partition {r['rel']}"
                problems.append(
                    f"table {r['root']} has no primary key and {which} is not REPLICA "
                    "IDENTITY FULL, so its updates and deletes cannot be captured exactly: "
                    f"ALTER TABLE {r['rel']} REPLICA IDENTITY FULL; (or add a primary key)")
            elif r["keyed"] and r["ident"] == "i" and not r["ident_is_primary"]:
                problems.append(
                    f"table {r['rel']} has REPLICA IDENTITY USING INDEX {r['ident_index']}, "
                    "not its primary key, so an update of the primary key could be captured "
                    f"under the wrong key: ALTER TABLE {r['rel']} REPLICA IDENTITY DEFAULT; "
                    "(or FULL)")
    return problems


def _unlogged_problems(cur: psycopg.Cursor[Any], oids: Sequence[int]) -> list[str]:
    rows = cur.execute(
        """
        SELECT format('%%I.%%I', rn.nspname, root.relname) AS root,
               format('%%I.%%I', n.nspname, c.relname) AS rel,
               c.relpersistence::text AS persistence
        """ + _RELATIONS_OF_ROOTS + """        WHERE c.relpersistence <> 'p'
        ORDER BY 1, 2
        """, (list(oids),)).fetchall()
    problems = []
    for r in rows:
        kind = "UNLOGGED" if r["persistence"] == "u" else "TEMPORARY"
        what = r["rel"] if r["rel"] == r["root"] else f"{r['rel']} (a partition of {r['root']})"
        fix = (f"ALTER TABLE {r['rel']} SET LOGGED, or leave it out of capture"
               if kind == "UNLOGGED" else "leave it out of capture")
        problems.append(
            f"table {what} is {kind}: logical decoding never sees its rows, so it would be "
            f"captured and restored empty; {fix} (list the captured tables in [source] "
            "tables, or keep it in a schema that is not captured)")
    return problems


def detect_natural_key(table_catalog: dict[str, Any]) -> list[str] | None:
    """``journal.catalog.natural_key_of`` of a CATALOG table entry (None: it has none)."""
    key = natural_key_of(
        {c["name"]: (bool(c["not_null"]), int(c["type_oid"])) for c in table_catalog["columns"]},
        table_catalog["primary_key"],
        [(u["name"], u["columns"]) for u in table_catalog["unique"]])
    return list(key) if key is not None else None


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
                "SELECT c.oid, c.relispartition, (SELECT format('%%I.%%I', pn.nspname, "
                "p.relname) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                "JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid) "
                "AS parent FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                (schema, name)).fetchone()
            if row is None:
                raise SourceError(f"table {qualified} does not exist in the source database")
            if row["relispartition"]:
                # its changes are published through the root (publish_via_partition_root)
                raise SourceError(f"table {qualified} is a partition of {row['parent']}: "
                                  "capture the partitioned table instead")
            oids.append(row["oid"])
        return oids
    rows = cur.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND left(c.relname, %s) <> %s ORDER BY n.nspname, c.relname",
        (list(schemas), len(JOURNAL_TABLE_PREFIX), JOURNAL_TABLE_PREFIX)).fetchall()
    return [r["oid"] for r in rows]


# Enum types the tables of an oid[] use (the DDL event trigger runs it too).
_IDENTITY_COLUMNS = """
           CASE c.relreplident WHEN 'd' THEN 'default' WHEN 'f' THEN 'full'
                               WHEN 'n' THEN 'nothing' ELSE 'index' END AS {prefix}kind,
           CASE WHEN c.relreplident = 'i' THEN ri.relname END AS {prefix}index,
           CASE WHEN c.relreplident <> 'd'
                THEN format('ALTER TABLE ONLY %%I.%%I REPLICA IDENTITY %%s', n.nspname,
                            c.relname, CASE c.relreplident WHEN 'f' THEN 'FULL'
                                                           WHEN 'n' THEN 'NOTHING'
                                       ELSE format('USING INDEX %%I', ri.relname) END)
           END AS {prefix}ddl
"""

# How a relation identifies its old rows to logical decoding, and the DDL that gives a
# re-created one the same (None for the default, the primary key). One parameter: its oid.
REPLICA_IDENTITY_QUERY = """
    SELECT""" + _IDENTITY_COLUMNS.format(prefix="") + """    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN (pg_index i JOIN pg_class ri ON ri.oid = i.indexrelid)
           ON i.indrelid = c.oid AND i.indisreplident
    WHERE c.oid = %s
"""

# Every partition under a partitioned table (one parameter: its oid), parents before
# their own partitions: the CREATE TABLE … PARTITION OF … FOR VALUES … that re-creates it
# (columns, NOT NULLs, defaults, keys and indexes come from the root), what it has of its
# own beyond its parent's (check constraints, indexes), and its replica identity.
PARTITIONS_QUERY = """
    SELECT n.nspname AS schema, c.relname AS name,
           format('%%I.%%I', pn.nspname, p.relname) AS parent,
           format('CREATE TABLE %%I.%%I PARTITION OF %%I.%%I %%s%%s', n.nspname, c.relname,
                  pn.nspname, p.relname, pg_get_expr(c.relpartbound, c.oid),
                  CASE WHEN c.relkind = 'p'
                       THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) END) AS ddl,
           coalesce((SELECT array_agg(format('ALTER TABLE ONLY %%I.%%I ADD CONSTRAINT %%I %%s',
                                             n.nspname, c.relname, con.conname,
                                             pg_get_constraintdef(con.oid))
                                      ORDER BY con.contype <> 'p', con.conname)
                     FROM pg_constraint con
                     WHERE con.conrelid = c.oid AND con.contype IN ('p', 'u', 'c', 'x')
                       AND con.conislocal AND con.conparentid = 0), '{}') AS constraints,
           coalesce((SELECT array_agg(pg_get_indexdef(i.indexrelid) ORDER BY ic.relname)
                     FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = c.oid
                       AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                                       WHERE con.conindid = i.indexrelid
                                         AND con.conrelid = i.indrelid)
                       AND NOT EXISTS (SELECT 1 FROM pg_inherits h
                                       WHERE h.inhrelid = i.indexrelid)), '{}') AS indexes,
""" + _IDENTITY_COLUMNS.format(prefix="identity_") + """    FROM pg_partition_tree(%s) AS t
    JOIN pg_class c ON c.oid = t.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_class p ON p.oid = t.parentrelid
    JOIN pg_namespace pn ON pn.oid = p.relnamespace
    LEFT JOIN (pg_index i JOIN pg_class ri ON ri.oid = i.indexrelid)
           ON i.indrelid = c.oid AND i.indisreplident
    WHERE t.level > 0
    ORDER BY t.level, n.nspname, c.relname
"""  # noqa: S608 — our own constant texts, no input


def partitions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CATALOG partition entries from the rows of ``PARTITIONS_QUERY``."""
    return [{"schema": r["schema"], "name": r["name"], "parent": r["parent"], "ddl": r["ddl"],
             "constraints": list(r["constraints"]), "indexes": list(r["indexes"]),
             "replica_identity": {"kind": r["identity_kind"], "index": r["identity_index"],
                                  "ddl": r["identity_ddl"]}} for r in rows]


# The per-table queries of the CATALOG, each with one parameter: the relation's oid. The
# DDL event trigger (producers/ddl_trigger.py) runs the same texts inside the DDL's own
# transaction, so an entry built from its message is the entry read_catalog would read.
TABLE_QUERIES: dict[str, str] = {
    "names": "SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind, "
             "c.relispartition AS partition, "
             "CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key "
             "FROM pg_class c "
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
               -- no ONLY on a partitioned table: its foreign keys must reach the partitions
               format('ALTER TABLE %%s%%I.%%I ADD CONSTRAINT %%I %%s',
                      CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END, n.nspname,
                      c.relname, con.conname, pg_get_constraintdef(con.oid)) AS ddl
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class rc ON rc.oid = con.confrelid
        JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE con.conrelid = %s AND con.contype = 'f' AND con.conparentid = 0
        ORDER BY con.conname
        """,
    # Primary key first (the restore creates it before the rest), then by name. NOT NULL
    # constraints (contype 'n', PostgreSQL 18) are already part of create_table. No ONLY
    # on a partitioned table: PostgreSQL refuses it there (keys must reach the partitions).
    "constraints": """
        SELECT format('ALTER TABLE %%s%%I.%%I ADD CONSTRAINT %%I %%s',
                      CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END, n.nspname,
                      c.relname, con.conname, pg_get_constraintdef(con.oid)) AS ddl
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.conrelid = %s AND con.contype IN ('p', 'u', 'c', 'x')
        ORDER BY con.contype <> 'p', con.conname
        """,
    # On a partitioned table without the ON ONLY that pg_get_indexdef prints: that would
    # leave the index invalid until every partition has one attached.
    "indexes": """
        SELECT CASE WHEN c.relkind = 'p' AND left(d.ddl, length(d.only)) = d.only
                    THEN left(d.only, -length('ONLY ')) || substr(d.ddl, length(d.only) + 1)
                    ELSE d.ddl END AS ddl
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        CROSS JOIN LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS ddl,
                                   format('CREATE %%sINDEX %%I ON ONLY ',
                                          CASE WHEN i.indisunique THEN 'UNIQUE ' END,
                                          ic.relname) AS only) AS d
        WHERE i.indrelid = %s
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                          WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                            AND con.contype IN ('p', 'u', 'x'))
        ORDER BY ic.relname
        """,
    "sequences": """
        SELECT sn.nspname AS seq_schema, s.relname AS seq_name, a.attname AS column,
               a.attidentity::text AS identity, n.nspname AS schema, c.relname AS table,
               format_type(ps.seqtypid, NULL) AS seq_type, c.relkind = 'p' AS partitioned,
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
    "replica_identity": REPLICA_IDENTITY_QUERY,
    "partitions": PARTITIONS_QUERY,
}


def is_captured_kind(names: dict[str, Any]) -> bool:
    """Whether a relation (its ``TABLE_QUERIES["names"]`` row) is of a kind read_catalog
    captures: the rule of ``_table_oids`` (ordinary and partitioned tables, never a
    partition on its own)."""
    return names["relkind"] in ("r", "p") and not names["partition"]


def _table(cur: psycopg.Cursor[Any], oid: int) -> dict[str, Any]:
    raw = {kind: cur.execute(query, (oid,)).fetchall() for kind, query in TABLE_QUERIES.items()}
    return table_entry(cur.connection, oid, raw)


def table_entry(conn: psycopg.Connection[Any], oid: int,
                raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One CATALOG table from the rows of ``TABLE_QUERIES`` (read here, or carried by a
    DDL message). ``oid`` and each column's ``attnum`` say which relation and column an
    entry describes across renames."""
    schema, name = raw["names"][0]["schema"], raw["names"][0]["name"]
    partition_key = raw["names"][0].get("partition_key")
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
        "create_table": _create_table(conn, schema, name, columns)
                        + (f" PARTITION BY {partition_key}" if partition_key else ""),
        "constraints": [r["ddl"] for r in raw["constraints"]],
        "indexes": [r["ddl"] for r in raw["indexes"]],
        "sequences": _sequences(conn, raw["sequences"]),
        "replica_identity": dict(raw["replica_identity"][0]),
    }
    if partition_key:
        entry["partition_key"] = partition_key
        entry["partitions"] = partitions(raw["partitions"])
    entry["natural_key"] = detect_natural_key(entry)
    return entry


def _is_sequence_default(column: dict[str, Any]) -> bool:
    return fills_from_sequence(column["identity"], column["expression"], column["generated"])


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
        only = "" if r["partitioned"] else "ONLY "  # an identity must reach the partitions
        if r["identity"]:
            kind = "ALWAYS" if r["identity"] == "a" else "BY DEFAULT"
            ddl = sql.SQL(
                "ALTER TABLE " + only + "{} ALTER COLUMN {} ADD GENERATED " + kind
                + " AS IDENTITY (SEQUENCE NAME {} {})").format(
                table, column, seq, options)
        else:
            ddl = sql.SQL(
                "CREATE SEQUENCE {seq} AS {seq_type} {options}; "
                "ALTER SEQUENCE {seq} OWNED BY {table}.{column}; "
                "ALTER TABLE " + only + "{table} ALTER COLUMN {column} "
                "SET DEFAULT nextval({name}::regclass)"
            ).format(seq=seq, seq_type=sql.SQL(r["seq_type"]), options=options, table=table,
                     column=column, name=sql.Literal(seq.as_string(conn)))
        # where the source's sequence stands, so a restore can end where it did (not
        # transactional: read now, never behind the rows read under the same snapshot)
        # (a DDL message may describe a sequence a later statement dropped: then unknown)
        entry: dict[str, Any] = {"name": f"{r['seq_schema']}.{r['seq_name']}",
                                 "column": r["column"], "ddl": ddl.as_string(conn)}
        with conn.cursor(row_factory=tuple_row) as cur:
            if cur.execute("SELECT to_regclass(%s)", (seq.as_string(conn),)).fetchone()[0]:
                state = cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                    seq)).fetchone()
                entry.update(last_value=int(state[0]), is_called=bool(state[1]))
        result.append(entry)
    return result
