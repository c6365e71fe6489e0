"""Operations that must fail loudly: health on a stopped capture, capture with a bad
journal URL, mark names that are empty or already used. Real PostgreSQL, file journal."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from journal import sample
from journal.cli import main
from journal.events import LogicalMessage
from producers.capture import run_capture
from tests.support.capture import (
    capture_config,
    cli_env,
    database_of,
    loaded_sample,
    read_records,
    slots_and_publications,
)
from tests.support.cli import one_error

pytestmark = pytest.mark.integration


# -- health ---------------------------------------------------------------------------

def test_health_fails_on_a_stopped_capture_whose_slot_lag_grows(pg_server: str,
                                                                 tmp_path: Path) -> None:
    from tests.support.databases import scratch_database

    with scratch_database(pg_server, "hl") as url:
        loaded_sample(url, scale=2)
        cfg = capture_config(url, tmp_path, packages_url=f"file://{tmp_path}/packages")
        run_capture(cfg, once_until_idle=1.0)  # capture ran, and stopped
        with psycopg.connect(url, autocommit=True) as conn:
            sample.workload(conn, 20, seed=1)  # WAL the stopped slot now holds back
            (lag,) = conn.execute(
                "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
                "WHERE slot_name = %s", (cfg.slot,)).fetchone()
        assert lag > 0

        env = cli_env(cfg, cfg.packages_url, tmp_path)
        result = CliRunner().invoke(main, ["health", "--max-slot-inactive", "0"], env=env)
        assert result.exit_code == 1, result.output
        line = next(x for x in result.output.splitlines()
                    if x.startswith("replication slot:"))
        assert "FAILED" in line and "inactive" in line and "capture is not running" in line
        retained = int(line.split(" bytes of WAL retained")[0].rsplit(" ", 1)[1])
        assert retained >= lag  # measured by the server, independently of the check
        if pg_server.endswith(str(_port_of_pg18())):
            assert "inactive for " in line  # PostgreSQL 17+ says since when

        # within the grace a restart takes, the same slot is not a failure yet
        graced = CliRunner().invoke(main, ["health", "--max-slot-inactive", "3600"], env=env)
        slot_line = next(x for x in graced.output.splitlines()
                         if x.startswith("replication slot:"))
        if "since an unknown time" not in slot_line:
            assert ": OK (" in slot_line, graced.output


def _port_of_pg18() -> int:
    from tests import services

    return int(services.pg18_url().rsplit(":", 1)[1].split("/")[0])


# -- capture start-up -----------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("journal_url", ["nats://127.0.0.1/edms", "kafka://127.0.0.1:{port}"])
def test_capture_with_a_bad_journal_url_creates_no_publication_or_slot(
        source_db: str, tmp_path: Path, journal_url: str) -> None:
    loaded_sample(source_db, scale=2)
    cfg = capture_config(source_db, tmp_path,
                         journal_url=journal_url.format(port=_closed_port()))
    result = CliRunner().invoke(main, ["capture", "--once-until-idle", "1"],
                                env=cli_env(cfg, f"file://{tmp_path}/packages", tmp_path))
    assert result.exit_code in (2, 4), result.output
    one_error(result.output)
    assert slots_and_publications(source_db) == ([], [])
    assert list((tmp_path / "state").glob("capture-*.json")) == []  # no slot state either


# -- marks ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", " ", "a b", "-x", "x" * 101, "naïve", "a;drop"])
def test_mark_with_an_empty_or_malformed_name_is_refused_before_connecting(
        name: str, tmp_path: Path) -> None:
    env = {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"),
           "JOURNAL_SOURCE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = CliRunner().invoke(main, ["mark", "--", name], env=env)
    assert result.exit_code == 2, result.output
    assert "mark name" in one_error(result.output)


def test_a_repeated_mark_name_is_refused_naming_when_it_was_used(
        captured, tmp_path: Path) -> None:
    cfg = captured
    env = cli_env(cfg, cfg.packages_url, tmp_path)
    first = CliRunner().invoke(main, ["mark", "before-upgrade"], env=env)
    assert first.exit_code == 0, first.output
    run_capture(cfg, once_until_idle=1.0)

    # captured, not yet packaged: found in the journal's tail
    again = CliRunner().invoke(main, ["mark", "before-upgrade"], env=env)
    assert again.exit_code == 3, again.output
    line = one_error(again.output)
    assert "already exists at " in line and "the journal" in line

    assert CliRunner().invoke(main, ["compact", "--once"], env=env).exit_code == 0
    packaged = CliRunner().invoke(main, ["mark", "before-upgrade"], env=env)
    assert packaged.exit_code == 3, packaged.output
    assert "in package segment-" in one_error(packaged.output)

    assert CliRunner().invoke(main, ["mark", "after-upgrade"], env=env).exit_code == 0
    run_capture(cfg, once_until_idle=1.0)
    marks = [r.content.decode() for r in read_records(cfg, database_of(cfg.source_url))
             if isinstance(r, LogicalMessage) and r.is_mark]
    assert marks == ["before-upgrade", "after-upgrade"]


def test_a_repeated_mark_name_is_found_in_the_kafka_journal(source_db: str, tmp_path: Path,
                                                            kafka_bootstrap: str) -> None:
    loaded_sample(source_db, scale=2)
    cfg = capture_config(source_db, tmp_path, "kafka", kafka_bootstrap,
                         packages_url=f"file://{tmp_path}/packages")
    run_capture(cfg, once_until_idle=1.0)
    env = cli_env(cfg, cfg.packages_url, tmp_path) | {"JOURNAL_TOPIC_PREFIX": cfg.topic_prefix}
    assert CliRunner().invoke(main, ["mark", "nightly"], env=env).exit_code == 0
    run_capture(cfg, once_until_idle=1.0)
    again = CliRunner().invoke(main, ["mark", "nightly"], env=env)
    assert again.exit_code == 3, again.output
    assert "in the journal" in one_error(again.output)
