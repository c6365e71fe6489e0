"""Restore into a populated database whose surrogate ids differ: natural-key remapping.

The target already holds the reference data (content types, permissions, groups, some
users, document types) inserted in another order, so every id differs from the source's,
plus rows of its own (an extra user and documents) that occupy ids the source uses.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from journal import sample
from journal.catalog import Catalog
from journal.errors import RestoreError, RestoreRefused
from restorer.generic_keys import resolve_generic_foreign_keys
from restorer.natural_keys import resolve_natural_keys
from restorer.restore import RestoreOptions, restore
from restorer.verify import compare, read_database, verify
from tests.support.restore import Recorder

pytestmark = pytest.mark.integration

GENERIC = {
    "access_control_entry": {"content_type": "content_type_id", "object_id": "object_id"},
    "django_admin_log": {"content_type": "content_type_id", "object_id": "object_id"},
}


def _insert(conn: psycopg.Connection[Any], table: str, row: dict[str, Any],
            skip: tuple[str, ...] = ("id",)) -> int:
    cols = [c for c in row if c not in skip]
    return conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols))), [row[c] for c in cols]
    ).fetchone()[0]


def populate(target: str, source_state: dict[str, Any]) -> dict[str, Any]:
    """Reference data of the source under other ids, and rows of the target's own."""
    with psycopg.connect(target, autocommit=True) as conn:
        sample.create_schema(conn)
        ct_ids = {}
        for row in sorted(source_state["public.django_content_type"].values(),
                          key=lambda r: r["id"], reverse=True):
            ct_ids[row["id"]] = _insert(conn, "django_content_type", row)
        for row in sorted(source_state["public.auth_permission"].values(),
                          key=lambda r: -r["id"]):
            _insert(conn, "auth_permission", {**row, "content_type_id": ct_ids[
                row["content_type_id"]]})
        _insert(conn, "auth_group", {"name": "Target-only group"})
        for row in sorted(source_state["public.auth_group"].values(), key=lambda r: -r["id"]):
            _insert(conn, "auth_group", row)
        users = sorted(source_state["public.auth_user"].values(), key=lambda r: r["id"])
        own_user = _insert(conn, "auth_user", {**users[0], "username": "target-only",
                                               "manager_id": None})
        for row in reversed(users[: len(users) // 2]):
            _insert(conn, "auth_user", {**row, "email": "old@example.org", "manager_id": None})
        for row in source_state["public.document_type"].values():
            if row["id"] % 2:
                _insert(conn, "document_type", row)
        any_type = conn.execute("SELECT min(id) FROM document_type").fetchone()[0]
        doc = next(iter(source_state["public.document"].values()))
        for i in range(3):  # documents of the target's own, holding ids 1..3
            _insert(conn, "document", {**doc, "uuid": f"00000000-0000-0000-0000-00000000000{i}",
                                       "owner_id": own_user, "document_type_id": any_type,
                                       "current_version_id": None})
        return {"own_user": own_user}


@pytest.fixture
def recorded(edms_source: str, tmp_path) -> Recorder:
    rec = Recorder(edms_source, str(tmp_path / "packages"))
    rec.full()
    for i in range(3):
        rec.step(lambda c, seed=i: sample.workload(c, 14, seed=seed))
    rec.segment()
    return rec


def _canonical_diff(rec: Recorder, target: str) -> dict[str, Any]:
    catalog = Catalog.parse(rec.catalog)
    keys = resolve_natural_keys(catalog)
    actual = read_database(target, catalog, sorted(catalog.tables))
    return compare(catalog, rec.state, actual, keys,
                   resolve_generic_foreign_keys(catalog, GENERIC))


def test_every_foreign_key_lands_on_the_row_with_the_same_natural_key(recorded, target_db):
    populate(target_db, recorded.state)
    report = restore(RestoreOptions(target_url=target_db, store=recorded.store,
                                    generic_foreign_keys=GENERIC))
    assert report.mode == "remap"
    assert report.tables["public.django_content_type"].remapped > 0
    assert report.tables["public.document"].remapped >= 3  # ids 1..3 were taken
    diff = _canonical_diff(recorded, target_db)
    # every source row is there, through natural keys; the only extra rows are the
    # target's own (a group, a user, three documents) — except admin log entries about
    # documents deleted in the source, whose stale object id is kept (and reported)
    dangling = _dangling_admin_log(recorded.state)
    assert 0 < report.unresolved_generic_keys <= dangling  # some were deleted after the load
    missing = {t: d.missing for t, d in diff.items() if d.missing}
    assert set(missing) <= {"public.django_admin_log"}
    assert missing.get("public.django_admin_log", 0) <= dangling
    extra = {t: d.extra for t, d in diff.items() if d.extra}
    assert extra.pop("public.django_admin_log", 0) == missing.get("public.django_admin_log", 0)
    assert extra == {"public.auth_group": 1, "public.auth_user": 1, "public.document": 3}
    # no duplicates of the reference data
    with psycopg.connect(target_db) as conn:
        n = conn.execute("SELECT count(*) FROM django_content_type").fetchone()[0]
        assert n == len(recorded.state["public.django_content_type"])
    # the journal's own verify agrees, extra target rows allowed
    result = verify(target_db, store=recorded.store, generic=GENERIC, allow_extra=True)
    assert {t: d.missing for t, d in result.tables.items() if d.missing} == missing


def _recorded_map(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The recorded key map's shape: its columns, its key, and whether a work table of
    the restore outlived it."""
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
        " attrelid = to_regclass('public.journal_restore_keymap') AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum").fetchall()
    constraints = conn.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = to_regclass('public.journal_restore_keymap')").fetchall()
    work = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE"
                        " 'journal\\_restore\\_keymap\\_work%'").fetchone()[0]
    return {"columns": columns,
            "key": [(name, definition) for name, kind, definition in constraints
                    if kind == "p"],
            "named as the work table": sorted(n for n, *_ in constraints if "work" in n),
            "work tables": work}


RECORDED_MAP = {"columns": [("table_name", "text"), ("source_key", "text"),
                            ("target_key", "jsonb")],
                "key": [("journal_restore_keymap_pkey", "PRIMARY KEY (table_name, source_key)")],
                "named as the work table": [], "work tables": 0}
NO_MAP = {"columns": [], "key": [], "named as the work table": [], "work tables": 0}


def _dangling_admin_log(state: dict[str, Any]) -> int:
    docs = {k[0] for k in state["public.document"]}
    ct = {r["id"]: (r["app_label"], r["model"])
          for r in state["public.django_content_type"].values()}
    return sum(1 for r in state["public.django_admin_log"].values()
               if ct[r["content_type_id"]] == ("edms", "document")
               and int(r["object_id"]) not in docs)


def test_on_conflict_skip_keeps_the_targets_rows(recorded, target_db):
    populate(target_db, recorded.state)
    restore(RestoreOptions(target_url=target_db, store=recorded.store, on_conflict="skip",
                           generic_foreign_keys=GENERIC))
    with psycopg.connect(target_db) as conn:
        emails = {r[0] for r in conn.execute(
            "SELECT email FROM auth_user WHERE username <> 'target-only'")}
    assert "old@example.org" in emails  # the matched users were left alone


def test_on_conflict_update_takes_the_sources_values(recorded, target_db):
    populate(target_db, recorded.state)
    restore(RestoreOptions(target_url=target_db, store=recorded.store, on_conflict="update",
                           generic_foreign_keys=GENERIC))
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM auth_user WHERE email = 'old@example.org'"
                            ).fetchone()[0] == 0


def test_on_conflict_fail_refuses_and_leaves_the_target_unchanged(recorded, target_db):
    populate(target_db, recorded.state)
    before = read_database(target_db, Catalog.parse(recorded.catalog),
                           sorted(recorded.catalog["tables"]))
    with pytest.raises(RestoreError, match="already exists in the target"):
        restore(RestoreOptions(target_url=target_db, store=recorded.store, on_conflict="fail",
                               generic_foreign_keys=GENERIC))
    assert read_database(target_db, Catalog.parse(recorded.catalog),
                         sorted(recorded.catalog["tables"])) == before


def test_dry_run_reports_refusals_without_writing(recorded, target_db):
    populate(target_db, recorded.state)
    before = read_database(target_db, Catalog.parse(recorded.catalog),
                           sorted(recorded.catalog["tables"]))
    report = restore(RestoreOptions(target_url=target_db, store=recorded.store,
                                    on_conflict="fail", dry_run=True,
                                    generic_foreign_keys=GENERIC))
    assert report.tables["public.django_content_type"].refused == len(
        recorded.state["public.django_content_type"])
    assert read_database(target_db, Catalog.parse(recorded.catalog),
                         sorted(recorded.catalog["tables"])) == before
    with psycopg.connect(target_db) as conn:
        assert _recorded_map(conn) == NO_MAP


def test_the_recorded_key_map_leads_each_source_row_to_its_target_row(recorded, target_db):
    populate(target_db, recorded.state)
    restore(RestoreOptions(target_url=target_db, store=recorded.store,
                           generic_foreign_keys=GENERIC))
    with psycopg.connect(target_db) as conn:
        assert _recorded_map(conn) == RECORDED_MAP
        # documents are tracked (generic keys point at them): every one has an entry
        mapped = dict(conn.execute(
            "SELECT source_key, target_key ->> 0 FROM journal_restore_keymap"
            " WHERE table_name = 'public.document'").fetchall())
        uuids = dict(conn.execute("SELECT id::text, uuid::text FROM document").fetchall())
    documents = recorded.state["public.document"].values()
    assert len(mapped) == len(documents)
    # the oracle: the source's own rows; the uuid is each document's natural key
    assert {str(d["uuid"]): uuids[mapped[f"[{d['id']}]"]] for d in documents} == {
        str(d["uuid"]): str(d["uuid"]) for d in documents}
    assert any(mapped[f"[{d['id']}]"] != str(d["id"]) for d in documents)  # ids differ


def test_generic_foreign_keys_of_the_django_convention_need_no_configuration(recorded,
                                                                            target_db):
    populate(target_db, recorded.state)
    report = restore(RestoreOptions(target_url=target_db, store=recorded.store))
    assert report.generic_foreign_keys == {
        f"public.{t}.object_id": "content_type_id (detected)"
        for t in ("access_control_entry", "django_admin_log")}
    diff = _canonical_diff(recorded, target_db)
    # as with the configured pairs: only admin log entries about documents the source
    # deleted differ, and they are reported per column
    dangling = _dangling_admin_log(recorded.state)
    missing = {t: d.missing for t, d in diff.items() if d.missing}
    assert set(missing) <= {"public.django_admin_log"}
    assert missing.get("public.django_admin_log", 0) <= dangling
    assert report.dangling_generic_keys.get("public.django_admin_log.object_id", 0) >= \
        missing.get("public.django_admin_log", 0)


def test_strict_refuses_generic_references_to_nothing(recorded, target_db):
    populate(target_db, recorded.state)
    # the seeded workload deletes documents that admin log entries name
    assert _dangling_admin_log(recorded.state) > 0
    with pytest.raises(RestoreRefused, match=r"public\.django_admin_log\.object_id: \d+"):
        restore(RestoreOptions(target_url=target_db, store=recorded.store, strict=True))


@pytest.mark.parametrize("kept_as", ["text", "jsonb"])
def test_incremental_restore_into_populated_target_follows_the_key_map(recorded, target_db,
                                                                       kept_as):
    populate(target_db, recorded.state)
    restore(RestoreOptions(target_url=target_db, store=recorded.store,
                           generic_foreign_keys=GENERIC))
    with psycopg.connect(target_db, autocommit=True) as conn:
        assert _recorded_map(conn) == RECORDED_MAP
        if kept_as == "jsonb":  # as targets restored by earlier versions keep it
            conn.execute("ALTER TABLE journal_restore_keymap ALTER COLUMN source_key"
                         " TYPE jsonb USING source_key::jsonb")
    for i in range(2):
        recorded.step(lambda c, seed=100 + i: sample.workload(c, 14, seed=seed))
    recorded.segment()
    restore(RestoreOptions(target_url=target_db, store=recorded.store, incremental=True,
                           generic_foreign_keys=GENERIC))
    diff = _canonical_diff(recorded, target_db)
    missing = {t: d.missing for t, d in diff.items() if d.missing}
    assert set(missing) <= {"public.django_admin_log"}  # stale object ids, as above
    assert missing.get("public.django_admin_log", 0) <= _dangling_admin_log(recorded.state)
    extra = {t: d.extra for t, d in diff.items() if d.extra}
    extra.pop("public.django_admin_log", None)
    assert extra == {"public.auth_group": 1, "public.auth_user": 1, "public.document": 3}
    with psycopg.connect(target_db) as conn:  # the map recorded anew, in today's format
        assert _recorded_map(conn) == RECORDED_MAP


def test_unique_violation_names_constraint_detail_and_source_row(recorded, target_db):
    users = list(recorded.state["public.auth_user"].values())
    emails = [u["email"] for u in users]
    victim = next(u for u in users if emails.count(u["email"]) == 1)
    with psycopg.connect(target_db, autocommit=True) as conn:
        sample.create_schema(conn)
        _insert(conn, "auth_user", {**victim, "username": "someone-else", "manager_id": None})
        # the target is stricter than the source: emails are unique there
        conn.execute("CREATE UNIQUE INDEX auth_user_email_uniq ON auth_user (email)")
    with pytest.raises(RestoreRefused) as err:
        restore(RestoreOptions(target_url=target_db, store=recorded.store))
    text = str(err.value)
    assert err.value.exit_code == 3
    assert "auth_user_email_uniq" in text
    assert f"DETAIL: Key (email)=({victim['email']}) already exists" in text
    assert f"source row id={victim['id']!r}" in text
    assert '[natural_keys]\n"public.auth_user" = ["email"]' in text
    with psycopg.connect(target_db) as conn:  # and nothing was written
        assert conn.execute("SELECT count(*) FROM auth_user").fetchone()[0] == 1
        assert _recorded_map(conn) == NO_MAP
