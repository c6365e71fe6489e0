"""The file journal: durability, order, offsets, recovery and retention on a real directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from journal.codec import SchemaRegistry, encode
from journal.errors import ConfigError, TransportError
from journal.events import TransactionMarker
from journal.positions import Position
from journal.transport import deduplicate, open_reader, open_writer
from journal.transport.file import FileJournal

REPO = Path(__file__).resolve().parent.parent


def journal(tmp_path: Path, **kw) -> FileJournal:
    return FileJournal(tmp_path, "edms", **kw)


def fill(writer, first: int, count: int, *, value_size: int = 40) -> None:
    for i in range(first, first + count):
        writer.append(Position(i, 0), f"k{i}".encode(), f"{i:08d}".encode() * (value_size // 8))
    writer.flush()


def positions(records) -> list[int]:
    return [r.position.commit_lsn for r in records]


def test_records_read_back_in_append_order_with_keys_and_offsets(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    w.append(Position(1, 0), b"key", b"one")
    w.append(Position(1, 1), None, b"two")
    w.append(Position(2, 0), b"", b"three")
    w.flush()
    records = list(j.reader().read())
    w.close()
    assert [(r.position, r.key, r.value) for r in records] == [
        (Position(1, 0), b"key", b"one"), (Position(1, 1), None, b"two"),
        (Position(2, 0), b"", b"three")]
    assert records[0].offset == 0
    # frame = 8-byte header + 16-byte position + 2-byte key length + key + value
    assert records[0].next_offset == 8 + 16 + 2 + 3 + 3 == records[1].offset
    assert records[2].next_offset == w.end_offset


def test_nothing_is_visible_before_flush(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    w.append(Position(1, 0), None, b"buffered")
    assert list(j.reader().read()) == []
    w.flush()
    assert positions(j.reader().read()) == [1]
    w.close()


def test_read_from_an_offset_starts_with_that_record(tmp_path: Path) -> None:
    j = journal(tmp_path)
    with_writer = j.writer()
    fill(with_writer, 1, 10)
    with_writer.close()
    records = list(j.reader().read())
    assert positions(j.reader().read(records[4].offset)) == list(range(5, 11))
    assert positions(j.reader().read(records[4].next_offset)) == list(range(6, 11))
    # an offset inside a frame is rounded up to the next record, never re-reads
    assert positions(j.reader().read(records[4].offset + 3)) == list(range(6, 11))
    assert list(j.reader().read(records[-1].next_offset)) == []


def test_consumer_offsets_are_committed_per_consumer_and_survive_reopen(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 5)
    w.close()
    reader = j.reader()
    assert reader.committed_offset("compactor") == 0
    third = list(reader.read())[2]
    reader.commit_offset("compactor", third.next_offset)
    assert positions(journal(tmp_path).reader().read(
        journal(tmp_path).reader().committed_offset("compactor"))) == [4, 5]
    assert journal(tmp_path).reader().committed_offset("other") == 0
    stored = json.loads((tmp_path / "edms" / "consumers" / "compactor.json").read_text())
    assert stored["offset"] == third.next_offset
    assert not [p for p in (tmp_path / "edms" / "consumers").iterdir() if "tmp" in p.name]


def test_consumer_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        journal(tmp_path).reader().commit_offset("../evil", 1)


def test_schemas_are_published_once_and_read_back(tmp_path: Path) -> None:
    j = journal(tmp_path)
    registry = SchemaRegistry()
    w = j.writer()
    w.publish_schemas(registry)
    size = j.schemas_path.stat().st_size
    w.publish_schemas(registry)
    w.close()
    w = j.writer()  # a new writer knows what is published already
    w.publish_schemas(registry)
    w.close()
    assert j.schemas_path.stat().st_size == size
    read = j.reader().registry()
    assert {fp for fp, _ in read.items()} == {fp for fp, _ in registry.items()}


def test_encoded_records_decode_after_the_round_trip(tmp_path: Path) -> None:
    registry = SchemaRegistry()
    marker = TransactionMarker("BEGIN", "edms", Position(0x16B374D848, 0), 742, 1_700_000_000)
    key, value = encode(marker, registry)
    w = open_writer(f"file://{tmp_path}", "edms")
    w.publish_schemas(registry)
    w.append(marker.position, key, value)
    w.flush()
    w.close()
    reader = open_reader(f"file://{tmp_path}", "edms")
    from journal.transport import decoded

    assert list(decoded(reader.read(), reader.registry())) == [marker]


def test_second_writer_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    try:
        with pytest.raises(TransportError, match=f"already being written by pid {os.getpid()}"):
            j.writer()
    finally:
        w.close()
    j.writer().close()  # released on close


def test_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    w = journal(tmp_path).writer()
    code = ("import sys; from pathlib import Path; from journal.transport.file import FileJournal\n"
            "from journal.errors import TransportError\n"
            "try:\n    FileJournal(Path(sys.argv[1]), 'edms').writer()\n"
            "except TransportError as e:\n    print(e); sys.exit(3)\n")
    try:
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    finally:
        w.close()
    assert res.returncode == 3, res.stderr
    assert f"pid {os.getpid()}" in res.stdout


def test_torn_tail_is_cut_away_by_the_next_writer(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 3)
    good_end = w.end_offset
    w.close()
    segment = j.segments()[-1][1]
    with segment.open("ab") as fh:  # a crash mid-write: header and half a payload
        fh.write(b"\x00\x00\x01\x00\x12\x34\x56\x78" + b"half")
    assert positions(j.reader().read()) == [1, 2, 3]  # readers see "not yet written"
    w = j.writer()
    assert w.end_offset == good_end == segment.stat().st_size
    fill(w, 4, 1)
    w.close()
    assert positions(j.reader().read()) == [1, 2, 3, 4]


def test_torn_tail_of_full_length_with_bad_checksum_is_cut_away(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 3)
    w.close()
    segment = j.segments()[-1][1]
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # the last frame is complete but its last block never hit the disk
    segment.write_bytes(bytes(data))
    assert positions(j.reader().read()) == [1, 2]
    w = j.writer()
    fill(w, 3, 1)
    w.close()
    assert positions(j.reader().read()) == [1, 2, 3]


def test_zero_filled_tail_after_a_crash_is_cut_away(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 2)
    w.close()
    with j.segments()[-1][1].open("ab") as fh:
        fh.write(b"\x00" * 4096)
    w = j.writer()
    fill(w, 3, 1)
    w.close()
    assert positions(j.reader().read()) == [1, 2, 3]


def test_corrupt_middle_frame_is_reported_with_file_and_offset(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 5)
    w.close()
    records = list(j.reader().read())
    segment = j.segments()[-1][1]
    data = bytearray(segment.read_bytes())
    data[records[2].offset + 30] ^= 0xFF
    segment.write_bytes(bytes(data))
    expected = f"{segment}.*corrupt at offset {records[2].offset}"
    with pytest.raises(TransportError, match=expected):
        list(j.reader().read())
    with pytest.raises(TransportError, match=expected):
        j.writer()
    # the records before the damage are still delivered
    got = []
    with pytest.raises(TransportError):
        for r in j.reader().read():
            got.append(r.position.commit_lsn)
    assert got == [1, 2]


def test_corruption_in_an_older_segment_is_never_treated_as_a_torn_tail(tmp_path: Path) -> None:
    j = journal(tmp_path, segment_bytes=1024)
    w = j.writer()
    fill(w, 1, 30, value_size=80)
    w.close()
    first = j.segments()[0][1]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # the last frame of a segment that is not the newest
    first.write_bytes(bytes(data))
    with pytest.raises(TransportError, match=f"{first}.*corrupt"):
        list(j.reader().read())
    # a writer only recovers the newest segment: older ones were fsynced before it existed
    j.writer().close()
    assert first.read_bytes() == bytes(data)
    with pytest.raises(TransportError, match=f"{first}.*corrupt"):
        list(j.reader().read())


def test_segments_roll_at_the_configured_size_and_offsets_stay_global(tmp_path: Path) -> None:
    j = FileJournal.from_url(f"file://{tmp_path}?segment_bytes=2048", "edms")
    w = j.writer()
    fill(w, 1, 60, value_size=80)
    w.close()
    segments = j.segments()
    assert len(segments) > 3
    for (base, path), (next_base, _) in zip(segments, segments[1:], strict=False):
        assert path.name == f"{base:020d}.log"
        assert base + path.stat().st_size == next_base
        assert path.stat().st_size <= 2048
    records = list(j.reader().read())
    assert positions(records) == list(range(1, 61))
    middle_base = segments[2][0]
    assert middle_base in {r.offset for r in records}
    assert positions(j.reader().read(middle_base))[0] == next(
        r.position.commit_lsn for r in records if r.offset == middle_base)
    # a new writer continues the newest segment
    w = j.writer()
    fill(w, 61, 1)
    w.close()
    assert positions(j.reader().read(records[-1].next_offset)) == [61]


def test_truncate_before_deletes_only_segments_every_consumer_has_passed(tmp_path: Path) -> None:
    j = journal(tmp_path, segment_bytes=1024)
    w = j.writer()
    fill(w, 1, 40, value_size=80)
    records = list(j.reader().read())
    reader = j.reader()
    reader.commit_offset("compactor", records[30].next_offset)
    reader.commit_offset("slow", records[10].next_offset)
    before = j.segments()
    removed = j.truncate_before(records[-1].next_offset)
    after = j.segments()
    assert removed and all(p.name not in {q.name for _, q in after} for p in removed)
    # the slow consumer still finds every record it has not processed
    assert positions(j.reader().read(reader.committed_offset("slow"))) == list(range(12, 41))
    assert after[0][0] <= records[10].next_offset < after[1][0]
    reader.commit_offset("slow", records[-1].next_offset)
    reader.commit_offset("compactor", records[-1].next_offset)
    j.truncate_before(records[-1].next_offset)
    assert j.segments() == [before[-1]]  # the newest segment always stays
    fill(w, 41, 1)
    w.close()
    assert positions(j.reader().read(0)) == positions(j.reader().read())
    assert positions(j.reader().read(reader.committed_offset("slow"))) == [41]


def test_follow_waits_for_new_records_and_stops_when_idle(tmp_path: Path) -> None:
    j = journal(tmp_path, segment_bytes=1024)
    w = j.writer()
    fill(w, 1, 2)

    def later() -> None:
        time.sleep(0.3)
        fill(w, 3, 30, value_size=80)  # rolls segments while the reader follows

    t = threading.Thread(target=later)
    t.start()
    started = time.monotonic()
    got = positions(j.reader().read(follow=True, idle_timeout=1.0))
    t.join()
    w.close()
    assert got == list(range(1, 33))
    assert time.monotonic() - started < 5


def test_writer_clamps_consumer_offsets_past_the_end_after_a_crash(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 3)
    end = w.end_offset
    w.close()
    j.reader().commit_offset("compactor", end + 500)  # it read data later lost
    j.writer().close()
    assert j.reader().committed_offset("compactor") == end


def test_bad_urls_and_database_names_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FileJournal.from_url("file://otherhost/dir", "edms")
    with pytest.raises(ConfigError):
        FileJournal.from_url(f"file://{tmp_path}", "../etc")


def test_dedupe_over_a_resent_tail_yields_each_position_once(tmp_path: Path) -> None:
    j = journal(tmp_path)
    w = j.writer()
    fill(w, 1, 5)
    fill(w, 3, 5)  # capture re-sent from its last confirmed position
    w.close()
    assert positions(deduplicate(j.reader().read())) == [1, 2, 3, 4, 5, 6, 7]


def test_a_segment_roll_that_cannot_sync_its_directory_breaks_the_writer_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: a directory fsync that fails (EIO) cannot be produced for real here.
    import errno

    import journal.transport.file as fj
    from journal.errors import StorageError

    j = FileJournal.from_url(f"file://{tmp_path}?segment_bytes=2048", "edms")
    w = j.writer()
    fill(w, 1, 10, value_size=80)  # durable, in the first segment

    def failing_fsync_dir(path: Path) -> None:
        raise StorageError(path, OSError(errno.EIO, "Input/output error"), "sync directory")

    monkeypatch.setattr(fj, "fsync_dir", failing_fsync_dir)
    with pytest.raises(TransportError, match="starting a new segment.*Input/output error"):
        fill(w, 11, 40, value_size=80)
    with pytest.raises(TransportError, match="unusable"):
        w.append(Position(99, 0), None, b"x")
    w.close()
    monkeypatch.undo()

    w = j.writer()  # a new writer checks the tail and continues from what is durable
    fill(w, 100, 1)
    w.close()
    got = positions(deduplicate(j.reader().read()))
    assert got[:10] == list(range(1, 11)) and got[-1] == 100
