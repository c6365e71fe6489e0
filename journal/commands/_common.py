"""What every command shares: configuration from the context, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from journal.config import Config, load_config


def config(ctx: click.Context, **overrides: Any) -> Config:
    return load_config(ctx.find_root().obj.get("config_path"), **overrides)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


def interactive() -> bool:
    """Progress bars only on a terminal; pipes stay quiet."""
    return sys.stderr.isatty()
