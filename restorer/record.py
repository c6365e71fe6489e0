"""``journal_restore_state``: what a target database was restored to, kept inside it.

One row per source database: its identity, the position reached, the packages applied
and the mode. In remap mode the key map (source id -> target id, differences only) is
kept in ``journal_restore_keymap`` so an incremental restore maps later changes of the
same rows onto the same target rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from journal.catalog import Catalog
from journal.positions import Position
from restorer.plan import Reached
from restorer.remap import WORK_SCHEMA, KeyMap, typed_key

STATE_TABLE = "journal_restore_state"
KEYMAP_TABLE = "journal_restore_keymap"


@dataclass(frozen=True)
class RestoreState:
    reached: Reached
    package_ids: tuple[str, ...]
    mode: str
    tables: tuple[str, ...]
    # what the first remapping restore decided from the data, so that later incremental
    # restores match rows the same way: {"inferred": {table: [columns]}, "tracked": [...]}
    keys: Mapping[str, Any] | None = None


def read_state(conn: psycopg.Connection[Any]) -> RestoreState | None:
    exists = conn.execute("SELECT to_regclass('public.journal_restore_state')").fetchone()
    if not exists or exists[0] is None:
        return None
    has_keys = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'public.journal_restore_state'::regclass"
        " AND attname = 'keys' AND NOT attisdropped").fetchone()
    row = conn.execute(
        "SELECT system_identifier, database, generation, position, package_ids, mode, tables, "
        + ("keys " if has_keys else "NULL ")
        + "FROM public.journal_restore_state ORDER BY restored_at DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return RestoreState(Reached(Position.parse(row[3]), row[0], row[1], row[2]),
                        tuple(row[4]), row[5], tuple(row[6] or ()), row[7])


def write_state(conn: psycopg.Connection[Any], state: RestoreState) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS public.journal_restore_state ("
        " database text PRIMARY KEY, system_identifier text NOT NULL,"
        " generation text NOT NULL, position text NOT NULL, commit_lsn pg_lsn NOT NULL,"
        " package_ids text[] NOT NULL, mode text NOT NULL, tables text[],"
        " restored_at timestamptz NOT NULL DEFAULT now())")
    # targets restored by earlier versions have no keys column yet
    conn.execute("ALTER TABLE public.journal_restore_state ADD COLUMN IF NOT EXISTS keys jsonb")
    r = state.reached
    conn.execute(
        "INSERT INTO public.journal_restore_state (database, system_identifier, generation,"
        " position, commit_lsn, package_ids, mode, tables, keys) VALUES (%s, %s, %s, %s,"
        " %s::pg_lsn, %s, %s, %s, %s) ON CONFLICT (database) DO UPDATE SET system_identifier ="
        " excluded.system_identifier, generation = excluded.generation, position ="
        " excluded.position, commit_lsn = excluded.commit_lsn, package_ids ="
        " excluded.package_ids, mode = excluded.mode, tables = excluded.tables,"
        " keys = excluded.keys, restored_at = now()",
        (r.database, r.system_identifier, r.generation, str(r.position),
         str(r.position).split(":")[0], list(state.package_ids), state.mode,
         list(state.tables) or None, Jsonb(dict(state.keys)) if state.keys else None))


def write_keymap(conn: psycopg.Connection[Any], keymap: KeyMap) -> None:
    """Record ``keymap`` as ``journal_restore_keymap``, replacing an earlier restore's.

    Its format: ``(table_name text, source_key text, target_key jsonb)``, the source key
    as its JSON text (jsonb's canonical spelling) under the "C" collation, keyed by
    ``(table_name, source_key)``. A map kept in the target's transaction already has that
    shape under other names, and becomes the record by renaming: no copy, no index built
    again."""
    conn.execute("DROP TABLE IF EXISTS public.journal_restore_keymap")
    store = keymap.store
    if store.schema == WORK_SCHEMA:  # the map kept in the transaction, beside the record
        store.flush()
        for statement in (
                "ALTER TABLE {work} RENAME TO journal_restore_keymap",
                "ALTER TABLE public.journal_restore_keymap RENAME COLUMN key TO source_key",
                "ALTER TABLE public.journal_restore_keymap RENAME COLUMN value TO target_key",
                # with it goes the index of moved entries, which only the restore uses
                "ALTER TABLE public.journal_restore_keymap DROP COLUMN moved"):
            conn.execute(sql.SQL(statement).format(work=store.table))
        # its constraints named as the record's own: the key, and PostgreSQL 18's NOT NULLs
        columns = {"key_not_null": "source_key_not_null", "value_not_null": "target_key_not_null"}
        for (name,) in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid ="
                " 'public.journal_restore_keymap'::regclass AND starts_with(conname, %s)",
                (store.name + "_",)).fetchall():
            suffix = name.removeprefix(store.name + "_")
            conn.execute(sql.SQL(
                "ALTER TABLE public.journal_restore_keymap RENAME CONSTRAINT {} TO {}"
            ).format(sql.Identifier(name), sql.Identifier(
                f"journal_restore_keymap_{columns.get(suffix, suffix)}")))
        return
    # made anew, its key built after the rows: a sorted build is several times cheaper
    # than maintaining the index row by row, and the map may be large
    conn.execute(
        "CREATE TABLE public.journal_restore_keymap ("
        " table_name text COLLATE \"C\" NOT NULL, source_key text COLLATE \"C\" NOT NULL,"
        " target_key jsonb NOT NULL)")
    conn.execute("CREATE TEMPORARY TABLE journal_restore_keymap_copy (table_name text,"
                 " source_key jsonb, target_key jsonb) ON COMMIT DROP")
    with conn.cursor().copy("COPY journal_restore_keymap_copy FROM STDIN") as copy:
        for table, source, target in keymap.items():
            copy.write_row((table, json.dumps(source, default=str),
                            json.dumps(target, default=str)))
    conn.execute("INSERT INTO public.journal_restore_keymap (table_name, source_key,"
                 " target_key) SELECT table_name, source_key::text, target_key"
                 " FROM journal_restore_keymap_copy")
    conn.execute("DROP TABLE journal_restore_keymap_copy")
    conn.execute("ALTER TABLE public.journal_restore_keymap"
                 " ADD PRIMARY KEY (table_name, source_key)")


def read_keymap(conn: psycopg.Connection[Any], catalog: Catalog,
                keymap: KeyMap | None = None) -> KeyMap:
    """The key map an earlier restore left (entries of the catalog's tables), into
    ``keymap`` (default: a new one in memory)."""
    keymap = keymap if keymap is not None else KeyMap()
    exists = conn.execute("SELECT to_regclass('public.journal_restore_keymap')").fetchone()
    if not exists or exists[0] is None:
        return keymap
    if keymap.store.in_database:
        copied = dict(conn.execute(sql.SQL(
            "WITH entries AS (INSERT INTO {} (table_name, key, value, moved)"
            " SELECT table_name, source_key::text, target_key,"
            " source_key::text <> target_key::text FROM public.journal_restore_keymap"
            # source_key: jsonb in targets restored by earlier versions, its text now
            " WHERE table_name = ANY(%s) AND (source_key::text <> target_key::text"
            " OR table_name = ANY(%s))"
            # in the index's order: a large map's index costs 2.5x inserted at random
            " ORDER BY table_name COLLATE \"C\", source_key::text COLLATE \"C\""
            " RETURNING table_name)"
            " SELECT table_name, count(*) FROM entries GROUP BY 1").format(keymap.store.table),
            (sorted(catalog.tables), sorted(keymap.tracked))).fetchall())
        keymap.store.note_tables(copied, sum(copied.values()))
        return keymap
    for table, source, target in conn.execute(
            "SELECT table_name, source_key::jsonb, target_key"
            " FROM public.journal_restore_keymap"):
        spec = catalog.tables.get(table)
        if spec is None:
            continue
        types = {c.name: c.type_oid for c in spec.columns}
        oids = [types[c] for c in spec.primary_key]
        keymap.set(table, typed_key(source, oids), typed_key(target, oids))
    return keymap
