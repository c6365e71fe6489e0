"""Natural-key restore into a populated database, table by table in SQL.

The staged path (``restorer.staged_remap``) makes every decision of the per-row path as
one statement over a table's staged rows. These tests hold it to two oracles the restore
does not provide: the source's rows read by SQL, canonical through natural keys (so ids
may differ), and the per-row path itself, forced, which must leave the very same target
(ids, fresh ids included) and report the same counts.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

import restorer.load
import restorer.restore
from journal.errors import RestoreRefused
from restorer.restore import RestoreOptions, restore
from tests.support.databases import scratch_database
from tests.support.restore import Recorder, recorded_full

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE kind (id serial PRIMARY KEY, code text NOT NULL UNIQUE, label text NOT NULL);
CREATE TABLE item (id bigserial PRIMARY KEY, ref uuid NOT NULL UNIQUE,
                   kind_id int NOT NULL REFERENCES kind (id), email text UNIQUE,
                   title text NOT NULL, head_id int);
CREATE TABLE part (id serial PRIMARY KEY, item_id bigint NOT NULL REFERENCES item (id),
                   n int NOT NULL, body text, UNIQUE (item_id, n));
ALTER TABLE item ADD FOREIGN KEY (head_id) REFERENCES part (id)
    DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE tag (id serial PRIMARY KEY, word text NOT NULL, weight int);
CREATE TABLE item_tag (id serial PRIMARY KEY, item_id bigint NOT NULL REFERENCES item (id),
                       tag_id int NOT NULL REFERENCES tag (id));
"""
REFS = [uuid.UUID(int=i + 1) for i in range(40)]
TABLES = ("kind", "item", "part", "tag", "item_tag")

# Every table canonical, ids replaced by what they mean: the oracle on both sides.
CANONICAL = {
    "kind": "SELECT code, label FROM kind",
    "item": "SELECT i.ref::text, k.code, i.email, i.title, h.n, hi.ref::text FROM item i"
            " JOIN kind k ON k.id = i.kind_id LEFT JOIN part h ON h.id = i.head_id"
            " LEFT JOIN item hi ON hi.id = h.item_id",
    "part": "SELECT i.ref::text, p.n, p.body FROM part p JOIN item i ON i.id = p.item_id",
    "tag": "SELECT word, weight FROM tag",
    "item_tag": "SELECT i.ref::text, t.word, t.weight FROM item_tag x"
                " JOIN item i ON i.id = x.item_id JOIN tag t ON t.id = x.tag_id",
}


def canonical(url: str) -> dict[str, Counter[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: Counter(map(tuple, conn.execute(q).fetchall()))
                for t, q in CANONICAL.items()}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(
            sql.Identifier(t))).fetchall() for t in TABLES}


def fill_source(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO kind (code, label) SELECT 'k' || g, 'Kind ' || g"
                 " FROM generate_series(1, 6) g")
    with conn.transaction():
        for i, ref in enumerate(REFS):
            item = conn.execute(
                "INSERT INTO item (ref, kind_id, email, title) VALUES (%s, %s, %s, %s)"
                " RETURNING id", (ref, i % 6 + 1, f"u{i}@example.org" if i % 3 else None,
                                  f"source {i}")).fetchone()[0]
            parts = [conn.execute("INSERT INTO part (item_id, n, body) VALUES (%s, %s, %s)"
                                  " RETURNING id", (item, n, f"p{i}.{n}")).fetchone()[0]
                     for n in range(i % 3 + 1)]
            conn.execute("UPDATE item SET head_id = %s WHERE id = %s", (parts[-1], item))
    # equal tags: a multiset, matched by content
    conn.execute("INSERT INTO tag (word, weight) VALUES ('red', 1), ('red', 1), ('red', 1),"
                 " ('blue', NULL), ('green', 2)")
    conn.execute("INSERT INTO item_tag (item_id, tag_id) SELECT i.id, t.id FROM item i"
                 " JOIN tag t ON (i.id + t.id) % 4 = 0")


