"""``journal snapshot export|now``: standalone full snapshots."""

from __future__ import annotations

from pathlib import Path

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json, parse_time
from journal.compactor import fold_latest
from journal.errors import ConfigError
from journal.jobs.recorder import current
from journal.packages.store import open_store
from journal.positions import parse_lsn
from journal.targets import RestoreTarget
from restorer.export import export_snapshot


def register(group: click.Group) -> None:
    @group.group("snapshot")
    def snapshot() -> None:
        """Full snapshots: export one at any packaged position, or fold one now."""

    @snapshot.command("export")
    @click.option("--at", "at", help="stop before the first transaction committed after "
                  "this time (ISO 8601 with a zone, e.g. 2026-11-26T10:00:00Z)")
    @click.option("--to-lsn", "to_lsn", help="include transactions committed up to this LSN")
    @click.option("--to-mark", "to_mark", help="include up to the named mark (journal mark NAME)")
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                  help="package file to write (must not exist)")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def export(ctx: click.Context, at: str | None, to_lsn: str | None, to_mark: str | None,
               output: str, as_json: bool) -> None:
        """Write a standalone full snapshot package (restorable on its own)."""
        try:
            lsn = parse_lsn(to_lsn) if to_lsn else None
        except ValueError as exc:
            raise ConfigError(f"--to-lsn: {exc}") from None
        target = RestoreTarget.from_options(
            time=parse_time(at, "--at") if at else None, lsn=lsn, mark=to_mark or None)
        cfg = load(ctx)
        manifest = export_snapshot(open_store(cfg.packages_url), Path(output), target)
        current().add_manifests([manifest])
        if as_json:
            echo_json(manifest.to_json() | {"schemas": len(manifest.schemas), "file": output})
        else:
            click.echo(f"{output}: full snapshot at {manifest.to_position} "
                       f"({manifest.rows} rows, {len(manifest.members)} tables)")

    @snapshot.command("now")
    @click.pass_context
    def now(ctx: click.Context) -> None:
        """Fold the segments after the newest full snapshot into a new one."""
        cfg = load(ctx)
        manifest = fold_latest(open_store(cfg.packages_url))
        current().add_manifests([manifest] if manifest else [])
        click.echo(manifest.package_id if manifest else "nothing to fold")
