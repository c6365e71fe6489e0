"""``journal drill``: a restore drill now (the scheduler runs the same command)."""

from __future__ import annotations

import sys

import click

from journal.commands._common import config, echo_json
from journal.errors import ConfigError
from journal.jobs.drill import run_drill


@click.command("drill")
@click.option("--scratch", "scratch_url",
              help="postgresql:// URL of a database on the scratch server; the drill creates "
                   "a database of its own there and drops it (default: [schedule] "
                   "drill_target)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def drill(ctx: click.Context, scratch_url: str | None, as_json: bool) -> None:
    """Restore the latest packages into a scratch database, verify, record, drop it.
    Exits 1 when verify finds differences."""
    cfg = config(ctx)
    scratch_url = scratch_url or cfg.schedule.get("drill_target")
    if not scratch_url:
        raise ConfigError("give --scratch postgresql://…/postgres or set [schedule] "
                          "drill_target")
    result = run_drill(cfg, scratch_url)
    if as_json:
        echo_json({"ok": result.ok, "restore_seconds": round(result.restore_seconds, 3),
                   "reached_position": result.reached_position,
                   "verify": result.verify_summary})
    else:
        click.echo(result.line())
    sys.exit(0 if result.ok else 1)


def register(group: click.Group) -> None:
    group.add_command(drill)