def fill_target(conn: psycopg.Connection[Any], clash_email: bool = False) -> None:
    """The target's own rows under ids the source uses, some sharing natural keys."""
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO kind (code, label) VALUES ('own', 'Own kind'), ('k4', 'Old 4'),"
                 " ('k2', 'Old 2')")
    for i in (3, 0, 17, 39):  # source items, other ids, other values
        conn.execute("INSERT INTO item (ref, kind_id, title) VALUES (%s, 1, %s)",
                     (REFS[i], f"target {i}"))
    for i in range(5):  # the target's own items, on ids the source uses
        conn.execute("INSERT INTO item (ref, kind_id, title) VALUES (%s, 2, 'own')",
                     (uuid.UUID(int=1000 + i),))
    conn.execute("INSERT INTO part (item_id, n, body) SELECT id, 0, 'target part' FROM item")
    conn.execute("INSERT INTO tag (word, weight) VALUES ('red', 1), ('blue', NULL),"
                 " ('blue', NULL), ('own', 9)")
    if clash_email:  # another row of the target holds a source row's unique email
        conn.execute("INSERT INTO item (ref, kind_id, email, title) VALUES (%s, 1,"
                     " 'u5@example.org', 'clash')", (uuid.UUID(int=2000),))


@pytest.fixture
def packages(source_db: str, tmp_path) -> Recorder:
    return recorded_full(source_db, str(tmp_path / "packages"), fill_source)


def _restore(rec: Recorder, target: str, **options: Any) -> Any:
    return restore(RestoreOptions(target_url=target, store=rec.store, **options))


@pytest.fixture
def staged(monkeypatch) -> list[str]:
    """The tables the staged path wrote, in order."""
    written: list[str] = []
    real = restorer.load.write_staged

    def spy(writer: Any, table: str, rows: Any, deferred: frozenset[str] = frozenset(),
            package: Any = None) -> int:
        written.append(table)
        return real(writer, table, rows, deferred, package)

    monkeypatch.setattr(restorer.load, "write_staged", spy)
    return written


def _per_row(rec: Recorder, server: str, fill: Any, monkeypatch, staged: list[str],
             dumper: Any, **options: Any) -> tuple[Any, Any]:
    """The same restore into a target filled by ``fill``, every table forced through the
    per-row path: its report and ``dumper``'s view of the target."""
    monkeypatch.setattr(restorer.load, "why_not_staged", lambda *a: "forced")
    staged.clear()
    with scratch_database(server) as other:
        with psycopg.connect(other, autocommit=True) as conn:
            fill(conn)
        report = _restore(rec, other, **options)
        assert staged == []
        return report, dumper(other)


def _expected(source: dict[str, Counter], before: dict[str, Counter], keyed: dict[str, int],
              update: bool) -> dict[str, Counter]:
    """What the target must hold: a target row sharing a natural key (``keyed``: the key's
    width in the canonical row) with a source row is that source row (updated) or stays
    (skipped); the others are all kept; rows without a key count as a multiset, the
    larger count of each content."""
    out = {}
    for t in source:
        if t not in keyed:
            out[t] = source[t] | before[t]
            continue
        w = keyed[t]
        src = {row[:w]: row for row in source[t]}
        tgt = {row[:w]: row for row in before[t]}
        rows = {**tgt, **src} if update else {**src, **tgt}
        out[t] = Counter(rows.values())
    return out


def _counts(report: Any) -> list[tuple[str, str, int]]:
    return sorted((t, k, v) for t, c in report.tables.items() for k, v in vars(c).items())


KEYED = {"kind": 1, "item": 1, "part": 2}


