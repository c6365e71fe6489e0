"""Folding segments into a full snapshot agrees with replaying every event (StreamState)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal.catalog import Catalog, TableSchema
from journal.codec import SchemaRegistry
from journal.events import (
    Record,
)
from journal.fold import collect_changes, fold, net_changes, net_unsupported, start_state
from journal.packages import PackageReader, open_package
from journal.positions import Position
from journal.sorting import ExternalSorter
from journal.stream_state import StreamState, transactions
from journal.targets import Cutoff
from tests.support.streams import (
    DOC,
    LINK,
    T0,
    TABLES,
    TAG,
    StreamBuilder,
    catalog_of,
    package_rows,
    same_tables,
    state_rows,
    write_full,
    write_segment,
)

# -- random workloads ---------------------------------------------------------------------

@st.composite
def workloads(draw: st.DrawFn) -> tuple[dict[TableSchema, list[dict[str, Any]]],
                                        list[list[tuple[Any, ...]]]]:
    """Initial rows, then transactions of valid changes (c/u/d/t, key moves, TOAST)."""
    model: dict[TableSchema, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in TABLES}
    text = st.text(alphabet="abcxyz", max_size=6)

    def new_row(table: TableSchema) -> dict[str, Any]:
        while True:
            if table is DOC:
                row = {"id": draw(st.integers(-50, 50)), "title": draw(text),
                       "body": draw(st.one_of(st.none(), text))}
            elif table is TAG:
                row = {"name": draw(text), "n": draw(st.integers(-2**40, 2**40))}
            else:
                row = {"a": draw(st.integers(0, 6)), "b": draw(st.integers(0, 6)),
                       "note": draw(st.one_of(st.none(), text))}
            if table.key_of(row) not in model[table]:
                return row

    initial = {}
    for table in TABLES:
        for _ in range(draw(st.integers(0, 6))):
            row = new_row(table)
            model[table][table.key_of(row)] = row
        initial[table] = list(model[table].values())
    txns = []
    for _ in range(draw(st.integers(1, 14))):
        changes: list[tuple[Any, ...]] = []
        for _ in range(draw(st.integers(1, 4))):
            table = draw(st.sampled_from(TABLES))
            rows = model[table]
            op = draw(st.sampled_from("ccuuudt" if rows else "ct"))
            if op == "c":
                row = new_row(table)
                rows[table.key_of(row)] = row
                changes.append(("c", table, None, row, ()))
            elif op == "t":
                rows.clear()
                changes.append(("t", table, None, None, ()))
            elif op == "d":
                key = draw(st.sampled_from(sorted(rows, key=repr)))
                old = rows.pop(key)
                changes.append(("d", table, {c: old[c] for c in table.primary_key}, None, ()))
            else:
                key = draw(st.sampled_from(sorted(rows, key=repr)))
                old = rows.pop(key)
                move = draw(st.booleans()) and draw(st.booleans())
                fresh = new_row(table)  # a key not in use (the old one was popped)
                after = dict(fresh) if move else {**fresh, **dict(zip(table.primary_key, key,
                                                                       strict=True))}
                toast: tuple[str, ...] = ()
                if table is DOC and draw(st.booleans()):
                    toast = ("body",)
                    full_after = {**after, "body": old["body"]}
                    after = {**after, "body": None}
                else:
                    full_after = after
                before = {c: old[c] for c in table.primary_key} if move else None
                rows[table.key_of(full_after)] = full_after
                changes.append(("u", table, before, after, toast))
        txns.append(changes)
    return initial, txns


def _build(workdir: Path, initial: Any, txns: list[list[tuple[Any, ...]]], cuts: list[int],
           shuffle: bool) -> tuple[list[Record], PackageReader, list[PackageReader],
                                   list[list[Record]]]:
    sb = StreamBuilder()
    snap = sb.snapshot(initial)
    base_state = StreamState().apply_all(snap)
    base_path = write_full(workdir, base_state, snap[-1].position, snap[-1].commit_ts,
                           shuffle=shuffle)
    base = open_package(base_path)
    groups = [sb.change(changes) for changes in txns]
    registry = SchemaRegistry()
    segments = []
    previous = base.manifest
    bounds = sorted({c % len(groups) for c in cuts} | {len(groups)})
    start = 0
    for end in bounds:
        if end <= start:
            continue
        records = [r for g in groups[start:end] for r in g]
        seg = open_package(write_segment(workdir, records, previous, registry))
        segments.append(seg)
        previous = seg.manifest
        start = end
    return sb.records, base, segments, groups


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.lists(st.integers(0, 20), max_size=4), st.booleans())
def test_fold_of_snapshot_and_segments_equals_replaying_every_event(work, cuts, shuffle):
    initial, txns = work
    workdir = Path(tempfile.mkdtemp())
    try:
        records, base, segments, _ = _build(workdir, initial, txns, cuts, shuffle)
        tmp, manifest = fold(base, segments, workdir, spill_bytes=2048)
        folded = package_rows(open_package(tmp))
        oracle = StreamState().apply_all(records)
        assert same_tables(folded, state_rows(oracle))
        assert manifest.to_position == oracle.position
        assert manifest.parent_id is None and manifest.kind == "full"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.lists(st.integers(0, 20), max_size=3), st.integers(0, 30),
       st.booleans())
def test_fold_cut_at_a_target_equals_replaying_up_to_it(work, cuts, stop, by_time):
    initial, txns = work
    workdir = Path(tempfile.mkdtemp())
    try:
        records, base, segments, groups = _build(workdir, initial, txns, cuts, False)
        keep = stop % (len(groups) + 1)
        snapshot_len = len(records) - sum(len(g) for g in groups)
        expected = StreamState().apply_all(records[:snapshot_len]
                                           + [r for g in groups[:keep] for r in g])
        last = groups[keep - 1][-1] if keep else records[snapshot_len - 1]
        if by_time:  # a time between two commits: stop before the first later one
            target = Cutoff(max_commit_ts=last.commit_ts + 500_000)
        else:
            target = Cutoff(max_lsn=last.position.commit_lsn)
        tmp, manifest = fold(base, segments, workdir, target=target)
        assert same_tables(package_rows(open_package(tmp)), state_rows(expected))
        assert manifest.to_position == expected.position
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_fold_copies_untouched_tables_byte_for_byte(tmp_path):
    sb = StreamBuilder()
    snap = sb.snapshot({DOC: [{"id": i, "title": f"t{i}", "body": "b"} for i in range(50)],
                        TAG: [{"name": "x", "n": 1}], LINK: []})
    base = open_package(write_full(tmp_path, StreamState().apply_all(snap), snap[-1].position,
                                   snap[-1].commit_ts))
    changes = sb.change([("c", TAG, None, {"name": "y", "n": 2}, ())])
    seg = open_package(write_segment(tmp_path, changes, base.manifest, SchemaRegistry()))
    tmp, manifest = fold(base, [seg], tmp_path)
    doc_before = base.manifest.table_member("public.doc")
    assert manifest.table_member("public.doc").sha256 == doc_before.sha256
    assert manifest.table_member("public.tag").rows == 2


def test_snapshot_rows_out_of_key_order_are_sorted(tmp_path):
    rows = [{"id": i, "title": "t", "body": None} for i in (5, 3, 9, 1, 7, 2)]
    state = StreamState().apply_all(StreamBuilder().snapshot({DOC: rows, TAG: [], LINK: []}))
    reader = open_package(write_full(tmp_path, state, Position(1, 2), T0, shuffle=True))
    assert [r["id"] for r in reader.rows("public.doc")] == [1, 2, 3, 5, 7, 9]


def test_update_with_unchanged_toast_and_no_earlier_row_is_refused(tmp_path):
    import pytest

    from journal.errors import ValidationError

    sb = StreamBuilder()
    snap = sb.snapshot({DOC: [], TAG: [], LINK: []})
    base = open_package(write_full(tmp_path, StreamState().apply_all(snap), snap[-1].position,
                                   snap[-1].commit_ts))
    changes = sb.change([("u", DOC, None, {"id": 1, "title": "t", "body": None}, ("body",))])
    seg = open_package(write_segment(tmp_path, changes, base.manifest, SchemaRegistry()))
    with pytest.raises(ValidationError, match="no earlier row"):
        fold(base, [seg], tmp_path)


def test_transactions_grouping_agrees_with_segment_reader(tmp_path):
    sb = StreamBuilder()
    snap = sb.snapshot({DOC: [], TAG: [], LINK: []})
    base = open_package(write_full(tmp_path, StreamState().apply_all(snap), snap[-1].position,
                                   snap[-1].commit_ts))
    recs = sb.change([("c", TAG, None, {"name": "a", "n": 1}, ())], mark="m1")
    recs += sb.change([("t", TAG, None, None, ())])
    seg = open_package(write_segment(tmp_path, recs, base.manifest, SchemaRegistry()))
    ours = [(t.begin.position, len(t.records)) for t in seg.transactions()]
    reference = [(t.begin.position, len(t.records)) for t in transactions(recs)]
    assert ours == reference
    assert seg.manifest.marks == (("m1", recs[2].position, recs[2].commit_ts),)


def test_moved_row_keeps_its_unchanged_toast_value_across_several_moves(tmp_path):
    sb = StreamBuilder()
    snap = sb.snapshot({DOC: [{"id": 9, "title": "a", "body": "big"}], TAG: [], LINK: []})
    base = open_package(write_full(tmp_path, StreamState().apply_all(snap), snap[-1].position,
                                   snap[-1].commit_ts))
    recs = sb.change([("u", DOC, {"id": 9}, {"id": 5, "title": "b", "body": None}, ("body",))])
    recs += sb.change([("u", DOC, {"id": 5}, {"id": 1, "title": "c", "body": None}, ("body",))])
    seg = open_package(write_segment(tmp_path, recs, base.manifest, SchemaRegistry()))
    tmp, _ = fold(base, [seg], tmp_path)
    assert list(open_package(tmp).rows("public.doc")) == [{"id": 1, "title": "c", "body": "big"}]


def _apply_net(base: dict[str, dict[tuple[Any, ...], dict[str, Any]]], state: Any,
               sorter: Any) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """What the set-wise statements do with each net change, done on dicts."""
    tables = {name: dict(rows) for name, rows in base.items()}
    for net in net_changes(state, sorter):
        rows = tables.setdefault(net.name, {})
        before = {} if net.truncated else dict(rows)
        if net.truncated:
            rows.clear()
        for change in net.changes:
            if change.row is None:
                rows.pop(change.key, None)
                continue
            row = dict(change.row)
            for column in change.from_target:
                row[column] = before[change.key][column]  # KeyError: no row to keep from
            rows[change.key] = row
    return tables


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.integers(0, 30))
def test_net_changes_applied_to_the_snapshot_rows_equal_replaying_every_event(work, stop):
    _net_equals_replay(*work, stop)


def test_net_changes_keep_a_toast_value_through_several_updates_and_a_reinsert() -> None:
    doc = {"id": 1, "title": "a", "body": "B"}
    other = {"id": 2, "title": "x", "body": "Y"}
    txns = [
        [("u", DOC, None, {"id": 1, "title": "b", "body": None}, ("body",))],
        [("u", DOC, None, {"id": 1, "title": "c", "body": None}, ("body",))],
        [("d", DOC, {"id": 2}, None, ())],
        [("c", DOC, None, {"id": 2, "title": "y", "body": "Z"}, ())],
        [("u", DOC, None, {"id": 2, "title": "z", "body": None}, ("body",))],
    ]
    for stop in range(len(txns) + 1):
        _net_equals_replay({DOC: [doc, other], TAG: [], LINK: []}, txns, stop)


def _net_equals_replay(initial: Any, txns: list[list[tuple[Any, ...]]], stop: int) -> None:
    sb = StreamBuilder()
    snap = sb.snapshot(initial)
    base = StreamState().apply_all(snap)
    groups = [sb.change(changes) for changes in txns]
    keep = stop % (len(groups) + 1)
    expected = StreamState().apply_all(snap + [r for g in groups[:keep] for r in g])
    last = groups[keep - 1][-1] if keep else snap[-1]
    catalog = Catalog.parse(catalog_of(TABLES))
    workdir = Path(tempfile.mkdtemp())
    sorter = ExternalSorter(workdir, spill_bytes=2048)  # spills: runs are merged too
    try:
        state = start_state(catalog, snap[-1].position, None,
                            {t.qualified: t for t in TABLES})
        state = collect_changes(None, transactions([r for g in groups for r in g]),
                                Cutoff(max_lsn=last.position.commit_lsn), sorter, state)
        assert state.transactions == keep
        why = net_unsupported(state, catalog)
        moved_toast = any(op == "u" and toast and before is not None
                          for g in txns[:keep] for op, _, before, _, toast in g)
        if moved_toast:  # the value of another key: set-wise application is not exact
            assert why is not None and "TOAST" in why
            return
        assert why is None, why
        assert same_tables(_apply_net(state_rows(base), state, sorter), state_rows(expected))
    finally:
        sorter.close()
        shutil.rmtree(workdir, ignore_errors=True)


@given(st.lists(st.tuples(st.integers(-50, 50), st.booleans(), st.text(max_size=30)),
                max_size=3000),
       st.sampled_from([512, 20_000, 10**9]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_external_sort_gives_every_pair_in_key_order_through_runs_and_a_thaw(
        pairs: list[tuple[int, bool, str]], spill_bytes: int) -> None:
    workdir = Path(tempfile.mkdtemp())
    sorter = ExternalSorter(workdir, spill_bytes=spill_bytes)
    try:
        for n, (key, sized, text) in enumerate(pairs):
            payload = {"n": n, "text": text}
            if sized:  # kept as the object until a spill
                sorter.add_sized((key, n), payload, 64 + len(text))
            else:  # pickled at once
                sorter.add((key, n), payload)
        expected = sorted((((key, n), {"n": n, "text": text})
                           for n, (key, _, text) in enumerate(pairs)), key=lambda kv: kv[0])
        assert list(sorter.items()) == expected
        assert list(sorter.items()) == expected  # a second pass reads the runs again
        thawed = ExternalSorter.thaw(sorter.freeze())
        assert list(thawed.items()) == expected
    finally:
        sorter.close()
        shutil.rmtree(workdir, ignore_errors=True)
