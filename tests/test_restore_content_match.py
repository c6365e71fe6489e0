"""Restore into a live database of tables that have no unique key at all.

Such rows are recognised by a natural key inferred from the source's data (a uuid or an
identifier-named column whose values are unique and present), or else by their whole
content as a multiset — so a restore never duplicates a row the target already has, and
two equal source rows stay two.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from restorer.restore import RestoreOptions, restore
from restorer.verify import verify
from tests.support.restore import Recorder

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE registry (id serial PRIMARY KEY, name text NOT NULL, value int NOT NULL);
CREATE TABLE note (id serial PRIMARY KEY, body text NOT NULL, stars int);
CREATE TABLE doc (id serial PRIMARY KEY, uuid uuid NOT NULL, title text NOT NULL);
CREATE TABLE page (id serial PRIMARY KEY, doc_id int NOT NULL REFERENCES doc (id),
                   number int NOT NULL);
"""
SHARED = uuid.UUID("11111111-2222-3333-4444-555555555555")


SHARED_PAGES = ("SELECT d.title, p.number FROM page p JOIN doc d ON d.id = p.doc_id"
                " WHERE d.uuid = %s")


def _rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(query, params).fetchall(), key=repr)


@pytest.fixture
def packages(source_db: str, tmp_path) -> Recorder:
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO registry (name, value) VALUES ('main', 1)")
        # two equal notes, and one more
        conn.execute("INSERT INTO note (body, stars) VALUES ('same', NULL), ('same', NULL), "
                     "('other', 3)")
        conn.execute("INSERT INTO doc (uuid, title) VALUES (%s, 'shared'), (%s, 'mine')",
                     (SHARED, uuid.uuid4()))
        conn.execute("INSERT INTO page (doc_id, number) SELECT id, 1 FROM doc")
    rec = Recorder(source_db, str(tmp_path / "packages"))
    rec.full()
    rec.step(lambda c: c.execute("INSERT INTO note (body, stars) VALUES ('late', 1)"))
    rec.segment()
    return rec


def test_rows_the_target_already_has_are_not_duplicated(packages, target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        # the target's own rows hold the source's ids; one registry row equal to the
        # source's, one of the two equal notes, and a document sharing a source uuid
        conn.execute("INSERT INTO registry (name, value) VALUES ('own', 9), ('main', 1)")
        conn.execute("INSERT INTO note (body, stars) VALUES ('mine', 5), ('same', NULL)")
        conn.execute("INSERT INTO doc (uuid, title) VALUES (%s, 'target'), (%s, 'shared')",
                     (uuid.uuid4(), SHARED))
    report = restore(RestoreOptions(target_url=target_db, store=packages.store))
    assert report.mode == "remap"
    assert report.natural_keys["public.doc"] == "uuid (inferred from data)"
    assert set(report.content_matched) >= {"public.registry", "public.note"}
    assert _rows(target_db, "SELECT name, value FROM registry") == [("main", 1), ("own", 9)]
    # the source's two equal notes are two: one matched the target's, one inserted
    assert _rows(target_db, "SELECT body, stars FROM note") == [
        ("late", 1), ("mine", 5), ("other", 3), ("same", None), ("same", None)]
    assert _rows(target_db, "SELECT uuid::text, count(*) FROM doc GROUP BY uuid "
                 "HAVING count(*) > 1") == []
    # the shared document's page points at the target's row with that uuid
    assert _rows(target_db, SHARED_PAGES, (SHARED,)) == [("shared", 1)]
    result = verify(target_db, store=packages.store, allow_extra=True)
    assert result.ok, result.summary()
    # a reference moved to another row is found, and named
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute("UPDATE page SET doc_id = (SELECT id FROM doc WHERE title = 'target')"
                     " WHERE doc_id = (SELECT id FROM doc WHERE title = 'shared')")
    result = verify(target_db, store=packages.store, allow_extra=True)
    assert not result.ok
    assert [t for t, d in result.tables.items() if d.missing] == ["public.page"]


def test_incremental_restore_keeps_matching_as_the_first_restore_decided(packages,
                                                                         target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO note (body, stars) VALUES ('same', NULL)")
        conn.execute("INSERT INTO doc (uuid, title) VALUES (%s, 'shared')", (SHARED,))
    restore(RestoreOptions(target_url=target_db, store=packages.store))
    # a third equal note in the source: the target's copies are all claimed, so it is new
    def work(conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO note (body, stars) VALUES ('same', NULL)")
        conn.execute("INSERT INTO page (doc_id, number) SELECT id, 2 FROM doc WHERE uuid = %s",
                     (SHARED,))

    packages.step(work)
    packages.segment()
    restore(RestoreOptions(target_url=target_db, store=packages.store, incremental=True))
    assert _rows(target_db, "SELECT count(*) FROM note WHERE body = 'same'") == [(3,)]
    assert _rows(target_db, SHARED_PAGES, (SHARED,)) == [("shared", 1), ("shared", 2)]
    assert verify(target_db, store=packages.store, allow_extra=True).ok


def test_an_empty_configured_natural_key_turns_matching_off(packages, target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO registry (name, value) VALUES ('main', 1)")
    restore(RestoreOptions(target_url=target_db, store=packages.store,
                           natural_keys={"registry": ()}))
    assert _rows(target_db, "SELECT name, value FROM registry") == [("main", 1), ("main", 1)]


def test_content_match_takes_each_target_row_once_and_never_one_gone_since(target_db):
    """The target's own rows are the candidates (copied once); each matches one source row
    over all batches, a candidate deleted since matches nothing, and a row the restore
    wrote itself (claimed in the key map) is never taken for the target's."""
    from journal.catalog import Catalog
    from restorer.remap import KeyMap
    from restorer.target_lookup import TargetLookup

    with psycopg.connect(target_db) as conn:
        conn.execute("CREATE TABLE note (id serial PRIMARY KEY, body text NOT NULL, stars int)")
        ids = [r[0] for r in conn.execute(
            "INSERT INTO note (body, stars) VALUES ('same', NULL), ('same', NULL),"
            " ('gone', 2) RETURNING id")]
        catalog = Catalog.parse({"tables": {"public.note": {
            "schema": "public", "name": "note", "primary_key": ["id"],
            "columns": [{"name": "id", "pg_type": "integer", "type_oid": 23,
                         "not_null": True, "default": "nextval('note_id_seq'::regclass)"},
                        {"name": "body", "pg_type": "text", "type_oid": 25, "not_null": True},
                        {"name": "stars", "pg_type": "integer", "type_oid": 23}]}}})
        keymap = KeyMap.in_target(conn, catalog)
        keymap.tracked.add("public.note")
        lookup = TargetLookup(conn, catalog, keymap)
        same = {"id": 100, "body": "same", "stars": None}
        first = lookup.match_content("public.note", [same])
        assert list(first.values()) == [(ids[0],)]
        keymap.set("public.note", (100,), first[0])
        # a row the restore wrote, equal to a later source row: not a candidate
        conn.execute("INSERT INTO note (id, body, stars) VALUES (101, 'gone', 2)")
        keymap.set("public.note", (101,), (101,))
        conn.execute("DELETE FROM note WHERE id = %s", (ids[2],))
        second = lookup.match_content("public.note", [
            {"id": 102, "body": "same", "stars": None}, {"id": 103, "body": "same", "stars": None},
            {"id": 104, "body": "gone", "stars": 2}])
        assert second == {0: (ids[1],)}
