"""``journal audit list | verify``: the hash-chained audit trail."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from journal import audit as audit_file
from journal.commands._common import config, echo_json
from journal.errors import ValidationError
from journal.jobs import audit_chain
from journal.jobs.database import open_database


def register(group: click.Group) -> None:
    @group.group("audit")
    def audit() -> None:
        """Who ran what, when, with which outcome; each entry chained to the one before."""

    @audit.command("list")
    @click.option("--limit", default=50, show_default=True, help="the newest N entries")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, limit: int, as_json: bool) -> None:
        """The newest entries, oldest first."""
        rows = audit_chain.entries(open_database(config(ctx)), limit=limit)
        if as_json:
            echo_json([audit_chain.to_json(e) for e in rows])
            return
        for e in rows:
            click.echo(f"{e.seq:>6}  {e.at:%Y-%m-%d %H:%M:%S}Z  {e.user}@{e.host}  "
                       f"{e.outcome:<8} {' '.join(e.args)}")

    @audit.command("verify")
    @click.pass_context
    def verify(ctx: click.Context) -> None:
        """Walk the chain and name every edited, deleted or reordered entry; also compare
        with this host's copy in the state directory. Exits 3 on a break."""
        cfg = config(ctx)
        db = open_database(cfg)
        count, breaks = audit_chain.verify(db)
        if (Path(cfg.state_dir) / audit_file.FILE).exists():
            breaks += audit_chain.cross_check(db, audit_file.entries(cfg.state_dir))
        for b in sorted(set(breaks), key=lambda b: b.seq):
            click.echo(f"FAILED  {b.line()}")
        if breaks:
            click.echo(f"the audit trail of {db.label} is broken: {len(breaks)} problem(s) "
                       f"in {count} entries", err=True)
            sys.exit(ValidationError.exit_code)
        click.echo(f"OK      {count} entries, chain intact")
