"""``journal db upgrade``: migrate the job database to this version's schema."""

from __future__ import annotations

import click

from journal.commands._common import config
from journal.jobs.database import JobDatabase, head_revision, url_of


def register(group: click.Group) -> None:
    @group.group("db")
    def db() -> None:
        """The job database (jobs, health results, audit trail, schedules)."""

    @db.command("upgrade")
    @click.pass_context
    def upgrade(ctx: click.Context) -> None:
        """Run the migrations up to this version's schema (idempotent)."""
        database = JobDatabase(url_of(config(ctx)))
        before = database.revision()
        database.upgrade()
        after = database.revision()
        click.echo(f"job database {database.label}: "
                   + (f"at {after}, nothing to do" if before == after else
                      f"upgraded from {before or 'empty'} to {after}"))

    @db.command("revision")
    @click.pass_context
    def revision(ctx: click.Context) -> None:
        """The job database's revision, and this version's."""
        database = JobDatabase(url_of(config(ctx)))
        click.echo(f"{database.revision() or 'empty'} (this version needs {head_revision()})")
