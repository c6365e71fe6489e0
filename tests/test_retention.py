"""Retention: pure decisions that never make a point inside the window unrestorable."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from journal.cli import main
from journal.errors import ConfigError
from journal.packages import Manifest
from journal.positions import Position
from journal.retention import decide, parse_policy

DAY = 86_400 * 1_000_000
NOW = 1_780_000_000_000_000


def _manifest(kind, pid, frm, to, ts_first, ts_last, parent, generation="g"):
    return Manifest(package_id=pid, kind=kind, format_version=1, system_identifier="1",
                    database="edms", generation=generation,
                    from_position=None if frm is None else Position(frm, 0),
                    to_position=Position(to, 0), first_commit_ts=ts_first,
                    last_commit_ts=ts_last, parent_id=parent, members=(), catalog={},
                    schemas={})


@st.composite
def catalogues(draw):
    """Chains of segments one per ~day, with full snapshots folded now and then, and
    sometimes a new generation."""
    manifests, pos, ts = [], 100, NOW - draw(st.integers(5, 60)) * DAY
    generation = 0
    manifests.append(_manifest("full", "f0", None, pos, ts, ts, None, "g0"))
    parent = "f0"
    for i in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 9)) == 0:  # a new generation
            generation += 1
            pos += 10
            ts += draw(st.integers(1, DAY))
            parent = f"n{i}"
            manifests.append(_manifest("full", parent, None, pos, ts, ts, None, f"g{generation}"))
            continue
        first = ts + 1
        ts += draw(st.integers(1, 2 * DAY))
        sid = f"s{i}"
        manifests.append(_manifest("segment", sid, pos, pos + 10, first, ts, parent,
                                   f"g{generation}"))
        pos += 10
        parent = sid
        if draw(st.booleans()) and draw(st.booleans()):
            manifests.append(_manifest("full", f"f{i}", None, pos, ts, ts, sid,
                                       f"g{generation}"))
    return manifests


def restorable(manifests, t) -> bool:
    """Can the state at time t be rebuilt: a full at or before t, then contiguous
    segments until one ends after t (or the newest of that generation)."""
    fulls = [m for m in manifests if m.kind == "full" and m.last_commit_ts <= t]
    for base in fulls:
        pos, ok = base.to_position, True
        segs = sorted((m for m in manifests if m.kind == "segment"
                       and m.generation == base.generation), key=lambda m: m.to_position)
        later = [s for s in segs if s.to_position > pos]
        for s in later:
            if s.from_position != pos:
                ok = False
                break
            pos = s.to_position
            if s.last_commit_ts > t:
                break
        if ok:
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(catalogues(), st.integers(1, 30), st.integers(1, 4), st.sets(st.text("fsn0123", min_size=2,
                                                                            max_size=3)))
def test_no_point_inside_the_window_becomes_unrestorable(catalogue, days, copies, leased):
    for policy in (parse_policy(f"RECOVERY WINDOW OF {days} DAYS"),
                   parse_policy(f"REDUNDANCY {copies}")):
        decision = decide(policy, catalogue, now_us=NOW, leased=leased)
        kept = [m for m in catalogue if m.package_id in decision.keep]
        assert set(decision.keep) | set(decision.obsolete) == {m.package_id for m in catalogue}
        assert not set(decision.obsolete) & leased
        if policy.window is not None:
            start = NOW - days * DAY
            points = {start} | {m.last_commit_ts for m in catalogue if m.last_commit_ts >= start}
        else:
            fulls = [m for m in catalogue if m.kind == "full"][-copies:]
            assert all(f.package_id in decision.keep for f in fulls)
            points = {m.last_commit_ts for m in catalogue
                      if m.last_commit_ts >= fulls[0].last_commit_ts}
        for t in points:
            if restorable(catalogue, t):
                assert restorable(kept, t), f"{policy}: point {t} lost"


def test_policies_parse_like_barman():
    assert parse_policy("redundancy 3").redundancy == 3
    assert parse_policy("RECOVERY WINDOW OF 4 WEEKS").window == timedelta(days=28)
    for bad in ("REDUNDANCY 0", "RECOVERY WINDOW OF 3 YEARS", "KEEP ALL"):
        with pytest.raises(ConfigError):
            parse_policy(bad)


def test_redundancy_drops_what_is_older_than_the_oldest_kept_full():
    cat = [_manifest("full", "f1", None, 10, 1, 1, None),
           _manifest("segment", "s1", 10, 20, 2, 3, "f1"),
           _manifest("full", "f2", None, 20, 3, 3, "s1"),
           _manifest("segment", "s2", 20, 30, 4, 5, "s1")]
    decision = decide(parse_policy("REDUNDANCY 1"), cat, now_us=NOW)
    assert decision.obsolete == ("f1", "s1") and decision.keep == ("f2", "s2")
    leased = decide(parse_policy("REDUNDANCY 1"), cat, now_us=NOW, leased={"s1"})
    assert leased.obsolete == ("f1",) and "leased" in leased.reasons["s1"]


def test_prune_dry_run_changes_nothing_and_prune_deletes_obsolete(tmp_path):
    from journal.codec import SchemaRegistry
    from journal.packages.store import open_store
    from journal.stream_state import StreamState
    from tests.support.streams import (
        DOC,
        LINK,
        TAG,
        StreamBuilder,
        write_full,
        write_segment,
    )

    store = open_store(f"file://{tmp_path}/packages")
    sb = StreamBuilder()
    snap = sb.snapshot({DOC: [], TAG: [], LINK: []})
    work = tmp_path / "work"
    work.mkdir()
    first = store.put(write_full(work, StreamState().apply_all(snap), snap[-1].position, 1))
    recs = sb.change([("c", TAG, None, {"name": "a", "n": 1}, ())])
    seg = store.put(write_segment(work, recs, first, SchemaRegistry()))
    state = StreamState().apply_all(sb.records)
    second = store.put(write_full(work, state, recs[-1].position, 2))
    config = tmp_path / "journal.toml"
    config.write_text(f'[packages]\nurl = "file://{tmp_path}/packages"\n'
                      'retention = "REDUNDANCY 1"\n')
    listing = sorted(p.name for p in (tmp_path / "packages").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "packages").iterdir()}
    result = CliRunner().invoke(main, ["-c", str(config), "packages", "prune", "--dry-run",
                                       "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert sorted(out["obsolete"]) == sorted([first.package_id, seg.package_id])
    assert out["deleted"] == []
    assert sorted(p.name for p in (tmp_path / "packages").iterdir()) == listing
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "packages").iterdir()} == stamps
    with store.lease([seg.package_id], "restore"):
        result = CliRunner().invoke(main, ["-c", str(config), "packages", "prune"])
        assert result.exit_code == 0, result.output
    assert [m.package_id for m in store.list()] == [seg.package_id, second.package_id]
    CliRunner().invoke(main, ["-c", str(config), "packages", "prune"])
    assert [m.package_id for m in store.list()] == [second.package_id]
