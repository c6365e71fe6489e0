"""``journal snapshot export``: a standalone full snapshot at any covered position.

The newest full snapshot at or before the target is folded with the segments after it,
cut at the target (``journal.fold.Target``). The result names no parent: it restores on
its own. The packages read are leased for the duration, so prune leaves them alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from journal.compactor import chain_after
from journal.errors import ValidationError
from journal.fold import Target, fold
from journal.packages import Manifest, verify_package
from journal.store import PackageStore


def plan(manifests: list[Manifest], target: Target) -> tuple[Manifest, list[Manifest]]:
    """The base full snapshot and the segments to fold for ``target`` (pure)."""
    fulls = [m for m in manifests if m.kind == "full" and _at_or_before(m, target)]
    if not fulls:
        raise ValidationError(f"no full snapshot at or before {target.describe()}: "
                              "the packages start later (or there are none)")
    base = fulls[-1]
    segments = chain_after(manifests, base)
    needed = []
    for seg in segments:
        needed.append(seg)
        if _ends_after(seg, target):
            break
    else:
        newest = segments[-1].to_position if segments else base.to_position
        if target.lsn is not None and target.lsn > newest.commit_lsn:
            raise ValidationError(f"{target.describe()} is not packaged yet (packages end at "
                                  f"{newest}); run `journal compact --once` first")
        last_ts = (segments[-1] if segments else base).last_commit_ts
        if target.time is not None and (last_ts is None or target.time > last_ts):
            raise ValidationError(f"{target.describe()} is not packaged yet (the newest "
                                  "packaged commit is earlier); run `journal compact --once`")
    return base, needed


def _at_or_before(m: Manifest, target: Target) -> bool:
    if target.lsn is not None and m.to_position.commit_lsn > target.lsn:
        return False
    return not (target.time is not None and (m.last_commit_ts or 0) > target.time)


def _ends_after(seg: Manifest, target: Target) -> bool:
    if target.lsn is not None and seg.to_position.commit_lsn > target.lsn:
        return True
    return target.time is not None and (seg.last_commit_ts or 0) > target.time


def export_snapshot(store: PackageStore, output: Path, target: Target | None = None,
                    *, spill_bytes: int = 64 * 1024 * 1024) -> Manifest:
    """Write the full snapshot at ``target`` to ``output`` (atomically) and return it."""
    target = target or Target()
    output = Path(output)
    if output.exists():
        raise ValidationError(f"{output} exists; choose another file (nothing was written)")
    base, segments = plan(store.list(), target)
    ids = [base.package_id] + [s.package_id for s in segments]
    workdir = output.parent if output.parent.exists() else Path(".")
    with store.lease(ids, f"export to {output}"):
        readers = [store.open(i, verify=True) for i in ids]
        tmp, manifest = fold(readers[0], readers[1:], workdir, target=target,
                             spill_bytes=spill_bytes)
    try:
        verify_package(tmp)
        os.rename(tmp, output)  # same directory: atomic
        fd = os.open(output.parent if str(output.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest
