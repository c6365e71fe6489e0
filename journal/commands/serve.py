"""``journal serve``: the REST API and the dashboard (and the scheduler, if asked)."""

from __future__ import annotations

import click

from journal.commands._common import config
from journal.errors import ConfigError


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (loopback unless told otherwise)")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--cert", type=click.Path(exists=True, dir_okay=False),
              help="TLS certificate (PEM); with --key the server speaks HTTPS only")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="TLS private key")
@click.option("--with-scheduler", is_flag=True,
              help="also run the scheduler (journal schedule) in this process")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, cert: str | None, key: str | None,
          with_scheduler: bool) -> None:
    """REST API under /api/v1 (OpenAPI at /api/docs) and the dashboard at /."""
    from journal.server import Listen
    from journal.server import serve as run

    if bool(cert) != bool(key):
        raise ConfigError("--cert and --key go together (TLS needs both)")
    run(config(ctx), ctx.find_root().params.get("config_path"),
        Listen(host, port, cert, key), with_scheduler)


def register(group: click.Group) -> None:
    group.add_command(serve)
