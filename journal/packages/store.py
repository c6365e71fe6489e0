"""The package store: where packages live, behind one small interface.

Callers list manifests, open readers and verify packages through ``PackageStore``; no
caller sees how or where a store keeps the bytes. An implementation lists its package
ids, hands readers a ``PackageSource`` for one package, publishes, deletes and leases.

``file:///dir`` keeps each package as ``<dir>/<package_id>.tar``. A package becomes
visible only by a rename of a complete, fsynced temporary file (then the directory is
fsynced), so a reader never sees half a package. Temporary files and build directories
start with a dot and carry the writer's pid; ``cleanup`` removes those of dead writers.

Leases protect packages that a running restore or export has planned to read: prune and
``delete`` refuse a leased package. A lease is a small file under ``<dir>/.leases``; it
holds while its holder's process lives (same host) and never beyond its expiry.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from journal.config import file_url_path
from journal.durable import fsync_dir, publish, storage, write_atomically
from journal.errors import ConfigError, PackageCorrupt, StorageError, ValidationError
from journal.packages.manifest import Manifest, positions_sort_key
from journal.packages.reader import PackageReader, PackageSource, open_package, read_manifest
from journal.packages.verify import verify_package
from journal.processes import pid_alive

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Lease:
    lease_id: str
    package_ids: tuple[str, ...]
    purpose: str
    pid: int
    host: str
    expires_at: float


class PackageStore(ABC):
    @abstractmethod
    def list(self) -> list[Manifest]:
        """Every package's manifest, sorted by to_position (a segment before the full
        snapshot folded at its end)."""

    @abstractmethod
    def ids(self) -> list[str]:
        """Every package id the store holds, sorted, without reading any package: one
        whose manifest is damaged is listed too, so that verification reports it."""

    @abstractmethod
    def get(self, package_id: str) -> Manifest: ...

    @abstractmethod
    def source(self, package_id: str) -> PackageSource:
        """The package's bytes, for this store's readers (callers use ``open`` and
        ``verify``); a remote store may stream them or read a cached copy."""

    @abstractmethod
    def put(self, tmp_file: Path) -> Manifest:
        """Publish a finished package file atomically under its id; ``tmp_file`` is gone."""

    @abstractmethod
    def delete(self, package_id: str) -> None:
        """Remove a package; refuses (ValidationError) while it is leased."""

    @abstractmethod
    def lease(self, package_ids: Iterable[str], purpose: str,
              seconds: float = DEFAULT_LEASE_SECONDS) -> AbstractContextManager[Lease]: ...

    @abstractmethod
    def leases(self) -> list[Lease]:
        """The leases in force now."""

    @abstractmethod
    def workdir(self) -> Path:
        """Where package builders put temporary files (same file system as the store)."""

    def exists(self, package_id: str) -> bool:
        """Whether the store holds a package of exactly this id."""
        return package_id in self.ids()

    def open(self, package_id: str, verify: bool = True) -> PackageReader:
        return open_package(self.source(package_id), verify=verify)

    def verify(self, package_id: str, *, decode: bool = True) -> Manifest:
        """``verify_package`` on the stored package (``decode`` as there), which must hold
        the package it is stored as."""
        manifest = verify_package(self.source(package_id), decode=decode)
        if manifest.package_id != package_id:
            raise PackageCorrupt(package_id, "manifest.json", f"package id {package_id}",
                                 f"package id {manifest.package_id}")
        return manifest

    def leased(self) -> set[str]:
        return {pid for lease in self.leases() for pid in lease.package_ids}

    def cleanup(self) -> list[Path]:
        """Remove leftovers of writers that died; returns what was removed."""
        return []


def open_store(url: str) -> PackageStore:
    """The store at ``file:///dir`` (``file://./dir`` for a path relative to the current
    directory)."""
    path = file_url_path(url)
    if path is not None:
        return FileStore(path)
    raise ConfigError(f"unsupported package store URL {url!r}: use file:///dir")


def _read_only(exc: StorageError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.EROFS



class FileStore(PackageStore):
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, tuple[tuple[int, int], Manifest]] = {}

    def _ensure(self) -> None:
        if not self.directory.exists():
            with storage(self.directory, "create"):
                self.directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.directory.parent)

    def workdir(self) -> Path:
        self._ensure()
        return self.directory

    def files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.glob("*.tar") if not p.name.startswith("."))

    def _manifest_of(self, path: Path) -> Manifest:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        hit = self._cache.get(path.name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        manifest = read_manifest(path)
        if f"{manifest.package_id}.tar" != path.name:
            raise PackageCorrupt(path.name, "manifest.json", f"package id {path.stem}",
                                 f"package id {manifest.package_id} (renamed file?)")
        self._cache[path.name] = (stamp, manifest)
        return manifest

    def list(self) -> list[Manifest]:
        return sorted((self._manifest_of(p) for p in self.files()), key=positions_sort_key)

    def ids(self) -> list[str]:
        return [p.stem for p in self.files()]

    def path(self, package_id: str) -> Path:
        """The file a package is (or would be) published as."""
        if "/" in package_id or package_id.startswith("."):
            raise ValidationError(f"not a package id: {package_id!r}")
        return self.directory / f"{package_id}.tar"

    def source(self, package_id: str) -> PackageSource:
        return self.path(package_id)

    def exists(self, package_id: str) -> bool:
        return self.path(package_id).exists()

    def get(self, package_id: str) -> Manifest:
        path = self.path(package_id)
        if not path.exists():
            known = [p.stem for p in self.files() if p.stem.startswith(package_id)]
            if len(known) == 1:  # a unique prefix is enough, as with git commits
                return self._manifest_of(self.path(known[0]))
            hint = f" (matches {len(known)} packages)" if known else ""
            raise ValidationError(f"no package {package_id} in {self.directory}{hint}")
        return self._manifest_of(path)

    def put(self, tmp_file: Path) -> Manifest:
        tmp = Path(tmp_file)
        staged: Path | None = None
        try:
            self._ensure()
            manifest = read_manifest(tmp)
            if tmp.parent.resolve() != self.directory.resolve():
                # a rename is only atomic inside one directory: copy in first
                staged = self.directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.tar"
                with storage(staged), tmp.open("rb") as src, staged.open("wb") as dst:
                    while chunk := src.read(1024 * 1024):
                        dst.write(chunk)
                tmp.unlink()
                tmp = staged
            final = self.path(manifest.package_id)
            with storage(final), tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            if final.exists():  # same id: same content, already published
                tmp.unlink()
                return manifest
            publish(tmp, final)
        except BaseException:
            # nothing half-written stays behind; the package is built again from the
            # journal, whose offset moves only after a successful put
            tmp.unlink(missing_ok=True)
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        log.info("published package %s", manifest.package_id)
        return manifest

    def delete(self, package_id: str) -> None:
        holders = [lease for lease in self.leases() if package_id in lease.package_ids]
        if holders:
            who = ", ".join(f"{h.purpose} (pid {h.pid})" for h in holders)
            raise ValidationError(f"package {package_id} is leased by {who}; not deleted")
        with storage(self.path(package_id), "delete"):
            self.path(package_id).unlink()
        fsync_dir(self.directory)
        self._cache.pop(f"{package_id}.tar", None)

    # -- leases ---------------------------------------------------------------------------

    @property
    def _lease_dir(self) -> Path:
        return self.directory / ".leases"

    @contextmanager
    def _lease(self, package_ids: Iterable[str], purpose: str, seconds: float
               ) -> Iterator[Lease]:
        lease = Lease(uuid.uuid4().hex, tuple(package_ids), purpose, os.getpid(),
                      socket.gethostname(), time.time() + seconds)
        path = self._lease_dir / f"{lease.lease_id}.json"
        written = False
        try:
            self._ensure()
            with storage(self._lease_dir, "create"):
                self._lease_dir.mkdir(exist_ok=True)
            write_atomically(path, json.dumps(lease.__dict__).encode())
            written = True
        except StorageError as exc:
            if not _read_only(exc):
                raise
            # a store mounted read-only (an archive copy) cannot be pruned through this
            # mount either: reading it needs no lease
            log.info("package store %s is read-only: reading it without a lease", self.directory)
        try:
            yield lease
        finally:
            if written:
                path.unlink(missing_ok=True)

    def lease(self, package_ids: Iterable[str], purpose: str,
              seconds: float = DEFAULT_LEASE_SECONDS) -> AbstractContextManager[Lease]:
        return self._lease(package_ids, purpose, seconds)

    def leases(self) -> list[Lease]:
        if not self._lease_dir.exists():
            return []
        found = []
        host = socket.gethostname()
        now = time.time()
        for path in self._lease_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
                lease = Lease(data["lease_id"], tuple(data["package_ids"]), data["purpose"],
                              int(data["pid"]), data["host"], float(data["expires_at"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written or damaged: a lease that cannot be read holds nothing
            alive = lease.host != host or pid_alive(lease.pid)
            if alive and lease.expires_at > now:
                found.append(lease)
        return found

    def cleanup(self) -> list[Path]:
        removed: list[Path] = []
        if not self.directory.exists():
            return removed
        import shutil

        live = {lease.lease_id for lease in self.leases()}
        if self._lease_dir.exists():
            for path in self._lease_dir.glob("*.json"):
                if path.stem not in live:  # holder gone or expired
                    with storage(path, "remove"):
                        path.unlink(missing_ok=True)
                    removed.append(path)

        for path in self.directory.glob(".*-*"):
            parts = path.name.split("-")
            if parts[0] not in (".tmp", ".build") or not parts[1].isdigit():
                continue
            if pid_alive(int(parts[1])) and int(parts[1]) != 0:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with storage(path, "remove"):
                    path.unlink(missing_ok=True)
            removed.append(path)
        return removed
