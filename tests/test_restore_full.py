"""Restore into an empty database: full, point-in-time, incremental, and its failure modes.

Against the real PostgreSQL 18 server; packages are built from a real source database by
``tests.support.restore.Recorder``.
"""

from __future__ import annotations

import random
import tarfile
from typing import Any

import psycopg
import pytest

from journal import sample
from journal.errors import RestoreError, ValidationError
from journal.events import micros_to_datetime
from restorer.restore import RestoreOptions, restore
from tests.support.databases import scratch_database
from tests.support.restore import Recorder, read_state

pytestmark = pytest.mark.integration


def _state(url: str) -> dict[str, Any]:
    return read_state(url)


@pytest.fixture
def recorded(edms_source: str, tmp_path) -> Recorder:
    """Full package, then 3 segments of 4 workload steps each (one mark per segment)."""
    rec = Recorder(edms_source, str(tmp_path / "packages"))
    rec.full()
    for s in range(3):
        for i in range(4):
            rec.step(lambda c, seed=10 * s + i: sample.workload(c, 14, seed=seed),
                     mark=f"mark-{s}-{i}" if i == 2 else None)
        rec.segment()
    return rec


def _options(rec: Recorder, target: str, **kw: Any) -> RestoreOptions:
    return RestoreOptions(target_url=target, store=rec.store, **kw)


def test_full_restore_into_empty_database_equals_source(recorded, target_db):
    report = restore(_options(recorded, target_db))
    assert report.mode == "empty"
    assert report.transactions_replayed == 12
    assert _state(target_db) == recorded.state
    # sequences were moved past the highest id: a new row does not collide
    with psycopg.connect(target_db) as conn:
        new_id = conn.execute("INSERT INTO document_type (name, retention_days) "
                              "VALUES ('new', 1) RETURNING id").fetchone()[0]
    assert new_id > max(k[0] for k in recorded.state["public.document_type"])


@pytest.mark.slow
def test_point_in_time_targets_equal_the_recorded_source_states(recorded, pg18_server):
    rng = random.Random(4)
    points = recorded.points
    kinds = ["time", "lsn", "xid", "mark"]
    cases = []
    for i in range(20):
        kind = kinds[i % 4]
        if kind == "mark":
            point = rng.choice([p for p in points if p["mark"]])
            cases.append(({"to_mark": point["mark"]}, point))
            continue
        point = rng.choice(points[:-1])  # a time needs a later commit to be covered
        if kind == "time":
            cases.append(({"to_time": micros_to_datetime(point["commit_ts"])}, point))
        elif kind == "lsn":
            cases.append(({"to_lsn": point["lsn"]}, point))
        else:
            cases.append(({"to_xid": point["xid"]}, point))
    for options, point in cases:
        with scratch_database(pg18_server, "pitr") as target:
            restore(_options(recorded, target, **options))
            assert _state(target) == point["state"], options


def test_time_between_commits_stops_before_the_next_commit(recorded, target_db):
    first, second = recorded.points[4], recorded.points[5]
    middle = (first["commit_ts"] + second["commit_ts"]) // 2
    restore(_options(recorded, target_db, to_time=micros_to_datetime(middle)))
    assert _state(target_db) == first["state"]


def test_incremental_restore_in_three_steps_equals_one_full_restore(recorded, target_db):
    points = recorded.points
    restore(_options(recorded, target_db, to_lsn=points[2]["lsn"]))
    assert _state(target_db) == points[2]["state"]
    restore(_options(recorded, target_db, to_lsn=points[7]["lsn"], incremental=True))
    assert _state(target_db) == points[7]["state"]
    report = restore(_options(recorded, target_db, incremental=True))
    assert _state(target_db) == recorded.state
    assert report.transactions_replayed == 4
    again = restore(_options(recorded, target_db, incremental=True))
    assert again.mode == "noop" and again.transactions_replayed == 0
    repeat = restore(_options(recorded, target_db))  # the same restore again: a no-op
    assert repeat.mode == "noop"
    assert _state(target_db) == recorded.state


