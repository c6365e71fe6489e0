"""The strict tar: packages are plain POSIX ustar archives, read without trusting them.

Reading parses every header itself (valid checksums, regular files only, names that
cannot leave the archive's folder and are ones a package may hold, each once, the
manifest first, zero padding, nothing after the end marker) and never extracts: a
member is a span of the file, read or hashed in place through ``Span``. Writing uses
``tarfile`` with the manifest first and a fixed mode, so equal content gives equal
members.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from journal.errors import PackageCorrupt, ValidationError
from journal.packages.manifest import EVENTS, MANIFEST, Manifest, is_member_name

READ_CHUNK = 1024 * 1024  # how much of a member is read at a time
_ZERO_BLOCK = bytes(512)

_TYPE_NAMES = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
    b"4": "a block device", b"5": "a directory", b"6": "a FIFO",
    b"x": "a pax extended header", b"g": "a pax global header",
    b"L": "a GNU long-name header", b"K": "a GNU long-link header",
}


@dataclass(frozen=True)
class TarMember:
    """Where one member's data sits in the archive file."""

    name: str
    offset: int  # of the data in the file
    size: int


def _octal(field_bytes: bytes) -> int | None:
    text = field_bytes.rstrip(b"\x00 ")
    if not text or not re.fullmatch(rb"[0-7]+", text):
        return None if text else 0
    return int(text, 8)


def _parse_header(block: bytes, at: int, package: str) -> tuple[str, int]:
    """(name, size) of one ustar header; PackageCorrupt for anything but a safe regular file."""
    stored = block[148:156]
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != b"%06o\x00 " % computed:
        raise PackageCorrupt(package, f"(tar header at byte {at})",
                             f"header checksum {computed:06o}", f"{stored!r}")
    raw_name = block[0:100].split(b"\x00", 1)[0]
    prefix = block[345:500].split(b"\x00", 1)[0]
    full = (prefix + b"/" + raw_name) if prefix else raw_name
    try:
        name = full.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageCorrupt(package, repr(full), "a UTF-8 member name", "other bytes") from None
    kind = block[156:157]
    if kind not in (b"0", b"\x00"):
        what = _TYPE_NAMES.get(kind, f"of unknown type {kind!r}")
        raise PackageCorrupt(package, name, "a regular file", f"{what} (refused)")
    _check_member_name(name, package)
    if block[257:263] != b"ustar\x00" or block[263:265] != b"00":
        raise PackageCorrupt(package, name, "a POSIX ustar header", f"magic {block[257:265]!r}")
    size = _octal(block[124:136])
    if size is None:
        raise PackageCorrupt(package, name, "an octal size", f"{block[124:136]!r}")
    return name, size


def _check_member_name(name: str, package: str) -> None:
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise PackageCorrupt(package, name, "a relative member name", "an absolute path (refused)")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise PackageCorrupt(package, name, "a name inside the archive",
                             "a path with '..' (refused)")
    if "\\" in name or "\x00" in name or "" in parts or "." in parts:
        raise PackageCorrupt(package, name, "a plain member name", "an unusual path (refused)")
    if name != MANIFEST and not is_member_name(name):
        raise PackageCorrupt(package, name, f"{MANIFEST}, {EVENTS} or tables/<name>.avro",
                             "an unknown member name (refused)")


def iter_tar(fh: IO[bytes], package: str, *, file_size: int) -> Iterator[TarMember]:
    """Members of a strictly-formed tar. The caller may read the member's data in
    between; this generator seeks past it, checks the padding and the end marker."""
    at = 0
    seen: set[str] = set()
    while True:
        fh.seek(at)
        block = fh.read(512)
        if len(block) < 512:
            raise PackageCorrupt(package, "(archive)", "an end-of-archive marker",
                                 f"end of file at byte {at + len(block)} (truncated?)")
        if block == _ZERO_BLOCK:
            _check_end(fh, at + 512, file_size, package)
            return
        name, size = _parse_header(block, at, package)
        if name in seen:
            raise PackageCorrupt(package, name, "unique member names", "a duplicate (refused)")
        if not seen and name != MANIFEST:
            raise PackageCorrupt(package, name, f"{MANIFEST} as the first member",
                                 f"{name!r} first (manifest missing or not first)")
        seen.add(name)
        data_at = at + 512
        padded = (size + 511) // 512 * 512
        if data_at + padded > file_size:
            raise PackageCorrupt(package, name, f"{size} bytes of data",
                                 f"{max(0, file_size - data_at)} bytes before end of file")
        yield TarMember(name, data_at, size)
        if padded != size:
            fh.seek(data_at + size)
            if fh.read(padded - size) != bytes(padded - size):
                raise PackageCorrupt(package, name, "zero padding after the member",
                                     "non-zero bytes")
        at = data_at + padded


def _check_end(fh: IO[bytes], at: int, file_size: int, package: str) -> None:
    # the end marker is two zero blocks; tar pads the archive with more zeros
    if file_size < at + 512 or file_size % 512:
        raise PackageCorrupt(package, "(archive)",
                             "two zero blocks ending the archive, in 512-byte blocks",
                             f"{file_size - at + 512} bytes from the end marker to the end "
                             "of the file (truncated or appended to)")
    fh.seek(at)
    while chunk := fh.read(READ_CHUNK):
        if chunk.count(0) != len(chunk):
            raise PackageCorrupt(package, "(archive)", "only zero bytes after the end marker",
                                 "data (appended or corrupted)")


def read_exact(fh: IO[bytes], offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``; ValidationError when the file is shorter."""
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise ValidationError(f"short read at byte {offset}")
    return data


def sha256_of(fh: IO[bytes], offset: int, size: int) -> str:
    """The SHA-256 (hex) of a span of the file, read in chunks."""
    h = hashlib.sha256()
    fh.seek(offset)
    left = size
    while left:
        chunk = fh.read(min(left, READ_CHUNK))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


class Span:
    """A bounded, optionally hashing view of one member's bytes in the archive."""

    def __init__(self, fh: IO[bytes], offset: int, size: int, package: str, member: str,
                 hasher: Any = None) -> None:
        self.fh, self.left, self.package, self.member, self.hasher = fh, size, package, member, \
            hasher
        fh.seek(offset)

    def read(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise PackageCorrupt(self.package, self.member, f"{n} more bytes for {what}",
                                 f"{self.left} left in the member")
        data = self.fh.read(n)
        if len(data) != n:
            raise PackageCorrupt(self.package, self.member, f"{n} bytes for {what}",
                                 f"{len(data)} (file changed or truncated)")
        self.left -= n
        if self.hasher is not None:
            self.hasher.update(data)
        return data

    def read_long(self, what: str) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.read(1, what)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
        raise PackageCorrupt(self.package, self.member, f"a varint for {what}", "over 10 bytes")


def write_tar(fh: IO[bytes], manifest: Manifest, paths: dict[str, Path]) -> None:
    """The archive: the manifest's canonical bytes first, then each member from its file."""
    mtime = int(datetime.now(UTC).timestamp())
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        body = manifest.canonical_bytes()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(body), mtime, 0o644
        tar.addfile(info, io.BytesIO(body))
        for m in manifest.members:
            info = tarfile.TarInfo(m.name)
            info.size, info.mtime, info.mode = m.bytes, mtime, 0o644
            with paths[m.name].open("rb") as src:
                tar.addfile(info, src)


