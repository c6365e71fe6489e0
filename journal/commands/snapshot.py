"""``journal snapshot export|now``: standalone full snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json
from journal.compactor import fold_latest
from journal.errors import ConfigError
from journal.events import datetime_to_micros
from journal.export import export_snapshot
from journal.fold import Target
from journal.positions import parse_lsn
from journal.store import open_store


def parse_timestamp(text: str) -> int:
    """ISO 8601 to µs UTC; a time without zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a timestamp: {text!r} (use ISO 8601, e.g. "
                          "2026-05-01T12:00:00+02:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return datetime_to_micros(value)


def register(group: click.Group) -> None:
    @group.group("snapshot")
    def snapshot() -> None:
        """Full snapshots: export one at any packaged position, or fold one now."""

    @snapshot.command("export")
    @click.option("--at", "at", help="stop before the first transaction committed after "
                  "this time (ISO 8601; UTC when no zone is given)")
    @click.option("--to-lsn", "to_lsn", help="include transactions committed up to this LSN")
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                  help="package file to write (must not exist)")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def export(ctx: click.Context, at: str | None, to_lsn: str | None, output: str,
               as_json: bool) -> None:
        """Write a standalone full snapshot package (restorable on its own)."""
        if at and to_lsn:
            raise ConfigError("give --at or --to-lsn, not both")
        try:
            target = Target(lsn=parse_lsn(to_lsn) if to_lsn else None,
                            time=parse_timestamp(at) if at else None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = load(ctx)
        manifest = export_snapshot(open_store(cfg.packages_url), Path(output), target)
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
        click.echo(manifest.package_id if manifest else "nothing to fold")
