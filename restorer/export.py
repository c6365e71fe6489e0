"""``journal snapshot export``: a standalone full snapshot at any covered position.

The newest full snapshot at or before the target is folded with the segments after it,
cut at the target; the packages are planned by the restore planner, so an export and a
restore to the same target read the same packages. The result names no parent: it restores on
its own. The packages read are leased for the duration, so prune leaves them alone.
"""

from __future__ import annotations

from pathlib import Path

from journal.durable import publish, storage
from journal.errors import ValidationError
from journal.fold import fold
from journal.packages import Manifest, verify_package
from journal.packages.store import PackageStore
from journal.targets import RestoreTarget
from restorer.plan import make_plan


def export_snapshot(store: PackageStore, output: Path, target: RestoreTarget | None = None,
                    *, spill_bytes: int = 64 * 1024 * 1024) -> Manifest:
    """Write the full snapshot at ``target`` to ``output`` (atomically) and return it.

    The packages are chosen exactly as a restore to the same target chooses them."""
    output = Path(output).absolute()
    if output.exists():
        raise ValidationError(f"{output} exists; choose another file (nothing was written)")
    if not output.parent.is_dir():
        raise ValidationError(f"directory {output.parent} does not exist; create it or "
                              "choose another file (nothing was written)")
    chosen = make_plan(store.list(), target or RestoreTarget())
    ids = list(chosen.package_ids)
    # built next to the output, so that the final rename is atomic
    workdir = output.parent
    with store.lease(ids, f"export to {output}"):
        readers = [store.open(i, verify=True) for i in ids]
        with storage(workdir):  # the fold's own spill files too: name the directory
            tmp, manifest = fold(readers[0], readers[1:], workdir, target=chosen.cutoff,
                                 spill_bytes=spill_bytes)
    try:
        verify_package(tmp)
        publish(tmp, output)  # same directory: atomic
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest
