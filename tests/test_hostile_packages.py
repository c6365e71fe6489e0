"""Hostile archives are refused with a clear error before anything is written anywhere."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from journal.errors import PackageCorrupt, ValidationError
from journal.packages import MemberInfo, open_package, read_manifest, verify_package
from journal.stream_state import StreamState
from tests.support.streams import DOC, LINK, TAG, StreamBuilder, write_full


@pytest.fixture
def good(tmp_path: Path) -> Path:
    snap = StreamBuilder().snapshot({DOC: [{"id": i, "title": "t", "body": "b"}
                                           for i in range(20)], TAG: [], LINK: []})
    src = tmp_path / "src"
    src.mkdir()
    return write_full(src, StreamState().apply_all(snap), snap[-1].position, snap[-1].commit_ts)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _archive(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]],
             fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def _snapshot_of(directory: Path) -> set[str]:
    return {str(p) for p in directory.rglob("*")}


def _refused(path: Path, pattern: str) -> None:
    """verify and open both refuse, and nothing appears next to the archive or above it."""
    watched = path.parent.parent
    before = _snapshot_of(watched)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        with pytest.raises(ValidationError, match=pattern):
            verify_package(path)
        with pytest.raises(ValidationError, match=pattern):
            open_package(path, verify=False)
    finally:
        os.chdir(cwd)
    assert _snapshot_of(watched) == before


def _rest(good: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [(_file(name), data) for name, data in _members(good).items()]


@pytest.fixture
def place(tmp_path: Path) -> Path:
    d = tmp_path / "inbox"
    d.mkdir()
    return d


def test_path_traversal_member_is_refused(good, place):
    entries = _rest(good) + [(_file("../escaped.txt"), b"owned")]
    _refused(_archive(place / "a.tar", entries), r"'\.\.'")
    assert not (place.parent / "escaped.txt").exists()


def test_absolute_path_member_is_refused(good, place):
    entries = [(_file("/tmp/owned.txt"), b"owned")] + _rest(good)
    _refused(_archive(place / "a.tar", entries), "absolute path")


def test_symlink_member_is_refused(good, place):
    entries = _rest(good) + [(_special("tables/x.avro", tarfile.SYMTYPE, "/etc/passwd"), None)]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "symbolic link")


def test_hardlink_member_is_refused(good, place):
    entries = _rest(good) + [(_special("tables/x.avro", tarfile.LNKTYPE, "manifest.json"), None)]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "hard link")


def test_device_member_is_refused(good, place):
    entries = _rest(good) + [(_special("tables/x.avro", tarfile.CHRTYPE), None)]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "character device")


def test_duplicate_member_is_refused(good, place):
    rest = _rest(good)
    entries = rest + [rest[1]]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "duplicate")


def test_missing_manifest_is_refused(good, place):
    entries = [e for e in _rest(good) if e[0].name != "manifest.json"]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "manifest missing")


def test_manifest_not_first_is_refused(good, place):
    rest = _rest(good)
    _refused(_archive(place / "a.tar", rest[1:] + rest[:1], tarfile.USTAR_FORMAT),
             "not first")


def test_pax_extended_header_is_refused(good, place):
    info = _file("tables/" + "x" * 120 + ".avro")  # a long name needs a pax header
    entries = _rest(good) + [(info, b"data")]
    _refused(_archive(place / "a.tar", entries, tarfile.PAX_FORMAT), "pax extended header")


def _with_manifest(good: Path, change, members: dict[str, bytes]) -> list:
    """An archive whose manifest was rewritten consistently (id and all) by an attacker."""
    manifest = change(read_manifest(good))
    manifest = manifest.with_id()
    return [(_file("manifest.json"), manifest.canonical_bytes())] + [
        (_file(n), d) for n, d in members.items() if n != "manifest.json"]


def test_declared_size_that_lies_is_refused(good, place):
    members = _members(good)

    def lie(m):
        first = m.members[0]
        return replace(m, members=(replace(first, bytes=first.bytes + 100),) + m.members[1:])

    _refused(_archive(place / "a.tar", _with_manifest(good, lie, members),
                      tarfile.USTAR_FORMAT), "bytes")


def test_archive_header_size_past_end_of_file_is_refused(good, place):
    data = bytearray(good.read_bytes())
    path = place / "a.tar"
    # grow the second header's size field and fix its checksum: the data is not there
    header = 512 * ((len(read_manifest(good).canonical_bytes()) + 511) // 512 + 1)
    block = bytearray(data[header:header + 512])
    block[124:136] = b"%011o\x00" % (10**9)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    data[header:header + 512] = block
    path.write_bytes(bytes(data))
    _refused(path, "before end of file")


def test_member_that_decompresses_far_beyond_its_declared_size_is_refused(good, place):
    """A decompression bomb: a tiny block that expands to 256 MiB, checksums all valid."""
    members = _members(good)
    name = "tables/public.doc.avro"
    original = members[name]
    # rebuild the member: same header, one block of one record that is 256 MiB of zeros
    from journal.codec import avro_long as _zigzag

    schema_end = _find_header_end(original)
    header, sync = original[:schema_end], original[schema_end - 16:schema_end]
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\x00" * (256 * 1024 * 1024))
    member = header + _zigzag(1) + _zigzag(len(bomb)) + bomb + sync
    members[name] = member

    def declare(m):
        info = m.member(name)
        new = MemberInfo(name, hashlib.sha256(member).hexdigest(), len(member), 1, 4096,
                         info.table, info.fingerprint)
        return replace(m, members=tuple(new if x.name == name else x for x in m.members))

    path = _archive(place / "a.tar", _with_manifest(good, declare, members),
                    tarfile.USTAR_FORMAT)
    with pytest.raises(PackageCorrupt, match="decompressing to at most 4096"):
        verify_package(path)


def _find_header_end(ocf: bytes) -> int:
    """Offset just past an OCF header (magic, metadata map, sync marker)."""
    from journal.packages.tar import Span

    fh = io.BytesIO(ocf)
    span = Span(fh, 0, len(ocf), "x", "y")
    span.read(4, "magic")
    while (count := span.read_long("map")) != 0:
        for _ in range(abs(count)):
            span.read(span.read_long("k"), "k")
            span.read(span.read_long("v"), "v")
    span.read(16, "sync")
    return len(ocf) - span.left


def test_unlisted_member_is_refused(good, place):
    entries = _rest(good) + [(_file("tables/extra.avro"), b"Obj\x01")]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "unlisted member")


def test_manifest_edited_without_fixing_the_id_is_refused(good, place):
    members = _members(good)
    data = json.loads(members["manifest.json"])
    data["generation"] = "other"
    members["manifest.json"] = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    entries = [(_file(n), d) for n, d in members.items()]
    _refused(_archive(place / "a.tar", entries, tarfile.USTAR_FORMAT), "package id")


def test_a_consistent_manifest_with_a_malformed_catalog_fails_verification(good, place):
    from dataclasses import replace

    def break_catalog(manifest):
        catalog = json.loads(json.dumps(manifest.catalog))
        table = next(iter(catalog["tables"].values()))
        table["primary_key"] = ["no_such_column"]
        return replace(manifest, catalog=catalog)

    path = _archive(place / "a.tar", _with_manifest(good, break_catalog, _members(good)),
                    tarfile.USTAR_FORMAT)
    with pytest.raises(ValidationError, match=r"manifest's catalog table .*no_such_column"):
        verify_package(path)
