"""Natural-key restore into a LIVE database, on a Django EDMS schema of our own.

The source is our Django app (tests/django_edms): documents whose uuid is not unique in the
database, versions, pages that point at stored files through a generic foreign key, tags,
ACLs (a generic foreign key with a text object id), an activity stream with three generic
foreign keys, and a one-row registry without any unique key. It is captured by the real
pipeline (``journal init``, ``capture`` into a file journal, ``mark`` between workload
steps, ``compact``), and restored with no natural-key or generic-FK configuration into a
live target that was migrated in another app order (so content type and permission ids
differ) and holds its own users, documents, tags, files, ACLs and actions under
overlapping ids, plus one document with a source document's uuid.

The oracle is the source itself, read through Django's ORM at each mark and rendered in
natural terms (a user by username, a document by uuid, a content object by what it is),
never the journal. Django's settings are per process, so everything Django does runs in
``python -m tests.django_edms.runner`` subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from journal.errors import RestoreError
from journal.packages.store import open_store
from journal.targets import RestoreTarget
from restorer.restore import RestoreOptions, restore
from restorer.verify import verify
from tests.support.databases import database_url, drop_database, scratch_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
JOURNAL = Path(sys.executable).with_name("journal")
MARKS = ("m1", "m2", "m3")
SHARED_UUID = "5f0c3a52-8f4e-4c1b-9a57-2b7d06e1c0de"  # tests.django_edms.runner.SHARED_UUID
COLLIDING_FILE_ID = 4711  # tests.django_edms.runner.COLLIDING_FILE_ID
# rows both databases have from their own migrations (and the registry's get_or_create):
# after a restore each is there once
SHARED_MODELS = ("content_types", "permissions", "migrations", "registry")

View = dict[str, dict[Any, Any]]  # model -> primary key -> the row in natural terms


# --- the two processes' worlds: Django (runner) and the journal (CLI) --------------------

def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def django(url: str, *args: str, app_order: str = "") -> str:
    """Run a runner command against the database at ``url``; its stdout."""
    proc = subprocess.run([sys.executable, "-m", "tests.django_edms.runner", *args],
                          cwd=REPO, env=_env(EDMS_DATABASE_URL=url, EDMS_APP_ORDER=app_order),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"runner {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def journal(config: Path, *args: str) -> str:
    proc = subprocess.run([str(JOURNAL), "-c", str(config), *args], cwd=config.parent,
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"journal {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def read_view(url: str) -> View:
    raw = json.loads(django(url, "view"))
    return {model: {pk: _frozen(row) for pk, row in rows} for model, rows in raw.items()}


def write_config(workdir: Path, source_url: str) -> Path:
    path = workdir / "journal.toml"
    name = f"dj_{uuid.uuid4().hex[:12]}"  # slots are per server, shared by every test
    path.write_text("\n".join([
        "[source]", f'url = "{source_url}"', f'slot = "{name}"', f'publication = "{name}"',
        "heartbeat_interval_s = 0.5",
        "[journal]", f'url = "{(workdir / "journal").as_uri()}"',
        "[packages]", f'url = "{(workdir / "packages").as_uri()}"',
        "[state]", f'dir = "{workdir / "state"}"', ""]))
    return path


# --- the source, captured and packaged once for the module --------------------------------

@dataclass
class Source:
    url: str
    packages_url: str
    views: dict[str, View]  # "m1", "m2", "m3", "latest": the source as it was there

    @property
    def store(self) -> Any:
        return open_store(self.packages_url)


@pytest.fixture(scope="module")
def edms_source(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    workdir = tmp_path_factory.mktemp("django-edms")
    with scratch_database(pg18_server, "djsrc") as url:
        django(url, "migrate")
        django(url, "source", "0")
        config = write_config(workdir, url)
        journal(config, "init")
        journal(config, "capture", "--once-until-idle", "1")  # slot + initial snapshot
        views = {}
        for step, mark in enumerate(MARKS, start=1):
            django(url, "source", str(step))
            journal(config, "mark", mark)
            views[mark] = read_view(url)  # nothing is written until the next step
        django(url, "source", "4")
        views["latest"] = read_view(url)
        journal(config, "capture", "--once-until-idle", "1.5")
        journal(config, "compact", "--once", "--snapshot")
        yield Source(url, (workdir / "packages").as_uri(), views)


# --- the live target: migrated in another order, with rows of its own ---------------------

@dataclass
class Live:
    server: str
    template: str  # a database the tests clone, never restore into
    own: View  # the target's own rows before any restore


@pytest.fixture(scope="module")
def live(pg18_server: str, edms_source: Source) -> Iterator[Live]:
    with scratch_database(pg18_server, "djlive") as url:
        # contenttypes first and the apps in reverse order: other content type and
        # permission ids than the source's
        django(url, "migrate", "contenttypes", app_order="reversed")
        django(url, "target")
        own = read_view(url)
        ids = {ct: pk for pk, ct in own["content_types"].items()}
        source_ids = {ct: pk for pk, ct in edms_source.views["m1"]["content_types"].items()}
        assert ids != source_ids, "the target's content type ids must differ from the source's"
        assert set(own["users"]) & set(edms_source.views["m1"]["users"]), "ids must overlap"
        yield Live(pg18_server, url.rsplit("/", 1)[1], own)


@contextmanager
def live_target(live: Live) -> Iterator[str]:
    """A fresh copy of the live target (CREATE DATABASE … TEMPLATE)."""
    name = f"djdst_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(live.server, autocommit=True) as conn:
        for attempt in range(20):
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(live.template)))
                break
            except psycopg.errors.ObjectInUse:  # an autovacuum worker in the template
                if attempt == 19:
                    raise
                time.sleep(0.25)
    try:
        yield database_url(live.server, name)
    finally:
        drop_database(live.server, name)


# --- the oracle ---------------------------------------------------------------------------

def expected_view(source: View, own: View, on_conflict: str) -> dict[str, Counter[Any]]:
    """The target after a correct restore, in natural terms: the source's rows plus the
    target's own; rows both had once; the shared document once, with the source's title
    (update) or its own (skip)."""
    out: dict[str, Counter[Any]] = {}
    for model in source:
        theirs, mine = Counter(source[model].values()), Counter(own[model].values())
        out[model] = theirs | mine if model in SHARED_MODELS else theirs + mine
    shared = [d for d in (*source["documents"].values(), *own["documents"].values())
              if d[0] == SHARED_UUID]
    assert len(shared) == 2, "the source and the target each hold the shared document"
    out["documents"].subtract(shared)
    out["documents"][shared[0] if on_conflict == "update" else shared[1]] += 1
    return {model: +rows for model, rows in out.items()}


def problems_after_restore(target: str, source: View, own: View, on_conflict: str
                           ) -> list[str]:
    """Everything that differs from a correct restore, one line each (empty: correct)."""
    after = read_view(target)
    problems = []
    for model, want in expected_view(source, own, on_conflict).items():
        have = Counter(after[model].values())
        for row, n in (want - have).items():
            problems.append(f"{model}: missing {n}x {row}")
        for row, n in (have - want).items():
            problems.append(f"{model}: unexpected {n}x {row}")
    for model, rows in own.items():  # the target's own rows keep their ids and values
        for pk, row in rows.items():
            if after[model].get(pk) != row and not (
                    model == "documents" and row[0] == SHARED_UUID and on_conflict == "update"):
                problems.append(f"{model}: the target's own row {pk} {row} became "
                                f"{after[model].get(pk)}")
    check = json.loads(django(target, "app-check"))
    for key, want in (("registry_rows", 1), ("get_or_create", "found"),
                      ("shared_documents", 1), ("shared_get", SHARED_UUID), ("new_rows", "ok")):
        if check[key] != want:
            problems.append(f"application: {key} is {check[key]!r}, expected {want!r}")
    doubled = [r for r, n in Counter(after["migrations"].values()).items() if n > 1]
    if doubled:
        # the two databases' rows differ only in `applied` (when each was migrated), so
        # matching such rows by every column cannot see that they are the same
        problems.append(f"django_migrations: {len(doubled)} migration(s) recorded twice "
                        "(same app and name, another `applied` time)")
    return problems


def assert_correct(target: str, source: View, own: View, on_conflict: str, what: str) -> None:
    problems = problems_after_restore(target, source, own, on_conflict)
    assert not problems, (f"{what}: {len(problems)} difference(s) from the source in natural "
                          "terms:\n" + "\n".join(problems))


def assert_verify_silent(target: str, source: Source, mark: str | None) -> None:
    at = RestoreTarget("mark", mark) if mark else None
    report = verify(target, store=source.store, at=at, allow_extra=True)
    assert report.ok, report.summary()


def _restore(target: str, source: Source, on_conflict: str, **options: Any) -> Any:
    return restore(RestoreOptions(target_url=target, store=source.store,
                                  on_conflict=on_conflict, **options))


# --- the tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("mark", ["m2", None])
def test_restore_into_empty_database_equals_the_source_in_natural_terms(
        edms_source: Source, pg18_server: str, mark: str | None):
    """The control: the pipeline, the runner and the oracle agree where restore is exact
    today (an empty target keeps the source's ids), so a failure of the live tests is the
    restore's, not the harness's."""
    with scratch_database(pg18_server, "djempty") as target:
        report = _restore(target, edms_source, "update", to_mark=mark)
        assert report.mode == "empty"
        assert read_view(target) == edms_source.views[mark or "latest"]
        assert json.loads(django(target, "app-check"))["get_or_create"] == "found"


@pytest.mark.parametrize("on_conflict", ["update", "skip"])
def test_full_restore_into_live_django_database_resolves_every_reference_by_natural_key(
        edms_source: Source, live: Live, on_conflict: str):
    with live_target(live) as target:
        report = _restore(target, edms_source, on_conflict)
        assert report.mode == "remap"
        assert_correct(target, edms_source.views["latest"], live.own, on_conflict,
                       f"full restore, --on-conflict {on_conflict}")
        if on_conflict == "update":  # skip keeps the target's own shared document
            assert_verify_silent(target, edms_source, None)


@pytest.mark.parametrize("on_conflict", ["update", "skip"])
def test_restore_to_mark_into_live_django_database_equals_the_source_at_the_mark(
        edms_source: Source, live: Live, on_conflict: str):
    with live_target(live) as target:
        _restore(target, edms_source, on_conflict, to_mark="m2")
        assert_correct(target, edms_source.views["m2"], live.own, on_conflict,
                       f"restore to mark m2, --on-conflict {on_conflict}")
        if on_conflict == "update":
            assert_verify_silent(target, edms_source, "m2")


@pytest.mark.parametrize("on_conflict", ["update", "skip"])
def test_incremental_restores_into_live_django_database_follow_the_source_mark_by_mark(
        edms_source: Source, live: Live, on_conflict: str):
    with live_target(live) as target:
        _restore(target, edms_source, on_conflict, to_mark="m1")
        assert_correct(target, edms_source.views["m1"], live.own, on_conflict,
                       f"restore to m1, --on-conflict {on_conflict}")
        for mark in ("m2", "m3", None):  # three incremental steps, the last to the end
            _restore(target, edms_source, on_conflict, incremental=True, to_mark=mark)
            assert_correct(target, edms_source.views[mark or "latest"], live.own,
                           on_conflict, f"incremental restore to {mark or 'the end'}, "
                           f"--on-conflict {on_conflict}")
            if on_conflict == "update":
                assert_verify_silent(target, edms_source, mark)


# each statement moves one generic reference of a correctly restored row elsewhere
_REPOINT_ACL = """
UPDATE django_edms_accesscontrolentry
   SET object_id = (SELECT id::text FROM django_edms_document WHERE title = 'Board minutes')
 WHERE role = 'viewer' AND user_id = (SELECT id FROM auth_user WHERE username = 'alan')
"""
_REPOINT_ACTION = """
UPDATE django_edms_action
   SET actor_object_id = (SELECT id::text FROM auth_user WHERE username = 'grace')
 WHERE verb = 'logged in'
"""


def test_verify_names_the_tables_of_rows_re_pointed_after_a_correct_live_restore(
        edms_source: Source, live: Live):
    with live_target(live) as target:
        _restore(target, edms_source, "update")
        assert_verify_silent(target, edms_source, None)
        with psycopg.connect(target, autocommit=True) as conn:
            for statement in (_REPOINT_ACL, _REPOINT_ACTION):
                assert conn.execute(statement).rowcount == 1
        report = verify(target, store=edms_source.store, allow_extra=True)
        assert not report.ok
        flagged = {t for t, d in report.tables.items() if d.missing}
        assert flagged == {"public.django_edms_accesscontrolentry",
                           "public.django_edms_action"}, report.summary()
        assert all(report.tables[t].missing == 1 for t in flagged), report.summary()


def test_unique_violation_in_live_restore_names_constraint_detail_and_source_row(
        edms_source: Source, live: Live):
    source_checksum = next(f[1] for pk, f in edms_source.views["latest"]["files"].items()
                           if pk == COLLIDING_FILE_ID)
    with live_target(live) as target:
        # a file of the target's own, under another name (the natural key) but with the
        # checksum of a source file: inserting the source's file must violate the
        # checksum's unique constraint
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("INSERT INTO django_edms_file (name, checksum, size) "
                         "VALUES ('local/same-scan.tiff', %s, 1)", (source_checksum,))
            constraint = conn.execute(
                "SELECT conname FROM pg_constraint c JOIN pg_attribute a "
                "ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
                "WHERE c.conrelid = 'django_edms_file'::regclass AND c.contype = 'u' "
                "AND a.attname = 'checksum'").fetchone()[0]
        before = read_view(target)
        with pytest.raises(RestoreError) as refused:
            _restore(target, edms_source, "update")
        message = str(refused.value)
        assert constraint in message, message
        assert f"Key (checksum)=({source_checksum}) already exists" in message, message
        # the file's name and checksum do not contain its id: only the source key does
        assert re.search(rf"\b{COLLIDING_FILE_ID}\b", message), message
        assert read_view(target) == before, "the failed restore changed the target"