@pytest.mark.parametrize("on_conflict", ["update", "skip"])
def test_staged_restore_equals_the_source_through_natural_keys(packages, target_db, staged,
                                                               on_conflict):
    with psycopg.connect(target_db, autocommit=True) as conn:
        fill_target(conn)
    before = canonical(target_db)
    report = _restore(packages, target_db, on_conflict=on_conflict)
    assert report.mode == "remap"
    assert {f"public.{t}" for t in ("kind", "item", "part", "tag", "item_tag")} <= set(staged)
    got = canonical(target_db)
    expected = _expected(canonical(packages.url), before, KEYED, on_conflict == "update")
    # item_tag references content-matched tags: each source link lands on a tag of the
    # same content; the links themselves are source rows (no natural key of their own)
    assert got["item_tag"] == canonical(packages.url)["item_tag"]
    for t in ("kind", "item", "part", "tag"):
        assert got[t] == expected[t], t
    items = report.tables["public.item"]
    assert items.remapped >= 4 and items.inserted == 36
    assert (items.updated if on_conflict == "update" else items.skipped) == 4
    # the target's own items kept their ids; the source's that clashed got fresh ones
    with psycopg.connect(target_db) as conn:
        own = conn.execute("SELECT id FROM item WHERE title = 'own' ORDER BY id").fetchall()
        assert [r[0] for r in own] == [5, 6, 7, 8, 9]
        last = conn.execute("SELECT last_value FROM item_id_seq").fetchone()[0]
        assert last >= conn.execute("SELECT max(id) FROM item").fetchone()[0]


def test_foreign_keys_are_checked_once_per_constraint(packages, target_db, monkeypatch):
    """The load writes with the referencing side's check triggers off, then checks each
    constraint once and turns them on again: the target's triggers end as they were."""
    seen: dict[str, Any] = {}
    real = restorer.restore.foreign_keys_checked_once

    @contextmanager
    def spy(conn: Any, incoming: Any, locked: Any) -> Iterator[Any]:
        with real(conn, incoming, locked) as keys:
            seen["keys"] = {k.name for k in keys}
            seen["off"] = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgenabled = 'D'").fetchone()[0]
            yield keys

    monkeypatch.setattr(restorer.restore, "foreign_keys_checked_once", spy)
    triggers = "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger ORDER BY 1, 2"
    with psycopg.connect(target_db, autocommit=True) as conn:
        fill_target(conn)
        before = conn.execute(triggers).fetchall()
    target_before = canonical(target_db)
    _restore(packages, target_db)
    assert seen["keys"] == {"item_kind_id_fkey", "item_head_id_fkey", "part_item_id_fkey",
                            "item_tag_item_id_fkey", "item_tag_tag_id_fkey"}
    assert seen["off"] == 2 * len(seen["keys"])  # a key's insert and update checks
    with psycopg.connect(target_db) as conn:
        assert conn.execute(triggers).fetchall() == before
    expected = _expected(canonical(packages.url), target_before, KEYED, True)
    got = canonical(target_db)
    for t in ("kind", "item", "part"):
        assert got[t] == expected[t], t


