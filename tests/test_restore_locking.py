"""A restore into existing tables keeps other writers out until it commits.

What a restore into a populated database decides (which rows match, which ids are free,
what the report counts) holds only if nobody writes those tables meanwhile: it locks them
against writes (reads go on), waits a bounded time for writers, and refuses by name when
they do not finish. A dry run writes nothing others wait on: it takes no lock and reads a
single snapshot.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from journal.cli import main
from journal.errors import RestoreError
from restorer.restore import RestoreOptions, restore
from tests.support.cli import one_error
from tests.support.restore import Recorder, recorded_full

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE kind (id serial PRIMARY KEY, code text NOT NULL UNIQUE);
CREATE TABLE note (id serial PRIMARY KEY, kind_id int NOT NULL REFERENCES kind (id),
                   body text NOT NULL);
"""


def _source(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO kind (code) VALUES ('a'), ('b')")
    conn.execute("INSERT INTO note (kind_id, body) SELECT 1 + g % 2, 'n' || g"
                 " FROM generate_series(1, 50) g")


@pytest.fixture
def packages(source_db: str, tmp_path) -> Recorder:
    return recorded_full(source_db, str(tmp_path / "packages"), _source)


@pytest.fixture
def populated(target_db: str) -> str:
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO kind (code) VALUES ('own'), ('b')")
    return target_db


def _rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT k.code, n.body FROM note n JOIN kind k ON k.id = n.kind_id"
                            " ORDER BY 2").fetchall()


def test_writers_are_kept_out_until_the_restore_commits(packages, populated):
    seen: dict[str, Any] = {}

    def meanwhile(_conn: psycopg.Connection[Any]) -> None:
        with psycopg.connect(populated, autocommit=True) as other:
            seen["read"] = other.execute("SELECT count(*) FROM kind").fetchone()[0]
            other.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("INSERT INTO kind (code) VALUES ('late')")
            seen["blocked"] = True

    report = restore(RestoreOptions(target_url=populated, store=packages.store,
                                    before_replay=meanwhile))
    assert report.mode == "remap"
    assert seen == {"read": 2, "blocked": True}  # reads went on, the write waited
    assert len(_rows(populated)) == 50
    with psycopg.connect(populated, autocommit=True) as other:  # released at commit
        other.execute("SET lock_timeout = '300ms'")
        other.execute("INSERT INTO kind (code) VALUES ('late')")


def test_a_writer_that_does_not_finish_refuses_the_restore_by_name(packages, populated):
    with psycopg.connect(populated) as writer:
        writer.execute("INSERT INTO note (kind_id, body) VALUES (1, 'uncommitted')")
        pid = writer.info.backend_pid
        with pytest.raises(RestoreError) as refused:
            restore(RestoreOptions(target_url=populated, store=packages.store,
                                   lock_timeout_s=0.5))
        message = str(refused.value)
        assert "public.note" in message and str(pid) in message
        assert "--lock-timeout" in message and "unchanged" in message
        # the same from the command line, one error line and its exit code
        result = CliRunner().invoke(main, [
            "restore", "--target", populated, "--packages-only", "--lock-timeout", "0.5"],
            env={"JOURNAL_PACKAGES_URL": f"file://{packages.store.files()[0].parent}",
                 "JOURNAL_CONFIG": "/nonexistent-journal.toml"})
        assert result.exit_code not in (0, 2)
        assert one_error(result.output).startswith("error: public.note: other sessions")
        writer.rollback()
    assert _rows(populated) == []


def test_a_dry_run_takes_no_lock(packages, populated):
    with psycopg.connect(populated) as writer:
        # a key the restore does not write: nothing to wait for
        writer.execute("INSERT INTO note (id, kind_id, body) VALUES (1000, 1, 'uncommitted')")
        report = restore(RestoreOptions(target_url=populated, store=packages.store,
                                        dry_run=True, lock_timeout_s=5))
        assert report.dry_run and report.tables["public.note"].inserted == 50
        # a key it writes too: the rehearsal waits a bounded time, then says so
        writer.execute("INSERT INTO note (id, kind_id, body) VALUES (7, 1, 'uncommitted')")
        with pytest.raises(RestoreError, match="unchanged.*lock timeout.*--lock-timeout"):
            restore(RestoreOptions(target_url=populated, store=packages.store,
                                   dry_run=True, lock_timeout_s=0.5))
        writer.commit()
    assert _rows(populated) == [("own", "uncommitted"), ("own", "uncommitted")]
