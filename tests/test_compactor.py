"""The compactor over the file journal (and, end to end, capture + Kafka)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from journal.codec import SchemaRegistry, encode
from journal.compactor import CONSUMER, Compactor, Policy, fold_latest
from journal.events import ChangeEvent, LogicalMessage, Record
from journal.packages import open_package, verify_chain, verify_package
from journal.packages.store import open_store
from journal.stream_state import StreamState
from journal.targets import RestoreTarget
from journal.transport import open_reader, open_writer
from restorer.export import export_snapshot
from tests.support.streams import (
    DOC,
    LINK,
    TAG,
    StreamBuilder,
    package_rows,
    same_tables,
    state_rows,
)


def _workload(n: int, seed: int = 1) -> StreamBuilder:
    rng = random.Random(seed)
    sb = StreamBuilder()
    sb.snapshot({DOC: [{"id": i, "title": f"t{i}", "body": "long" * 10} for i in range(30)],
                 TAG: [{"name": f"k{i}", "n": i} for i in range(5)], LINK: []})
    for i in range(n):
        doc = rng.randrange(30)
        changes = [("u", DOC, None, {"id": doc, "title": f"v{i}", "body": None}, ("body",)),
                   ("c", LINK, None, {"a": i, "b": doc, "note": None}, ())]
        if i % 11 == 5:
            changes.append(("d", LINK, {"a": i - 3, "b": 0}, None, ()))
        sb.change(changes, mark=f"m{i}" if i % 50 == 0 else None)
    return sb


def _write(url: str, records: list[Record]) -> None:
    registry = SchemaRegistry()
    encoded = [(r.position, *encode(r, registry)) for r in records]
    writer = open_writer(url, "edms")
    writer.publish_schemas(registry)
    for position, key, value in encoded:
        writer.append(position, key, value)
    writer.flush()
    writer.close()


def _compact(journal: str, packages: str, **policy) -> Compactor:
    compactor = Compactor(open_reader(journal, "edms"), open_store(packages), Policy(**policy))
    compactor.run(once=True)
    return compactor


def _segment_positions(store) -> list:
    positions = []
    for m in store.list():
        if m.kind == "segment":
            positions += [p for p, _, _ in store.open(m.package_id).raw_records()]
    return positions


def _expected_positions(records: list[Record]) -> list:
    snapshot_end = next(i for i, r in enumerate(records) if getattr(r, "status", "") == "END")
    return [r.position for r in records[snapshot_end + 1:]
            if not (isinstance(r, LogicalMessage) and not r.transactional)]


def test_compaction_makes_a_continuous_verified_chain_whose_fold_equals_replay(tmp_path):
    sb = _workload(120)
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    _write(journal, sb.records)
    compactor = _compact(journal, packages, segment_max_events=40, snapshot_every_segments=4)
    store = open_store(packages)
    manifests = store.list()
    assert compactor.stats.snapshots == 1 and compactor.stats.folds >= 1
    verify_chain(manifests)
    for m in manifests:
        store.verify(m.package_id)
    assert _segment_positions(store) == _expected_positions(sb.records)
    newest = fold_latest(store) or [m for m in manifests if m.kind == "full"][-1]
    folded = package_rows(store.open(newest.package_id))
    assert same_tables(folded, state_rows(StreamState().apply_all(sb.records)))
    marks = [name for m in manifests for name, _, _ in m.marks]
    assert marks == [f"m{i}" for i in range(0, 120, 50)]


def test_restart_after_crash_between_publish_and_offset_commit_duplicates_nothing(tmp_path):
    sb = _workload(60)
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    _write(journal, sb.records)
    _compact(journal, packages, segment_max_events=30, snapshot_every_segments=0)
    before = [m.package_id for m in open_store(packages).list()]
    reader = open_reader(journal, "edms")
    reader.commit_offset(CONSUMER, 0)  # as if the crash came before the commit
    again = _compact(journal, packages, segment_max_events=30, snapshot_every_segments=0)
    assert again.stats.packages == []
    assert [m.package_id for m in open_store(packages).list()] == before


def test_incomplete_transaction_at_the_end_waits_for_its_end_marker(tmp_path):
    sb = _workload(10)
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    tail = sb.change([("c", TAG, None, {"name": "late", "n": 1}, ())])
    _write(journal, sb.records[:-1])  # the last END not written yet
    _compact(journal, packages)
    store = open_store(packages)
    assert store.list()[-1].to_position < tail[0].position
    _write(journal, sb.records[-1:])
    _compact(journal, packages)
    assert store.list()[-1].to_position == tail[-1].position
    verify_chain(store.list())
    assert _segment_positions(store) == _expected_positions(sb.records)


def test_new_snapshot_generation_starts_a_new_chain_and_cut_off_one_is_discarded(tmp_path):
    sb = _workload(5)
    cut = sb.snapshot({DOC: [{"id": 1, "title": "x", "body": None}], TAG: [], LINK: []},
                      generation="gen-cut")[:-1]  # capture died while taking it
    sb.records = sb.records[:-1]
    sb.snapshot({DOC: [{"id": 2, "title": "y", "body": None}], TAG: [], LINK: []},
                generation="gen-2")
    sb.change([("c", TAG, None, {"name": "z", "n": 0}, ())])
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    _write(journal, sb.records)
    _compact(journal, packages)
    manifests = open_store(packages).list()
    assert [m.generation for m in manifests if m.kind == "full"] == ["gen-1", "gen-2"]
    assert manifests[-1].generation == "gen-2" and manifests[-1].kind == "segment"
    verify_chain(manifests)
    assert len(cut) > 2
    newest_full = [m for m in manifests if m.kind == "full"][-1]
    assert newest_full.parent_id is None and newest_full.rows == 1


def test_export_at_an_earlier_time_equals_replay_up_to_it(tmp_path):
    sb = _workload(80)
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    _write(journal, sb.records)
    _compact(journal, packages, segment_max_events=30, snapshot_every_segments=2)
    ends = [r for r in sb.records if getattr(r, "status", "") == "END"]
    stop = ends[37]
    manifest = export_snapshot(open_store(packages), tmp_path / "at.tar",
                               RestoreTarget.at_time(stop.commit_ts + 10))
    upto = [r for r in sb.records if r.position <= stop.position]
    assert manifest.to_position == stop.position and manifest.parent_id is None
    rows = package_rows(open_package(tmp_path / "at.tar"))
    assert same_tables(rows, state_rows(StreamState().apply_all(upto)))


def _toml(tmp_path: Path, journal: str, packages: str) -> Path:
    path = tmp_path / "journal.toml"
    path.write_text(f'[source]\nurl = "postgresql://nobody@127.0.0.1/edms"\n'
                    f'[journal]\nurl = "{journal}"\n'
                    f'[packages]\nurl = "{packages}"\nsegment_max_events = 40\n'
                    f'snapshot_every_segments = 6\n')
    return path


@pytest.mark.slow
def test_kill_9_during_package_writing_leaves_no_partial_package_and_a_continuous_chain(
        tmp_path):
    sb = _workload(4000, seed=3)
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    _write(journal, sb.records)
    config = _toml(tmp_path, journal, packages)
    store = open_store(packages)
    rng = random.Random(9)
    command = [sys.executable, "-c", "from journal.cli import main; main()", "-c", str(config),
               "compact", "--once"]
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.7, 1.6))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        for m in store.list():  # whatever is visible is complete and verifies
            verify_package(store.path(m.package_id))
        verify_chain(store.list())
    assert kills >= 3
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifests = store.list()
    verify_chain(manifests)
    assert _segment_positions(store) == _expected_positions(sb.records)
    newest = [m for m in manifests if m.kind == "full"][-1]
    expected = StreamState().apply_all([r for r in sb.records
                                        if r.position <= newest.to_position])
    assert same_tables(package_rows(store.open(newest.package_id)), state_rows(expected))
    leftovers = [p.name for p in (tmp_path / "packages").iterdir()
                 if not p.name.endswith(".tar") or p.name.startswith(".")]
    assert all(name.startswith((".tmp-", ".build-", ".leases")) for name in leftovers)


def test_changes_carry_their_table_schema_through_a_segment(tmp_path):
    sb = _workload(3)
    journal, packages = f"file://{tmp_path}/journal", f"file://{tmp_path}/packages"
    _write(journal, sb.records)
    _compact(journal, packages)
    store = open_store(packages)
    seg = [m for m in store.list() if m.kind == "segment"][0]
    events = [r for r in store.open(seg.package_id).records() if isinstance(r, ChangeEvent)]
    assert {e.table for e in events} == {DOC, LINK}


@pytest.mark.integration
def test_capture_and_compaction_during_a_workload_on_postgresql_and_kafka(
        pg18_server, kafka_bootstrap, tmp_path):
    import threading

    import psycopg

    from journal import sample
    from journal.positions import Position
    from tests.support.capture import Background, capture_config, database_of, loaded_sample
    from tests.support.databases import scratch_database

    with scratch_database(pg18_server, "pkg") as url:
        loaded_sample(url, scale=30)
        cfg = capture_config(url, tmp_path, "kafka", kafka_bootstrap,
                             packages_url=f"file://{tmp_path}/packages",
                             segment_max_events=200, snapshot_every_segments=3)
        capture = Background(cfg, idle=3.0)
        capture.wait_streaming()
        store = open_store(cfg.packages_url)
        stop = threading.Event()
        reader = open_reader(cfg.journal_location(), database_of(url))
        compactor = Compactor(reader, store, Policy.from_config(cfg))
        follower = threading.Thread(target=compactor.run, kwargs={"stop": stop}, daemon=True)
        follower.start()
        sample.workload(url, 60, seed=11)
        with psycopg.connect(url) as conn:
            earlier_lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        earlier = sample.snapshot_state(url)
        sample.workload(url, 60, seed=12)
        capture.join()
        stop.set()
        follower.join(60)
        assert not follower.is_alive()
        reader.close()
        reader = open_reader(cfg.journal_location(), database_of(url))
        Compactor(reader, store, Policy.from_config(cfg)).run(once=True)
        reader.close()
        newest = fold_latest(store) or store.list()[-1]
        manifests = store.list()
        verify_chain(manifests)
        assert sum(m.kind == "segment" for m in manifests) >= 2
        latest = package_rows(store.open(newest.package_id))
        assert same_tables(latest, sample.snapshot_state(url))
        exported = export_snapshot(store, tmp_path / "earlier.tar",
                                   RestoreTarget("lsn", Position.parse(earlier_lsn).commit_lsn))
        assert exported.to_position.commit_lsn <= Position.parse(earlier_lsn).commit_lsn
        assert same_tables(package_rows(open_package(tmp_path / "earlier.tar")), earlier)