def test_a_row_breaking_a_key_checked_once_refuses_and_writes_nothing(packages, target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        fill_target(conn)
        # a key only the target has, which the source's parts (n from 0) do not keep
        conn.execute("DELETE FROM part")
        conn.execute("ALTER TABLE part ADD CONSTRAINT part_n_kind FOREIGN KEY (n)"
                     " REFERENCES kind (id)")
    before = dump(target_db)
    with pytest.raises(RestoreRefused, match=re.escape(
            "public.part would violate foreign key constraint 'part_n_kind': key (n)=(0)")):
        _restore(packages, target_db)
    assert dump(target_db) == before


@pytest.mark.parametrize("on_conflict", ["update", "skip"])
def test_staged_and_per_row_paths_leave_the_same_target(packages, pg18_server, staged,
                                                        monkeypatch, target_db, on_conflict):
    with psycopg.connect(target_db, autocommit=True) as conn:
        fill_target(conn)
    report = _restore(packages, target_db, on_conflict=on_conflict)
    assert "public.item" in staged
    reference, other = _per_row(packages, pg18_server, fill_target, monkeypatch, staged, dump,
                                on_conflict=on_conflict)
    assert dump(target_db) == other
    assert _counts(report) == _counts(reference)


def test_dry_run_and_refusal_count_as_the_per_row_path(packages, pg18_server, staged,
                                                       monkeypatch, target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        fill_target(conn)
    before = dump(target_db)
    rehearsal = _restore(packages, target_db, on_conflict="fail", dry_run=True)
    assert dump(target_db) == before
    assert rehearsal.tables["public.item"].refused == 4
    assert rehearsal.tables["public.tag"].refused == 2  # a red, a blue
    with pytest.raises(RestoreRefused) as refused:
        _restore(packages, target_db, on_conflict="fail")
    assert "kind" in str(refused.value) and "k2" in str(refused.value)
    assert dump(target_db) == before
    reference, other = _per_row(packages, pg18_server, fill_target, monkeypatch, staged, dump,
                                on_conflict="fail", dry_run=True)
    assert other == before
    assert _counts(rehearsal) == _counts(reference)


def test_a_unique_violation_names_the_source_row_and_writes_nothing(packages, target_db,
                                                                    staged):
    with psycopg.connect(target_db, autocommit=True) as conn:
        fill_target(conn, clash_email=True)
    before = dump(target_db)
    with pytest.raises(RestoreRefused) as refused:
        _restore(packages, target_db)
    message = str(refused.value)
    assert "public.item" in message and "u5@example.org" in message
    with psycopg.connect(packages.url) as conn:
        source_id = conn.execute("SELECT id FROM item WHERE email = 'u5@example.org'"
                                 ).fetchone()[0]
    assert f"id={source_id}" in message or f"'id': {source_id}" in message, message
    assert dump(target_db) == before


GENERIC_SCHEMA = """
CREATE TABLE django_content_type (id serial PRIMARY KEY, app_label text NOT NULL,
                                  model text NOT NULL, UNIQUE (app_label, model));
CREATE TABLE app_thing (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE app_blob (id uuid PRIMARY KEY, label text NOT NULL);
CREATE TABLE comment (id serial PRIMARY KEY, body text NOT NULL,
                      content_type_id int REFERENCES django_content_type (id),
                      object_id text);
CREATE TABLE app_reply (id serial PRIMARY KEY, comment_id int NOT NULL REFERENCES comment (id),
                        word text NOT NULL UNIQUE);
"""
GENERIC = {"public.comment": {"content_type": "content_type_id", "object_id": "object_id"}}
BLOBS = [uuid.UUID(int=(7 << 120) + i) for i in range(4)]

# each comment with what its pair names: the model and the object's own content
GENERIC_CANONICAL = """
SELECT c.body, ct.model, coalesce(t.name, b.label, r.word) FROM comment c
LEFT JOIN django_content_type ct ON ct.id = c.content_type_id
LEFT JOIN app_thing t ON ct.model = 'thing' AND t.id::text = btrim(c.object_id, ' +')
LEFT JOIN app_blob b ON ct.model = 'blob' AND b.id::text = lower(btrim(c.object_id, '{}'))
LEFT JOIN app_reply r ON ct.model = 'reply' AND r.id::text = c.object_id
"""


def _generic_source(conn: psycopg.Connection[Any]) -> None:
    conn.execute(GENERIC_SCHEMA)
    conn.execute("INSERT INTO django_content_type (app_label, model) VALUES ('app', 'thing'),"
                 " ('app', 'blob'), ('app', 'reply'), ('gone', 'model')")
    conn.execute("INSERT INTO app_thing (name) SELECT 'thing ' || g FROM generate_series(1, 8) g")
    for i, b in enumerate(BLOBS):
        conn.execute("INSERT INTO app_blob VALUES (%s, %s)", (b, f"blob {i}"))
    objects = [  # canonical spellings, odd ones Python's int() and UUID() read, dangling
        (1, "3"), (1, "7"), (1, " 5"), (1, "+2"), (1, "99"), (2, str(BLOBS[1])),
        (2, "{" + str(BLOBS[2]).upper() + "}"), (2, str(uuid.UUID(int=1))), (4, "1"),
        (None, None), (1, None), (3, "1"), (3, "2")]
    for i, (ct, obj) in enumerate(objects):
        conn.execute("INSERT INTO comment (body, content_type_id, object_id) VALUES"
                     " (%s, %s, %s)", (f"comment {i}", ct, obj))
    # replies load after comments: comments pointing at them wait for them
    conn.execute("INSERT INTO app_reply (comment_id, word) VALUES (1, 'yes'), (2, 'no')")


def _generic_target(conn: psycopg.Connection[Any]) -> None:
    conn.execute(GENERIC_SCHEMA)
    conn.execute("INSERT INTO django_content_type (app_label, model) VALUES ('own', 'x'),"
                 " ('app', 'reply'), ('app', 'blob'), ('app', 'thing')")
    conn.execute("INSERT INTO app_thing (name) VALUES ('own 1'), ('thing 5'), ('own 2')")
    conn.execute("INSERT INTO comment (body) VALUES ('own comment')")
    conn.execute("INSERT INTO app_reply (comment_id, word) VALUES (1, 'own reply')")


@pytest.fixture
def generic_packages(source_db: str, tmp_path) -> Recorder:
    return recorded_full(source_db, str(tmp_path / "packages"), _generic_source)


def test_generic_foreign_keys_follow_their_objects_as_row_by_row(
        generic_packages, pg18_server, staged, monkeypatch, target_db):
    with psycopg.connect(target_db, autocommit=True) as conn:
        _generic_target(conn)
    report = _restore(generic_packages, target_db, generic_foreign_keys=GENERIC)
    assert "public.comment" in staged
    with psycopg.connect(generic_packages.url) as conn:
        source = Counter(map(tuple, conn.execute(GENERIC_CANONICAL).fetchall()))
    with psycopg.connect(target_db) as conn:
        got = Counter(map(tuple, conn.execute(GENERIC_CANONICAL).fetchall()))
        # the source's comments, each naming the same object; the target's own stays
        assert got == source + Counter({("own comment", None, None): 1})
        # object ids keep their spelling where their object kept its id, and the
        # references to nothing (a deleted thing, an unknown blob) keep their value
        kept = dict(conn.execute("SELECT body, object_id FROM comment").fetchall())
        assert kept["comment 4"] == "99" and kept["comment 7"] == str(uuid.UUID(int=1))
    assert report.unresolved_generic_keys >= 2
    reference, other = _per_row(generic_packages, pg18_server, _generic_target, monkeypatch,
                                staged, _generic_dump, generic_foreign_keys=GENERIC)
    assert _generic_dump(target_db) == other
    assert _counts(report) == _counts(reference)
    assert report.unresolved_generic_keys == reference.unresolved_generic_keys


def _generic_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(
            sql.Identifier(t))).fetchall()
                for t in ("django_content_type", "app_thing", "app_blob", "comment",
                          "app_reply")}


