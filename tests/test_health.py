"""`journal health` and the daemons' Prometheus metrics."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from journal.cli import main
from journal.compactor import Compactor
from journal.metrics import CaptureCollector, registry_for
from journal.packages.store import open_store
from journal.transport import open_reader
from producers.capture import CaptureMetrics, run_capture
from tests.support.capture import capture_config, loaded_sample


def _scrape_events(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return 0.0
    m = re.search(rb"^edms_journal_capture_events_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _env(cfg, tmp_path: Path) -> dict[str, str]:
    return {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"), "JOURNAL_SOURCE_URL": cfg.source_url,
            "JOURNAL_SLOT": cfg.slot, "JOURNAL_JOURNAL_URL": cfg.journal_url,
            "JOURNAL_PACKAGES_URL": cfg.packages_url}


@pytest.mark.integration
def test_health_is_ok_after_capture_and_compaction_and_fails_on_a_missing_slot(
        source_db: str, tmp_path: Path) -> None:
    loaded_sample(source_db)
    cfg = capture_config(source_db, tmp_path, packages_url=f"file://{tmp_path}/packages")
    run_capture(cfg, once_until_idle=1.0)
    reader = open_reader(cfg.journal_location(), cfg.database())
    try:
        Compactor(reader, open_store(cfg.packages_url)).run(once=True)
    finally:
        reader.close()

    ok = CliRunner().invoke(main, ["health"], env=_env(cfg, tmp_path))
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    assert all(": OK (" in line for line in lines), ok.output
    assert any(line.startswith("wal_level: OK") for line in lines)
    assert any(line.startswith("full snapshot: OK") for line in lines)

    env = _env(cfg, tmp_path) | {"JOURNAL_SLOT": "no_such_slot"}
    failed = CliRunner().invoke(main, ["health", "--json"], env=env)
    assert failed.exit_code == 1
    assert '"check": "replication slot"' in failed.output and "does not exist" in failed.output


def test_capture_counters_are_exposed_in_prometheus_format() -> None:
    metrics = CaptureMetrics(events=42, transactions=7, last_acked_lsn=0x16B374D848)
    metrics.ack_lags.extend([0.1, 0.2, 0.3])
    text = generate_latest(registry_for(CaptureCollector(metrics))).decode()
    assert "edms_journal_capture_events_total 42.0" in text
    assert "edms_journal_capture_transactions_total 7.0" in text
    assert 'edms_journal_capture_commit_ack_seconds{quantile="0.5"} 0.2' in text


@pytest.mark.integration
def test_capture_daemon_serves_metrics_while_it_runs(source_db: str, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    loaded_sample(source_db)
    cfg = capture_config(source_db, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(cfg, tmp_path) | {"PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "journal.cli", "capture", "--metrics-port",
                             str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        events = 0.0
        while events == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            events = _scrape_events(port)
        assert events > 0, "the snapshot's rows never showed in /metrics"
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


# -- the slot's verdict (pure) ----------------------------------------------------------

def test_an_active_slot_is_ok_whatever_its_lag() -> None:
    from journal.health import slot_check

    assert slot_check("s", True, "reserved", 10**9, None, 60).ok


def test_an_inactive_slot_with_growing_lag_fails_after_the_grace_and_says_how_long_and_how_much(
        ) -> None:
    from journal.health import slot_check

    within = slot_check("s", False, "reserved", 4096, 30.0, 60)
    assert within.ok and "inactive for 30 s" in within.detail
    after = slot_check("s", False, "reserved", 4096, 600.0, 60)
    assert not after.ok
    assert "inactive for 10 min" in after.detail and "4096 bytes" in after.detail
    assert "capture is not running" in after.detail


def test_an_inactive_slot_of_a_server_that_does_not_say_since_when_fails_at_once() -> None:
    from journal.health import slot_check

    result = slot_check("s", False, "reserved", 1, None, 60)
    assert not result.ok and "since an unknown time" in result.detail


def test_an_inactive_slot_with_nothing_behind_it_is_ok_and_a_lost_one_fails() -> None:
    from journal.health import slot_check

    assert slot_check("s", False, "reserved", 0, 3600.0, 60).ok
    lost = slot_check("s", True, "lost", 0, None, 60)
    assert not lost.ok and "new snapshot generation" in lost.detail
