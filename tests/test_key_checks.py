"""Foreign keys checked once per constraint (``restorer.key_checks``), on a real server: the
rows a load adds with the referencing side's triggers off are held to PostgreSQL's own
rules afterwards (MATCH SIMPLE and FULL, several columns), and where they cannot be checked
once the triggers stay on and PostgreSQL checks each row."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from journal.errors import RestoreRefused
from restorer.key_checks import foreign_keys_checked_once

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, a int, b text, UNIQUE (a, b));
CREATE TABLE child (id int PRIMARY KEY,
    parent_id int CONSTRAINT child_parent REFERENCES parent (id) DEFERRABLE,
    pa int, pb text,
    CONSTRAINT child_pair FOREIGN KEY (pa, pb) REFERENCES parent (a, b) MATCH FULL);
CREATE TABLE side (id int PRIMARY KEY,
    parent_id int CONSTRAINT side_parent REFERENCES parent (id));
INSERT INTO parent VALUES (1, 10, 'x'), (2, 20, 'y');
"""
INCOMING = {"public.child": 100, "public.side": 100}
LOCKED = ("public.child", "public.parent", "public.side")


@pytest.fixture
def conn(target_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(target_db, autocommit=True) as c:
        c.execute(SCHEMA)
    with psycopg.connect(target_db) as c:
        yield c
        c.rollback()


def _enabled(conn: psycopg.Connection[Any], table: str) -> set[str]:
    """The states of ``table``'s foreign-key check triggers ('O' on, 'D' off)."""
    return {r[0] for r in conn.execute(
        "SELECT t.tgenabled FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE t.tgrelid = %s::regclass AND p.proname LIKE 'RI_FKey_check_%%'", (table,))}


def test_rows_that_keep_the_rules_pass_and_the_triggers_come_back(conn):
    with foreign_keys_checked_once(conn, INCOMING, LOCKED) as keys:
        assert {k.name for k in keys} == {"child_parent", "child_pair", "side_parent"}
        assert _enabled(conn, "child") == {"D"} and _enabled(conn, "side") == {"D"}
        # MATCH SIMPLE passes a null column, MATCH FULL all columns null
        conn.execute("INSERT INTO child VALUES (1, 1, 10, 'x'), (2, NULL, NULL, NULL),"
                     " (3, 2, 20, 'y')")
        conn.execute("INSERT INTO side VALUES (1, 2), (2, NULL)")
    assert _enabled(conn, "child") == {"O"} and _enabled(conn, "side") == {"O"}
    # enabled again means checked row by row again, in this very transaction
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO side VALUES (3, 99)")


@pytest.mark.parametrize("row, named", [
    ((1, 7, None, None), "child_parent': key (parent_id)=(7) is not present"),
    ((1, 1, 10, "z"), "child_pair': key (pa, pb)=(10, z) is not present"),
    # MATCH FULL: one null column among set ones breaks it, referenced or not
    ((1, 1, 10, None), "child_pair': key (pa, pb)=(10, null)"),
])
def test_a_row_without_its_referenced_row_refuses(conn, row, named):
    with pytest.raises(RestoreRefused, match=re.escape(
            f"public.child would violate foreign key constraint '{named}")):
        with foreign_keys_checked_once(conn, INCOMING, LOCKED):
            conn.execute("INSERT INTO child VALUES (%s, %s, %s, %s)", row)


def test_keys_that_cannot_be_checked_once_stay_checked_row_by_row(conn):
    # side's parent is not held against writers; child already holds many rows
    conn.execute("INSERT INTO child SELECT g, 1, NULL, NULL FROM generate_series(1, 1000) g")
    conn.execute("ANALYZE child")
    conn.execute("ALTER TABLE side DISABLE TRIGGER ALL")  # the target's own choice: left so
    conn.execute("ALTER TABLE side ENABLE TRIGGER ALL")
    conn.execute("ALTER TABLE child ADD CONSTRAINT child_loose FOREIGN KEY (id)"
                 " REFERENCES parent (id) NOT VALID")  # never validated: its rows unchecked
    with foreign_keys_checked_once(conn, {"public.child": 10, "public.side": 100},
                                   ("public.child", "public.side")) as keys:
        assert keys == []
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            with conn.transaction():
                conn.execute("INSERT INTO side VALUES (1, 99)")
    with foreign_keys_checked_once(conn, {"public.child": 1000, "public.side": 100},
                                   LOCKED) as keys:
        assert {k.name for k in keys} == {"child_parent", "child_pair", "side_parent"}


def test_a_role_that_may_not_disable_them_keeps_the_row_checks(conn):
    role = f"restorer_{uuid.uuid4().hex[:8]}"  # rolled back with the rest
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(
        sql.Identifier(role)))
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    with foreign_keys_checked_once(conn, INCOMING, LOCKED) as keys:
        assert keys == []
        assert _enabled(conn, "child") == {"O"}


def test_deferred_events_pending_on_the_table_are_fired_before_enabling(conn):
    # a deferred trigger of the table's own queues an event per row; PostgreSQL will not
    # alter a table with events pending: they are fired first, as the commit would
    conn.execute("CREATE TABLE fired (n int)")
    conn.execute("CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS"
                 " $$BEGIN INSERT INTO fired VALUES (NEW.id); RETURN NULL; END$$")
    conn.execute("CREATE CONSTRAINT TRIGGER noted AFTER INSERT ON child DEFERRABLE"
                 " INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION note()")
    conn.execute("SET CONSTRAINTS ALL DEFERRED")
    with foreign_keys_checked_once(conn, INCOMING, LOCKED):
        conn.execute("INSERT INTO child VALUES (1, 1, 10, 'x'), (2, 2, NULL, NULL)")
        assert conn.execute("SELECT count(*) FROM fired").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM fired").fetchone() == (2,)
    assert _enabled(conn, "child") == {"O"}
    # the restore's mode is back: a deferred key's row waits for the commit
    conn.execute("INSERT INTO child VALUES (3, 99, NULL, NULL)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
