"""The REST API against a real ``journal serve``: real PostgreSQL 18, real packages, the
server in its own process, httpx as the client. Every endpoint, every role, bad input,
a restore through the API compared with one through the CLI, cancel, and no secret in any
response or log line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from journal.packages import verify_package
from journal.packages.store import open_store
from tests.support.databases import scratch_database
from tests.support.served import Served, served

pytestmark = pytest.mark.integration

# every response body and header of this module, checked for secrets at the end
SEEN: list[str] = []
FAKE_PASSWORD = "hunter2-never-echo"  # noqa: S105 - a value the responses must not hold


def _remember(response: httpx.Response) -> None:
    response.read()
    SEEN.append(json.dumps(dict(response.headers)) + response.text)


@pytest.fixture(scope="module")
def server(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(pg18_server, tmp_path_factory.mktemp("api")) as s:
        yield s


def client(server: Served, role: str | None) -> httpx.Client:
    return server.client(role, event_hooks={"response": [_remember]})


def wait_final(c: httpx.Client, url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(url).json()
        if job["status"] in ("succeeded", "failed", "cancelled", "abandoned"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every public table's rows, sorted: the oracle the restores are compared with."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'journal_restore_state' ORDER BY 1")]
        return {t: sorted(conn.execute(sql.SQL("SELECT * FROM public.{}").format(
                    sql.Identifier(t))).fetchall(), key=repr) for t in tables}


ENDPOINTS = [
    ("GET", "/health"), ("GET", "/capture"), ("GET", "/metrics"), ("GET", "/packages"),
    ("GET", "/configurations"), ("GET", "/configurations/edms"),
    ("PUT", "/configurations/edms"), ("GET", "/jobs"), ("GET", "/jobs/r1"),
    ("POST", "/jobs/backup"), ("POST", "/jobs/restore"), ("POST", "/jobs/r1/cancel"),
    ("GET", "/jobs/r1/events"), ("GET", "/audit"),
    ("GET", "/packages/full-0000000000000000-00000000-0000000000000000"),
    ("POST", "/packages/full-0000000000000000-00000000-0000000000000000/verify"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_a_call_without_a_valid_token(server: Served, method: str,
                                                               path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer ejt_not-a-token"},
                    {"Authorization": f"Basic {server.tokens['admin']}"}):
        with httpx.Client(base_url=server.api, headers=headers,
                          event_hooks={"response": [_remember]}) as c:
            r = c.request(method, path, json={})
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401 and "journal tokens create" in r.json()["detail"]


def test_a_role_too_low_is_forbidden_and_a_revoked_token_refused(server: Served) -> None:
    with client(server, "viewer") as viewer, client(server, "operator") as operator:
        assert viewer.post("/jobs/backup", json={"kind": "prune"}).status_code == 403
        assert viewer.post("/jobs/restore", json={"target": server.source_url}
                           ).status_code == 403
        r = operator.post("/jobs/restore", json={"target": server.source_url,
                                                 "dry_run": False})
        assert r.status_code == 403 and "needs admin" in r.json()["detail"]
        r = operator.put("/configurations/edms", json={"health": "*/15 * * * *"})
        assert r.status_code == 403, r.text
        assert "role operator" in r.json()["detail"]
    server.cli("tokens", "create", "--name", "short-lived", "--role", "admin")
    created = server.cli("tokens", "create", "--name", "short-lived-2", "--role", "viewer")
    token = created.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/jobs").status_code == 200
        server.cli("tokens", "revoke", "short-lived-2")
        time.sleep(5.5)  # the server remembers a verdict for five seconds
        assert c.get("/jobs").status_code == 401


def test_a_viewer_reads_every_resource_and_the_figures_match_the_sources(
        server: Served) -> None:
    with client(server, "viewer") as c:
        health = c.get("/health").json()
        names = {check["check"] for check in health["checks"]}
        assert {"source connection", "wal_level", "replication slot", "full snapshot"} <= names

        capture = c.get("/capture").json()
        with psycopg.connect(server.source_url) as conn:
            confirmed, = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE slot_name = %s", (server.cfg.slot,)).fetchone()
        assert capture["slot"] == server.cfg.slot and capture["exists"]
        assert capture["confirmed_lsn"] == confirmed  # nothing captures: it stands still
        assert capture["retained_wal_bytes"] >= capture["lag_bytes"] >= 0
        assert capture["last_event_time"] is not None and capture["history"]

        packages = c.get("/packages").json()
        on_disk = sorted(p.stem for p in Path(server.cfg.packages_url[7:]).glob("*.tar"))
        assert sorted(p["id"] for p in packages) == on_disk
        full = next(p for p in packages if p["kind"] == "full")
        manifest = c.get(f"/packages/{full['id']}").json()
        store = open_store(server.cfg.packages_url)
        assert manifest == store.get(full["id"]).to_json()
        assert full["rows"] == sum(m["rows"] for m in manifest["members"])

        metrics = c.get("/metrics").text
        assert "edms_journal_capture_lag_bytes" in metrics
        assert 'edms_journal_jobs{status="succeeded"}' in metrics
        assert c.get("/jobs", params={"kind": "restore", "status": "failed"}).status_code == 200
        audit = c.get("/audit", params={"limit": 2}).json()
        assert len(audit["entries"]) == 2
        older = c.get("/audit", params={"before": audit["next_before"]}).json()
        assert all(e["seq"] < audit["entries"][-1]["seq"] for e in older["entries"])
    docs = httpx.get(server.base + "/api/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    openapi = httpx.get(server.base + "/api/openapi.json").json()
    assert "/api/v1/jobs/restore" in openapi["paths"]


HOSTILE_TABLES = ['document"; DROP TABLE document; --', "document,app_user", "../etc/passwd",
                  "public.document where 1=1", "x" * 300, "document\n", ""]


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_a_hostile_table_name_is_422_naming_the_field_and_starts_nothing(
        server: Served, table: str) -> None:
    with client(server, "operator") as c:
        before = server.job_count()
        r = c.post("/jobs/restore", json={"target": server.source_url, "tables": [table]})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"].startswith("tables")
        assert server.job_count() == before


@pytest.mark.parametrize(("body", "field"), [
    ({"tables": ["no_such_table"]}, "tables"),
    ({"to_lsn": "16/B374D848", "to_xid": 5}, "body"),
    ({"to_lsn": "not-an-lsn"}, "to_lsn"),
    ({"to_time": "2026-01-01T00:00:00"}, "to_time"),
    ({"to_mark": "a mark; with spaces"}, "to_mark"),
    ({"on_conflict": "merge"}, "on_conflict"),
    ({"surprise": 1}, "surprise"),
    ({"target": "mysql://x/y"}, "target"),
    ({"target": f"postgresql://u:{FAKE_PASSWORD}@127.0.0.1/db"}, "target"),
])
def test_bad_restore_input_is_422_naming_the_field(server: Served, body: dict[str, Any],
                                                    field: str) -> None:
    with client(server, "operator") as c:
        r = c.post("/jobs/restore", json={"target": server.source_url, **body})
    assert r.status_code == 422, r.text
    assert any(e["field"] == field for e in r.json()["errors"]), r.json()
    assert FAKE_PASSWORD not in r.text


@pytest.mark.parametrize(("body", "field"), [
    ({"snapshot": "every night"}, "snapshot"),
    ({"drill": "61 * * * *", "drill_target": "postgresql://d@h/postgres"}, "drill"),
    ({"retention_policy": "keep a few"}, "retention_policy"),
    ({"drill": "0 5 * * *"}, "body"),
    ({"drill_target": f"postgresql://d:{FAKE_PASSWORD}@h/postgres"}, "drill_target"),
])
def test_a_bad_configuration_is_422_naming_the_field(server: Served, body: dict[str, Any],
                                                     field: str) -> None:
    with client(server, "admin") as c:
        r = c.put("/configurations/edms", json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"] == field for e in r.json()["errors"]), r.json()


def test_an_admin_edits_a_configuration_and_reads_its_next_runs(server: Served) -> None:
    with client(server, "admin") as c:
        r = c.put("/configurations/nightly", json={
            "snapshot": "0 2 * * *", "retention": "30 4 * * *",
            "retention_policy": "recovery window of 2 weeks"})
        assert r.status_code == 200, r.text
        got = c.get("/configurations/nightly").json()
    assert got["snapshot"] == "0 2 * * *" and got["retention_policy"] == \
        "RECOVERY WINDOW OF 2 WEEKS"
    assert set(got["next_runs"]) == {"snapshot", "retention"}
    assert got["next_runs"]["snapshot"].endswith(("02:00:00Z", "02:00:00+00:00"))


@pytest.mark.parametrize("package_id", [
    "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "full-", "..", ".hidden",
    "full-000000044D012657-000001CE-b09aedae53d45cca.tar",
    "full-000000044D012657-000001CE-B09AEDAE53D45CCA", "full-0000000000000000",
])
def test_path_tricks_in_a_package_id_are_refused(server: Served, package_id: str) -> None:
    with client(server, "operator") as c:
        before = server.job_count()
        assert c.get(f"/packages/{package_id}").status_code in (404, 422)
        assert c.post(f"/packages/{package_id}/verify").status_code in (404, 405, 422)
        assert server.job_count() == before
        # a unique prefix is enough for the CLI; the API names packages whole
        real = c.get("/packages").json()[0]["id"]
        assert c.get(f"/packages/{real[:20]}").status_code == 422


def test_an_oversized_body_is_413_before_it_is_read(server: Served) -> None:
    with client(server, "admin") as c:
        big = {"target": server.source_url, "tables": ["document"] * 20_000}
        r = c.post("/jobs/restore", json=big)
        assert r.status_code == 413 and r.json()["status"] == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"target": "' + b"x" * 70_000
            yield b'"}'

        r = c.post("/jobs/restore", content=chunks(),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_backup_jobs_and_a_package_verify_run_as_recorded_jobs(server: Served) -> None:
    with client(server, "operator") as c:
        for kind in ("snapshot", "export", "prune"):
            r = c.post("/jobs/backup", json={"kind": kind})
            assert r.status_code == 202 and r.headers["location"] == r.json()["url"]
            job = wait_final(c, r.json()["url"])
            assert job["status"] == "succeeded", job
            assert job["started_by"] == "api:test-operator"
            if kind == "export":  # the server chose the file, under its state directory
                out = Path(job["command"].split("--output=", 1)[1])
                assert out.parent == Path(server.cfg.state_dir).resolve() / "exports"
                assert verify_package(out).kind == "full"  # every checksum read through
        assert job["kind"] == "prune"
        package = c.get("/packages").json()[-1]["id"]
        r = c.post(f"/packages/{package}/verify")
        assert r.status_code == 202
        events = []
        with c.stream("GET", r.json()["events"]) as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
        assert events[-1] == "end" and "job" in events
        job = c.get(r.json()["url"]).json()
        assert (job["kind"], job["status"], job["command"]) == (
            "verify", "succeeded", f"packages verify {package}")
        r = c.post(f"/jobs/{job['id']}/cancel")
        assert r.status_code == 409 and "has ended" in r.json()["detail"]


JOB_FIELDS = ("kind", "status", "restore_target", "mode", "dry_run", "reached_position",
              "tables", "error", "progress")


def test_a_restore_through_the_api_gives_the_cli_target_and_job_row(server: Served) -> None:
    source = table_rows(server.source_url)
    with scratch_database(server.pg_server, "via_cli") as by_cli, \
            scratch_database(server.pg_server, "via_api") as by_api, \
            client(server, "admin") as c:
        server.cli("restore", "--target", by_cli)
        cli_job = next(j for j in c.get("/jobs", params={"kind": "restore"}).json()
                       if j["target"] == by_cli)
        database = by_api.rsplit("/", 1)[1]
        r = c.post("/jobs/restore", json={"target": by_api, "dry_run": False})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "confirm_database"
        r = c.post("/jobs/restore", json={"target": by_api, "dry_run": False,
                                          "confirm_database": database})
        assert r.status_code == 202, r.text
        api_job = wait_final(c, r.json()["url"])
        assert table_rows(by_api) == table_rows(by_cli) == source
    assert {k: api_job[k] for k in JOB_FIELDS} == {k: cli_job[k] for k in JOB_FIELDS}
    assert api_job["target"] == by_api and cli_job["started_by"].startswith("user:")
    assert api_job["started_by"] == "api:test-admin"


def test_cancel_stops_a_running_restore_and_leaves_the_target_unchanged(
        server: Served) -> None:
    with scratch_database(server.pg_server, "cancel") as target, \
            client(server, "admin") as c:
        server.cli("restore", "--target", target)
        before = table_rows(target)
        tables = [*before, "journal_restore_state"]
        # a session holding every table makes the restore wait (from its first look at the
        # target's restore state on): it is running, not done
        with psycopg.connect(target) as blocker:
            blocker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier("public", t) for t in tables)))
            r = c.post("/jobs/restore", json={"target": target, "dry_run": False,
                                              "confirm_database": target.rsplit("/", 1)[1]})
            url = r.json()["url"]
            deadline = time.monotonic() + 60
            while c.get(url).json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(1.0)  # well inside the restore, waiting on the lock
            r = c.post(url + "/cancel")
            assert r.status_code == 200, r.text
            job = wait_final(c, url)
            blocker.rollback()
        assert job["status"] == "cancelled", job
        assert table_rows(target) == before


@contextmanager
def _dashboard(server: Served, role: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, event_hooks={"response": [_remember]}) as c:
        r = c.post("/login", data={"token": server.tokens[role]})
        assert r.status_code == 303 and "journal_session" in c.cookies
        yield c


def test_the_dashboard_form_refuses_a_restore_to_a_viewer_and_a_wrong_confirmation(
        server: Served) -> None:
    before = server.job_count()
    with _dashboard(server, "viewer") as viewer:
        page = viewer.post("/restore", data={"target": server.source_url, "dry_run": "on"})
        assert "needs operator or higher" in page.text
    with _dashboard(server, "admin") as admin:
        page = admin.post("/restore", data={"target": server.source_url,
                                            "confirm_database": "nope"})
        assert "type the target&#39;s database name" in page.text
        page = admin.post("/restore", data={"target": server.source_url, "dry_run": "on",
                                            "tables": 'document"; --'})
        assert "is not a table name" in page.text
    assert server.job_count() == before
    with httpx.Client(base_url=server.base) as anonymous:
        assert anonymous.post("/restore", data={"target": server.source_url}
                              ).headers["location"] == "/login"
    assert server.job_count() == before


def test_every_job_row_the_api_lists_is_what_its_openapi_document_describes(
        server: Served) -> None:
    from journal.api.schemas import Job

    with client(server, "viewer") as c:
        jobs = c.get("/jobs", params={"kind": "", "status": "", "limit": 500}).json()
    kinds = {j["kind"] for j in jobs}
    assert {"restore", "compact", "prune", "verify"} <= kinds
    for job in jobs:
        Job.model_validate(job)  # extra="forbid": a field the schema lacks fails here


def test_every_changing_call_is_an_audit_entry_with_the_token_name(server: Served) -> None:
    with client(server, "viewer") as c:
        entries = c.get("/audit", params={"limit": 500}).json()["entries"]
    api = [e for e in entries if e["command"] == "api"]
    assert {e["args"][0] for e in api} >= {"restore", "backup", "verify", "configuration",
                                           "cancel"}
    assert {e["user"] for e in api} <= {"api:test-operator", "api:test-admin"}
    # the commands the API ran name the caller too
    restores = [e for e in entries if e["command"] == "restore"]
    assert any(e["user"] == "api:test-admin" for e in restores)
    assert server.cli("audit", "verify").returncode == 0


def test_no_response_or_log_line_holds_a_token_or_a_password(server: Served) -> None:
    assert SEEN, "the tests before this one record what they saw"
    log = server.log.read_text()
    audit = server.cli("audit", "list", "--limit", "500", "--json").stdout
    for secret in [*server.tokens.values(), FAKE_PASSWORD]:
        assert not any(secret in text for text in SEEN)
        assert secret not in log
        assert secret not in audit
