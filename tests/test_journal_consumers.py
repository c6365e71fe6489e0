"""What a consumer commits, and what the journal may delete once it is packaged.

A commit carries the stream position its offset reaches (the compactor: the end of the
package that covers it), in the file journal and in Kafka alike. The file journal's
retention deletes what is packaged and old enough, nothing else. The unit part needs no
server. The integration part captures from the real PostgreSQL 18
into a file journal, compacts with a retention of zero seconds, and holds the packages to
the source's own rows (``sample.snapshot_state``), read independently of the journal.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from journal import sample
from journal.compactor import CONSUMER, Compactor, Policy, fold_latest
from journal.errors import TransportError
from journal.packages.store import open_store
from journal.positions import Position
from journal.transport import Committed, open_reader, open_writer
from journal.transport.file import FileJournal
from tests.support.streams import package_rows, same_tables


def test_a_commit_keeps_the_position_it_reaches_and_an_old_commit_has_none(
        tmp_path: Path) -> None:
    j = _journal(tmp_path)
    _fill(j, 3)
    reader = j.reader()
    reader.commit_offset(CONSUMER, 100, position=Position(0x16B374D848, 4))
    assert reader.committed(CONSUMER) == Committed(100, Position(0x16B374D848, 4))
    assert j.reader().committed_offset(CONSUMER) == 100
    reader.commit_offset("other", 50)
    assert reader.committed("other") == Committed(50, None)
    assert reader.committed("never") == Committed(0, None)
    (j.consumers_dir / "old.json").write_text('{"consumer": "old", "offset": 7}')
    assert reader.committed("old") == Committed(7, None)
    (j.consumers_dir / "bad.json").write_text('{"consumer": "bad", "offset": 7, "position": "x"}')
    with pytest.raises(TransportError, match="bad.json is unreadable"):
        reader.committed("bad")


@pytest.mark.integration
def test_kafka_commits_keep_the_position_they_reach(kafka_journal_url: str) -> None:
    url = kafka_journal_url
    writer = open_writer(url, "edms")
    try:
        writer.append(Position(10, 0), b"k", b"v")
        writer.flush()
    finally:
        writer.close()
    reader = open_reader(url, "edms")
    try:
        assert reader.committed(CONSUMER) == Committed(0, None)
        reader.commit_offset(CONSUMER, 1, position=Position(10, 3))
        reader.commit_offset("plain", 1)
    finally:
        reader.close()
    reader = open_reader(url, "edms")  # read back by a new consumer, from the broker
    try:
        assert reader.committed(CONSUMER) == Committed(1, Position(10, 3))
        assert reader.committed("plain") == Committed(1, None)
    finally:
        reader.close()


def _journal(tmp_path: Path) -> FileJournal:
    return FileJournal(tmp_path / "j", "db", segment_bytes=1024)


def _fill(journal: FileJournal, count: int) -> None:
    w = journal.writer()
    for i in range(1, count + 1):
        w.append(Position(i, 0), b"k", bytes([i % 256]) * 80)
    w.flush()
    w.close()


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_release_deletes_only_packaged_segments_older_than_the_retention(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    _fill(j, 60)
    segments = j.segments()
    assert len(segments) >= 5
    records = list(j.reader().read())
    reader = j.reader()
    packaged = next(r for r in records if r.offset >= segments[3][0]).offset  # start of the 4th
    reader.commit_offset(CONSUMER, packaged)
    for _, path in segments[:2]:
        _age(path, 3600)  # the first two are old; the third is packaged but young
    assert reader.release(packaged, min_age_s=600) == 2
    kept = j.segments()
    assert kept == segments[2:]
    # a reader from the start begins at the oldest segment kept, and misses nothing after it
    again = list(j.reader().read(0))
    assert again[0].offset == segments[2][0]
    assert [r.position for r in again] == [r.position for r in records
                                          if r.offset >= segments[2][0]]


def test_release_never_passes_a_consumer_or_deletes_the_newest_segment(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    _fill(j, 60)
    segments = j.segments()
    for _, path in segments:
        _age(path, 3600)
    reader = j.reader()
    records = list(reader.read())
    reader.commit_offset("slow", records[0].next_offset)
    reader.commit_offset(CONSUMER, records[-1].next_offset)
    assert reader.release(records[-1].next_offset) == 0  # "slow" has not passed the first
    reader.commit_offset("slow", records[-1].next_offset)
    assert reader.release(records[-1].next_offset) == len(segments) - 1
    assert j.segments() == segments[-1:]


@pytest.mark.integration
def test_compaction_trims_the_file_journal_and_the_packages_still_hold_the_source(
        captured) -> None:
    cfg = captured
    journal = FileJournal.from_url(cfg.journal_location(), cfg.database())
    before = journal.segments()
    assert len(before) > 2

    reader = open_reader(cfg.journal_location(), cfg.database())
    try:
        Compactor(reader, open_store(cfg.packages_url),
                  Policy(journal_retention_s=0)).run(once=True)
        committed = reader.committed_offset(CONSUMER)
        reaches = reader.committed(CONSUMER).position
    finally:
        reader.close()
    after = journal.segments()
    assert len(after) < len(before)
    assert all(base <= committed for base, _ in after[:-1])
    assert after[0][0] <= committed  # nothing unpackaged went: the oldest kept reaches it

    store = open_store(cfg.packages_url)
    assert reaches == store.list()[-1].to_position  # where a restore may go on in the journal
    folded = fold_latest(store)
    assert folded is not None
    with store.open(folded.package_id) as package:
        got = package_rows(package)
    assert same_tables(got, sample.snapshot_state(cfg.source_url))
