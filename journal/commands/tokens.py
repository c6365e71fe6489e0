"""``journal tokens create | revoke | list``: bearer tokens of the REST API."""

from __future__ import annotations

import getpass

import click

from journal.commands._common import config, echo_json
from journal.jobs import tokens
from journal.jobs.database import open_database
from journal.jobs.models import ROLES


def register(group: click.Group) -> None:
    @group.group("tokens")
    def tokens_group() -> None:
        """API tokens: viewers read, operators start backups and dry runs, admins restore
        and edit configurations."""

    @tokens_group.command("create")
    @click.option("--name", required=True, help="who or what uses it (in the audit trail)")
    @click.option("--role", type=click.Choice(ROLES), required=True)
    @click.pass_context
    def create(ctx: click.Context, name: str, role: str) -> None:
        """Create a token; it is printed once, alone on the last line, and only its hash
        is kept."""
        secret = tokens.create(open_database(config(ctx)), name, role,
                               f"user:{getpass.getuser()}")
        click.echo(f"token {name} ({role}) created; it is shown this once:", err=True)
        click.echo(secret)

    @tokens_group.command("revoke")
    @click.argument("name")
    @click.pass_context
    def revoke(ctx: click.Context, name: str) -> None:
        """Revoke a token by name: the API refuses it from now on."""
        tokens.revoke(open_database(config(ctx)), name)
        click.echo(f"token {name} revoked")

    @tokens_group.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_(ctx: click.Context, as_json: bool) -> None:
        """The tokens' names, roles and state (never their secrets)."""
        rows = [{"name": t.name, "role": t.role, "created_at": t.created_at.isoformat(),
                 "created_by": t.created_by,
                 "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
                for t in tokens.listed(open_database(config(ctx)))]
        if as_json:
            echo_json(rows)
            return
        for r in rows:
            click.echo(f"{r['name']:<24} {r['role']:<9} {r['created_at'][:19]}  "
                       + ("revoked " + r["revoked_at"][:19] if r["revoked_at"] else "active"))