SHARED_SCHEMA = """
CREATE TABLE shelf (id serial PRIMARY KEY, code text NOT NULL UNIQUE);
CREATE TABLE slot (shelf_id int NOT NULL REFERENCES shelf (id), n int NOT NULL,
                   label text NOT NULL, PRIMARY KEY (shelf_id, n));
CREATE TABLE box (id serial PRIMARY KEY, shelf_id int NOT NULL REFERENCES shelf (id),
                  n int NOT NULL, name text NOT NULL UNIQUE,
                  FOREIGN KEY (shelf_id, n) REFERENCES slot (shelf_id, n));
"""


def _shared_source(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SHARED_SCHEMA)
    conn.execute("INSERT INTO shelf (code) VALUES ('s1'), ('s2'), ('s3')")
    conn.execute("INSERT INTO slot SELECT s, n, 'slot' FROM generate_series(1, 3) s,"
                 " generate_series(1, 2) n")
    conn.execute("INSERT INTO box (shelf_id, n, name) SELECT s, 1 + s % 2, 'box ' || s"
                 " FROM generate_series(1, 3) s")


def test_foreign_keys_sharing_a_column_keep_the_per_row_path(source_db, tmp_path, target_db,
                                                             staged):
    """Two foreign keys through one column: row by row each maps from the source's value,
    which the stage's UPDATEs, one key after the other, would not."""
    rec = recorded_full(source_db, str(tmp_path / "packages"), _shared_source)
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(SHARED_SCHEMA)
        conn.execute("INSERT INTO shelf (code) VALUES ('own'), ('s3')")
    _restore(rec, target_db)
    assert "public.box" not in staged and "public.shelf" in staged
    query = ("SELECT b.name, s.code, b.n FROM box b JOIN shelf s ON s.id = b.shelf_id"
             " JOIN slot l ON l.shelf_id = b.shelf_id AND l.n = b.n ORDER BY 1")
    with psycopg.connect(source_db) as conn:
        source = conn.execute(query).fetchall()
    with psycopg.connect(target_db) as conn:
        assert conn.execute(query).fetchall() == source
