"""Real full and read-only file systems for the I/O failure tests: small tmpfs mounts.

Tests run as root, for whom chmod makes nothing read-only; a tmpfs of a few kilobytes
fills up for real (ENOSPC) and a read-only mount refuses every write (EROFS). Both can be
remounted larger or writable with their content kept, which is how a test proves that
the run after the failure loses nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ci import unavailable


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        # needs root (or CAP_SYS_ADMIN), which CI has: there a failure to mount is a failure
        unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: 64k, 16m) mounted on ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    """Change a mount's options in place (``size=64m``, ``ro``, ``rw``); content stays."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def leftovers(directory: Path) -> list[str]:
    """Temporary files and build directories a writer left behind."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")
                  and p.name != ".leases")
