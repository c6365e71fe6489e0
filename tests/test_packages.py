"""Package format, store, verification stages and chains."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import avro.datafile
import avro.io
import pytest

from journal.codec import SchemaRegistry, decode
from journal.errors import ChainBroken, PackageCorrupt, ValidationError
from journal.packages import Manifest, open_package, read_manifest, verify_chain, verify_package
from journal.packages.store import open_store
from journal.stream_state import StreamState
from tests.support.streams import DOC, LINK, TAG, StreamBuilder, write_full, write_segment


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path, list]:
    """A full snapshot (200 docs) and a segment after it."""
    sb = StreamBuilder()
    snap = sb.snapshot({DOC: [{"id": i, "title": f"doc {i}", "body": "x" * (i % 50)}
                              for i in range(200)],
                        TAG: [{"name": "a", "n": 1}], LINK: []})
    full = write_full(tmp_path, StreamState().apply_all(snap), snap[-1].position,
                      snap[-1].commit_ts)
    recs = sb.change([("c", TAG, None, {"name": "b", "n": 2}, ())], mark="before-upgrade")
    recs += sb.change([("u", DOC, None, {"id": 3, "title": "new", "body": None}, ("body",))])
    seg = write_segment(tmp_path, recs, read_manifest(full), SchemaRegistry())
    return full, seg, recs


def test_package_is_a_plain_tar_with_the_manifest_first(chain):
    full, seg, _ = chain
    with tarfile.open(full) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert names[0] == "manifest.json"
    assert sorted(names[1:]) == ["tables/public.doc.avro", "tables/public.link.avro",
                                 "tables/public.tag.avro"]
    assert manifest["kind"] == "full" and manifest["format_version"] == 1
    with tarfile.open(seg) as tar:
        assert tar.getnames() == ["manifest.json", "events.avro"]


def test_members_are_readable_by_the_reference_avro_implementation(chain):
    full, seg, recs = chain
    with tarfile.open(full) as tar:
        rows = list(avro.datafile.DataFileReader(tar.extractfile("tables/public.doc.avro"),
                                                 avro.io.DatumReader()))
    assert [r["id"] for r in rows] == list(range(200))
    with tarfile.open(seg) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        events = list(avro.datafile.DataFileReader(tar.extractfile("events.avro"),
                                                   avro.io.DatumReader()))
    registry = SchemaRegistry()
    for text in manifest["schemas"].values():
        registry.add(text)
    assert [decode(e["value"], registry) for e in events] == recs


def test_package_id_is_derived_from_content_and_sorts_by_kind_and_position(chain):
    full, seg, _ = chain
    m = read_manifest(full)
    assert m.package_id == m.derive_id() and full.name == f"{m.package_id}.tar"
    s = read_manifest(seg)
    assert s.package_id.startswith("segment-") and m.package_id.startswith("full-")
    assert s.package_id[8:25] > m.package_id[5:22]  # the LSN part orders them


def test_manifest_round_trips_through_json(chain):
    m = read_manifest(chain[0])
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m


def test_segment_reader_returns_transactions_and_marks(chain):
    _, seg, recs = chain
    reader = open_package(seg)
    txns = list(reader.transactions())
    assert len(txns) == 2 and txns[0].records[-1].content == b"before-upgrade"
    assert reader.manifest.marks[0][0] == "before-upgrade"
    assert reader.manifest.first_commit_ts == recs[0].commit_ts


def test_full_reader_returns_rows_in_key_order(chain):
    rows = list(open_package(chain[0]).rows("public.doc"))
    assert [r["id"] for r in rows] == list(range(200)) and rows[5]["body"] == "x" * 5


def test_store_publishes_atomically_and_lists_by_position(tmp_path, chain):
    full, seg, _ = chain
    store = open_store(f"file://{tmp_path}/store")
    copy = tmp_path / "copy.tar"
    copy.write_bytes(seg.read_bytes())
    s = store.put(copy)
    f = store.put(full)
    assert not copy.exists() and not full.exists()
    assert [m.package_id for m in store.list()] == [f.package_id, s.package_id]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
        [f"{f.package_id}.tar", f"{s.package_id}.tar"])
    assert store.get(s.package_id[:20]) == s  # a unique prefix is enough


def test_leased_package_cannot_be_deleted(tmp_path, chain):
    store = open_store(f"file://{tmp_path}/store")
    m = store.put(chain[0])
    with store.lease([m.package_id], "restore"):
        assert m.package_id in store.leased()
        with pytest.raises(ValidationError, match="leased"):
            store.delete(m.package_id)
    store.delete(m.package_id)
    assert store.list() == []


def test_lease_of_a_dead_process_holds_nothing(tmp_path, chain):
    store = open_store(f"file://{tmp_path}/store")
    m = store.put(chain[0])
    lease_dir = tmp_path / "store" / ".leases"
    lease_dir.mkdir()
    (lease_dir / "x.json").write_text(json.dumps(
        {"lease_id": "x", "package_ids": [m.package_id], "purpose": "restore",
         "pid": 2**22 + 12345, "host": __import__("socket").gethostname(),
         "expires_at": 1e12}))
    assert store.leased() == set()


def test_verify_detects_every_one_of_200_single_byte_flips(chain, tmp_path):
    rng = random.Random(20260501)
    for original in chain[:2]:
        data = original.read_bytes()
        verify_package(original)
        for offset in rng.sample(range(len(data)), 200):
            damaged = bytearray(data)
            damaged[offset] ^= 1 << rng.randrange(8)
            path = tmp_path / "damaged.tar"
            path.write_bytes(bytes(damaged))
            with pytest.raises(ValidationError):
                verify_package(path)


def test_truncated_package_is_refused(chain, tmp_path):
    data = chain[0].read_bytes()
    with tarfile.open(chain[0]) as tar:
        last = tar.getmembers()[-1]
    for cut in (100, 600, len(data) // 2, last.offset_data + last.size - 1,
                last.offset_data + last.size + 512):
        path = tmp_path / "short.tar"
        path.write_bytes(data[:cut])
        with pytest.raises(PackageCorrupt):
            verify_package(path)


def test_member_whose_content_changed_names_member_and_checksums(chain, tmp_path):
    data = bytearray(chain[0].read_bytes())
    m = read_manifest(chain[0])
    with tarfile.open(chain[0]) as tar:
        info = tar.getmember("tables/public.tag.avro")
    data[info.offset_data + info.size - 20] ^= 0xFF
    path = tmp_path / "bad.tar"
    path.write_bytes(bytes(data))
    with pytest.raises(PackageCorrupt) as err:
        verify_package(path)
    assert err.value.member == "tables/public.tag.avro"
    assert m.member("tables/public.tag.avro").sha256 in err.value.expected


def test_chain_checks_gap_overlap_and_missing_parent(chain):
    full, seg, _ = chain
    f, s = read_manifest(full), read_manifest(seg)
    verify_chain([f, s])
    from dataclasses import replace

    from journal.positions import Position

    later = replace(s, from_position=Position(s.from_position.commit_lsn + 1, 0))
    with pytest.raises(ChainBroken, match="missing parent"):
        verify_chain([f, later])
    second = replace(s, package_id="segment-x", from_position=s.to_position,
                     to_position=Position(s.to_position.commit_lsn + 0x100, 3),
                     parent_id=s.package_id)
    verify_chain([f, s, second])
    with pytest.raises(ChainBroken, match="gap"):
        verify_chain([f, s, replace(second, from_position=Position(second.from_position
                                                                    .commit_lsn + 5, 0))])
    with pytest.raises(ChainBroken, match="overlap"):
        verify_chain([f, s, replace(second, from_position=f.to_position)])
    with pytest.raises(ChainBroken, match="parent"):
        verify_chain([f, s, replace(second, parent_id="segment-other")])


def test_stray_bytes_after_the_archive_are_refused(chain, tmp_path):
    path = tmp_path / "tail.tar"
    path.write_bytes(chain[0].read_bytes() + b"\x00" * 511 + b"!")
    with pytest.raises(PackageCorrupt, match="after the end marker|two zero blocks"):
        verify_package(path)


def test_open_without_verify_still_checks_each_member_as_it_is_read(chain, tmp_path):
    data = bytearray(chain[0].read_bytes())
    with tarfile.open(chain[0]) as tar:
        info = tar.getmember("tables/public.doc.avro")
    # change a byte inside a block: the block may still decode, the hash will not match
    data[info.offset_data + info.size - 30] ^= 0x01
    path = tmp_path / "late.tar"
    path.write_bytes(bytes(data))
    reader = open_package(path, verify=False)
    with pytest.raises(PackageCorrupt):
        for _ in reader.rows("public.doc"):
            pass

