"""The ``journal`` command: a thin click layer over the library.

Each command lives in its own module under ``journal/commands``; this file only builds
the group and maps the error hierarchy to exit codes (2 usage, 3 validation, 4 runtime).
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from journal import __version__
from journal.errors import JournalError

COMMAND_MODULES = (
    "init", "capture", "mark", "sample", "compact", "snapshot", "packages", "restore",
    "verify", "health", "demo",
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except JournalError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="journal")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="configuration file (default: journal.toml, or $JOURNAL_CONFIG)")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Continuous capture, backup packages and restore for an EDMS PostgreSQL database."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"journal.commands.{_name}") is not None:
        importlib.import_module(f"journal.commands.{_name}").register(main)


if __name__ == "__main__":
    main()