def test_restore_into_already_restored_target_without_incremental_is_refused(recorded,
                                                                           target_db):
    restore(_options(recorded, target_db, to_lsn=recorded.points[2]["lsn"]))
    with pytest.raises(RestoreError, match="--incremental"):
        restore(_options(recorded, target_db))


def test_failure_mid_restore_leaves_target_unchanged(recorded, target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep_me (id int)")
        conn.execute("INSERT INTO keep_me VALUES (1)")

    def fail(conn: psycopg.Connection[Any]) -> None:
        raise RuntimeError("injected failure between load and replay")

    with pytest.raises(RuntimeError, match="injected"):
        restore(_options(recorded, target_db, before_replay=fail))
    with psycopg.connect(target_db) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"keep_me"}


def test_failure_inside_replay_leaves_target_unchanged(recorded, target_db):
    # a trigger that fails on the 5th replayed document change (an ordered replay: a
    # net-change one writes each row once, before this hook)
    def arm(conn: psycopg.Connection[Any]) -> None:
        conn.execute("CREATE SEQUENCE boom_seq")
        conn.execute(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('boom_seq') = 5 THEN RAISE EXCEPTION 'injected'; END IF; "
            "RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON document "
                     "FOR EACH ROW EXECUTE FUNCTION boom()")

    with pytest.raises(RestoreError, match="unchanged"):
        restore(_options(recorded, target_db, before_replay=arm, replay="ordered"))
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone()[0] == 0


def test_corrupt_package_is_refused_before_the_target_is_touched(recorded, target_db):
    seg = recorded.store.list()[-1]
    path = recorded.store.path(seg.package_id)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        member = tar.getmember("events.avro")
    data[member.offset_data + member.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match="failed verification"):
        restore(_options(recorded, target_db))
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                            "'public'::regnamespace").fetchone()[0] == 0


def test_package_with_valid_checksums_but_an_undecodable_record_leaves_target_unchanged(
        recorded, target_db):
    # a package written that way (not damaged later): every SHA-256 matches its manifest,
    # so only decoding finds it, which the restore does inside its one transaction
    from journal.packages import PackageBuilder

    store = recorded.store
    seg = store.list()[-1]
    with store.open(seg.package_id) as reader:
        raw = list(reader.raw_records())
    builder = PackageBuilder("segment", store.workdir())
    events = builder.events()
    for i, (position, key, value) in enumerate(raw):
        events.write(position, key, value[:-3] if i == len(raw) - 2 else value)
    builder.add_schemas(seg.schemas)
    tmp, _ = builder.finish(
        system_identifier=seg.system_identifier, database=seg.database,
        generation=seg.generation, from_position=seg.from_position,
        to_position=seg.to_position, first_commit_ts=seg.first_commit_ts,
        last_commit_ts=seg.last_commit_ts, parent_id=seg.parent_id, catalog=seg.catalog,
        marks=seg.marks)
    store.delete(seg.package_id)
    store.put(tmp)
    with pytest.raises(ValidationError, match="nothing was restored.*unchanged"):
        restore(_options(recorded, target_db))
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                            "'public'::regnamespace").fetchone()[0] == 0


def test_dry_run_changes_nothing_and_reports_what_it_would_do(recorded, target_db):
    report = restore(_options(recorded, target_db, dry_run=True))
    assert report.dry_run
    assert report.tables["public.document"].inserted > 0
    assert report.tables["public.document"].after == len(recorded.state["public.document"])
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                            "'public'::regnamespace").fetchone()[0] == 0


def test_target_outside_coverage_is_refused(recorded, target_db):
    with pytest.raises(RestoreError, match="beyond what the packages cover"):
        restore(_options(recorded, target_db, to_lsn=recorded.position.commit_lsn + 10_000))
    with pytest.raises(RestoreError, match="no mark named"):
        restore(_options(recorded, target_db, to_mark="never-written"))


