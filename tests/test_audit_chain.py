"""The hash-chained audit trail: an edited or deleted entry is named by `audit verify`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, update

from journal.cli import main
from journal.jobs import audit_chain
from journal.jobs.database import JobDatabase
from journal.jobs.models import AuditEntry
from tests import services
from tests.support.jobdb import BACKENDS, job_database_url


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    pg = services.pg18_url() if request.param == "pg18" else ""
    with job_database_url(request.param, tmp_path, pg) as url:
        environment = {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"),
                       "JOURNAL_STATE_DIR": str(tmp_path / "state"),
                       "JOURNAL_PACKAGES_URL": f"file://{tmp_path}/packages",
                       "JOURNAL_JOBS_URL": url}
        if request.param == "pg18":
            JobDatabase(url).upgrade()
        yield environment


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def _audited_commands(env: dict[str, str], n: int) -> JobDatabase:
    for _ in range(n):
        assert _run(env, "packages", "list")[0] == 0
    return JobDatabase(env["JOURNAL_JOBS_URL"])


def test_every_audited_command_is_chained_without_secrets(env: dict[str, str]) -> None:
    _audited_commands(env, 2)
    code, _ = _run(env, "restore", "--target", "postgresql://u:hunter2@127.0.0.1:1/x",
                   "--to", "yesterday")
    assert code == 2
    db = JobDatabase(env["JOURNAL_JOBS_URL"])
    rows = audit_chain.entries(db)
    assert [(e.seq, e.command, e.outcome) for e in rows] == [
        (1, "packages", "ok"), (2, "packages", "ok"), (3, "restore", "exit 2")]
    assert rows[0].prev_hash == audit_chain.GENESIS
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert "hunter2" not in repr([audit_chain.to_json(e) for e in rows])
    assert "postgresql://u:***@127.0.0.1:1/x" in rows[2].args
    code, out = _run(env, "audit", "verify")
    assert code == 0 and "3 entries, chain intact" in out


def test_an_edited_entry_is_named(env: dict[str, str]) -> None:
    db = _audited_commands(env, 4)
    with db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2)
                        .values(outcome="exit 4"))
    code, out = _run(env, "audit", "verify")
    assert code == 3
    assert "entry 2: edited" in out
    assert "entry 1" not in out and "entry 3" not in out and "entry 4" not in out


def test_a_deleted_entry_is_named(env: dict[str, str]) -> None:
    db = _audited_commands(env, 4)
    with db.session() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    code, out = _run(env, "audit", "verify")
    assert code == 3
    assert "entry 3 deleted" in out


def test_a_deleted_last_entry_is_named_by_the_local_copy(env: dict[str, str]) -> None:
    db = _audited_commands(env, 3)
    with db.session() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    assert audit_chain.verify(db)[1] == []  # the chain alone cannot see a missing tail
    code, out = _run(env, "audit", "verify")
    assert code == 3 and "entry 3: deleted" in out


def test_a_rewritten_chain_is_detected_by_its_links(env: dict[str, str]) -> None:
    db = _audited_commands(env, 3)
    # a forger who recomputes the edited entry's own hash still breaks the next link
    with db.session() as session:
        entry = session.get(AuditEntry, 2)
        entry.user = "mallory"
        entry.hash = audit_chain._hash_of(entry)
    count, breaks = audit_chain.verify(db)
    assert count == 3 and [b.seq for b in breaks] == [3]


def test_concurrent_appends_keep_one_unbroken_chain(env: dict[str, str]) -> None:
    import threading

    db = JobDatabase(env["JOURNAL_JOBS_URL"])
    db.upgrade()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                audit_chain.append(db, "compact", ["compact", f"--writer={n}", str(i)], "ok")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    count, breaks = audit_chain.verify(db)
    assert (count, breaks) == (40, [])
    assert [e.seq for e in audit_chain.entries(db)] == list(range(1, 41))
    db.dispose()
