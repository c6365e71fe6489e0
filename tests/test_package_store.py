"""The package store interface: a store that keeps no files is read and verified like
the file store, through the interface alone."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

from journal.catalog import Column, TableSchema
from journal.errors import ValidationError
from journal.packages import (
    Lease,
    Manifest,
    PackageBuilder,
    PackageStore,
    positions_sort_key,
    read_manifest,
    verify_store,
)
from journal.positions import Position

DOC = TableSchema("public", "doc", (Column("id", "bigint", 20, True),
                                    Column("title", "text", 25, False)), ("id",))


class InMemory:
    """A package's bytes held in memory: a package source that is no file."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def open(self, mode: str = "rb") -> IO[bytes]:
        return io.BytesIO(self.data)


class MemoryStore(PackageStore):
    """The interface implemented over a dict: nothing of it is a local path."""

    def __init__(self, workdir: Path) -> None:
        self._packages: dict[str, bytes] = {}
        self._workdir = workdir

    def list(self) -> list[Manifest]:
        return sorted((self.get(i) for i in self.ids()), key=positions_sort_key)

    def ids(self) -> list[str]:
        return sorted(self._packages)

    def get(self, package_id: str) -> Manifest:
        return read_manifest(self.source(package_id))

    def source(self, package_id: str) -> InMemory:
        if package_id not in self._packages:
            raise ValidationError(f"no package {package_id}")
        return InMemory(f"{package_id} (memory)", self._packages[package_id])

    def put(self, tmp_file: Path) -> Manifest:
        manifest = read_manifest(tmp_file)
        self._packages[manifest.package_id] = tmp_file.read_bytes()
        tmp_file.unlink()
        return manifest

    def delete(self, package_id: str) -> None:
        del self._packages[package_id]

    def lease(self, package_ids: Iterable[str], purpose: str,
              seconds: float = 60) -> AbstractContextManager[Lease]:
        @contextmanager
        def held() -> Iterator[Lease]:
            yield Lease("l", tuple(package_ids), purpose, os.getpid(), "here",
                        time.time() + seconds)
        return held()

    def leases(self) -> list[Lease]:
        return []

    def workdir(self) -> Path:
        return self._workdir

    def copy_as(self, package_id: str, other_id: str) -> None:
        """Store a package's bytes again under another id (a mislabelled copy)."""
        self._packages[other_id] = self._packages[package_id]

    def damage(self, package_id: str, member: str) -> None:
        """Flip a byte inside a member's data."""
        data = bytearray(self._packages[package_id])
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            at = tar.getmember(member).offset_data + 40
        data[at] ^= 0xFF
        self._packages[package_id] = bytes(data)


def _full(store: PackageStore, rows: int, lsn: int) -> Manifest:
    builder = PackageBuilder("full", store.workdir())
    writer = builder.table(DOC)
    for i in range(rows):
        writer.write({"id": i, "title": f"doc {i} at {lsn}"})
    tmp, _ = builder.finish(system_identifier="1", database="d", generation="g",
                            to_position=Position(lsn, 0), first_commit_ts=lsn,
                            last_commit_ts=lsn)
    return store.put(tmp)


def test_verify_store_checks_every_package_of_a_store_that_keeps_no_files(tmp_path):
    store = MemoryStore(tmp_path)
    first, second = _full(store, 50, 100), _full(store, 70, 200)
    assert not list(tmp_path.glob("*.tar"))  # the packages are in memory only

    checks = list(verify_store(store))

    assert [(c.subject, c.ok) for c in checks] == [
        (first.package_id, True), (second.package_id, True), ("chain of 2 packages", True)]
    assert [c.manifest for c in checks[:2]] == [first, second]


def test_verify_store_reports_a_damaged_package_and_still_checks_the_others(tmp_path):
    store = MemoryStore(tmp_path)
    good, bad = _full(store, 50, 100), _full(store, 70, 200)
    store.damage(bad.package_id, "tables/public.doc.avro")

    checks = {c.subject: c for c in verify_store(store)}

    assert checks[good.package_id].ok
    assert not checks[bad.package_id].ok and "SHA-256" in checks[bad.package_id].problem
    assert checks["chain of 1 packages"].ok


def test_store_reads_rows_and_refuses_a_package_stored_under_another_id(tmp_path):
    store = MemoryStore(tmp_path)
    m = _full(store, 30, 100)
    with store.open(m.package_id) as reader:
        assert [r["id"] for r in reader.rows("public.doc")] == list(range(30))
    assert store.exists(m.package_id) and not store.exists("full-0")

    store.copy_as(m.package_id, "full-elsewhere")
    checks = {c.subject: c for c in verify_store(store)}
    assert "package id full-elsewhere" in checks["full-elsewhere"].problem