def test_subset_restore_brings_exactly_the_closure_of_requested_rows(recorded, target_db):
    restore(_options(recorded, target_db, tables=("document_version",)))
    got = _state(target_db)
    src = recorded.state
    assert got["public.document_version"] == src["public.document_version"]
    doc_ids = {r["document_id"] for r in src["public.document_version"].values()}
    # documents referenced by a version, plus documents their current version pulls in
    docs = got["public.document"]
    assert {k[0] for k in docs} >= doc_ids
    for key, row in docs.items():
        assert row == src["public.document"][key]
    owners = {r["owner_id"] for r in docs.values()}
    managers = set()
    todo = set(owners)
    while todo:  # the owners' chain of managers is referenced too
        uid = todo.pop()
        m = src["public.auth_user"][(uid,)]["manager_id"]
        if m is not None and m not in managers | owners:
            managers.add(m)
            todo.add(m)
    assert {k[0] for k in got["public.auth_user"]} == owners | managers
    assert "public.document_tags" not in got  # not referenced by the subset: not created


def _sequences(url: str) -> dict[str, tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences "
            "WHERE schemaname = 'public' ORDER BY 1")]
        return {n: tuple(conn.execute(  # type: ignore[misc]
            f"SELECT last_value, is_called FROM {n}").fetchone()) for n in names}  # noqa: S608


def test_sequences_end_where_the_sources_stood_not_at_the_highest_id(edms_source,
                                                                     tmp_path, target_db,
                                                                     pg18_server):
    with psycopg.connect(edms_source, autocommit=True) as conn:
        # ids handed out and never used (a rolled-back insert): the source's sequence is
        # past max(id), and a restored copy must not hand those ids out again
        conn.execute("SELECT nextval(pg_get_serial_sequence('public.document_type', 'id')) "
                     "FROM generate_series(1, 25)")
    rec = Recorder(edms_source, str(tmp_path / "packages"))
    rec.full()
    expected = _sequences(edms_source)
    restore(_options(rec, target_db))
    assert _sequences(target_db) == expected
    # into a live target whose own sequence is further on, never backwards
    with scratch_database(pg18_server, "live") as live:
        with psycopg.connect(live, autocommit=True) as conn:
            sample.create_schema(conn)
            conn.execute("SELECT setval(pg_get_serial_sequence('public.document_type', 'id'),"
                         " 100000)")
        restore(_options(rec, live))
        assert _sequences(live)["public.document_type_id_seq"] == (100000, True)


def test_updates_of_a_table_with_an_always_identity_are_replayed(source_db, tmp_path,
                                                                  target_db):
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE item (code text PRIMARY KEY, "
                     "n int GENERATED ALWAYS AS IDENTITY, name text NOT NULL)")
        conn.execute("INSERT INTO item (code, name) SELECT 'c' || i, 'n' || i "
                     "FROM generate_series(1, 5) i")
    rec = Recorder(source_db, str(tmp_path / "packages"))
    rec.full()
    rec.step(lambda c: c.execute("UPDATE item SET name = name || '!' WHERE n <= 2"))
    rec.segment()
    restore(_options(rec, target_db))
    query = "SELECT code, n, name FROM item ORDER BY code"
    with psycopg.connect(source_db) as a, psycopg.connect(target_db) as b:
        assert b.execute(query).fetchall() == a.execute(query).fetchall()


@pytest.mark.parametrize(("options", "expected"), [("", "128MB"),
                                                   ("-c temp_buffers=300MB", "300MB")])
def test_the_restore_session_gets_local_buffers_for_its_temporary_tables(
        recorded, target_db, options, expected):
    seen = []

    def look(conn: psycopg.Connection[Any]) -> None:
        seen.append(conn.execute("SHOW temp_buffers").fetchone()[0])

    url = f"{target_db}?options={options.replace(' ', '%20').replace('=', '%3D')}" \
        if options else target_db
    restore(_options(recorded, url, before_replay=look, replay="ordered"))
    assert seen == [expected]
    assert _state(target_db) == recorded.state
