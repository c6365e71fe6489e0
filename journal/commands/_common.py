"""What every command shares: configuration from the context, JSON output."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from journal.config import Config, load_config
from journal.errors import ConfigError


def config(ctx: click.Context, **overrides: Any) -> Config:
    return load_config(ctx.find_root().obj.get("config_path"), **overrides)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


def interactive() -> bool:
    """Progress bars only on a terminal; pipes stay quiet."""
    return sys.stderr.isatty()


def parse_time(text: str, option: str = "--to") -> datetime:
    """An ISO 8601 timestamp with a zone; one without is refused (ambiguous for a restore)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: not an ISO 8601 timestamp "
                          "(e.g. 2025-11-26T10:15:00+00:00)") from None
    if value.tzinfo is None:
        raise ConfigError(f"{option} {text!r}: give a time zone (e.g. +00:00 or Z)")
    return value
