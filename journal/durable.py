"""Durable file operations: what "written" means for the journal, packages and state.

A file is durable once its data is fsynced and the directory entry that names it is
fsynced too; a rename publishes a complete file atomically within one directory.

Every failure here (disk full, read-only file system, permission) is a StorageError that
names the path, never a bare OSError: the operator must learn *where* to make room.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from journal.errors import StorageError


@contextmanager
def storage(path: Path | str, doing: str = "write") -> Iterator[None]:
    """Turn an OSError inside the block into a StorageError naming ``path``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(path, exc, doing) from exc


def fsync_dir(path: Path) -> None:
    with storage(path, "sync directory"):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Rename an fsynced temporary file to its final name, durably (same directory)."""
    with storage(final):
        os.replace(tmp, final)
    fsync_dir(final.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old content or the new, never half."""
    with storage(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with storage(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
