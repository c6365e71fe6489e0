"""``journal mark NAME``: a named restore point written into the change stream."""

from __future__ import annotations

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json
from journal.events import MARK_PREFIX
from producers import slot


def register(group: click.Group) -> None:
    @group.command("mark")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def mark(ctx: click.Context, name: str, as_json: bool) -> None:
        """Write mark NAME into the stream (restore with --to-mark NAME)."""
        cfg = load(ctx)
        with slot.connect(cfg, autocommit=True) as conn:
            # transactional: the mark commits like any transaction and has its position
            row = conn.execute("SELECT pg_logical_emit_message(true, %s, %s)::text",
                               (MARK_PREFIX, name)).fetchone()
        lsn = row[0] if row else ""
        if as_json:
            echo_json({"mark": name, "lsn": lsn})
        else:
            click.echo(f"mark {name} at {lsn}")
