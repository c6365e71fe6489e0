"""The restore tests' Recorder makes packages that verify and replay like compacted ones."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.restore import Recorder

pytestmark = pytest.mark.integration


def test_recorded_segment_verifies_and_replays_to_the_source_state(source_db, tmp_path):
    from journal import sample

    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, 5)
    rec = Recorder(source_db, str(tmp_path))
    rec.full()
    rec.step(lambda c: sample.workload(c, 3, seed=1), mark="m1")
    seg = rec.segment()
    assert rec.store.verify(seg.package_id).marks[0][0] == "m1"
    with rec.store.open(seg.package_id) as reader:
        (tx,) = list(reader.transactions())
    assert tx.end.event_count == len(tx.changes) > 0
