"""``journal init``: check the source, create the publication and the journal's storage,
write a starting ``journal.toml``.

The replication slot is not created here: its exported snapshot lives only as long as the
connection that created it, so ``journal capture`` creates the slot on its first start and
reads the initial snapshot on the spot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from journal.commands._common import config as load
from journal.config import DEFAULT_FILE, Config
from journal.transport import open_writer
from producers import ddl_trigger, slot

_TEMPLATE = """\
# edms-journal configuration (see README). Secrets stay out of this file:
# the source password comes from JOURNAL_SOURCE_PASSWORD(_FILE) or ~/.pgpass.
[source]
url = {source_url}
slot = {slot}
publication = {publication}
schemas = {schemas}
tables = {tables}

[journal]
url = {journal_url}
topic_prefix = {topic_prefix}

[packages]
url = {packages_url}

[state]
dir = {state_dir}
"""


def _toml(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_config_file(path: Path, cfg: Config) -> bool:
    """Write ``path`` from ``cfg`` unless it exists; True when written."""
    if path.exists():
        return False
    values = {k: _toml(getattr(cfg, k)) for k in (
        "slot", "publication", "schemas", "tables", "journal_url", "topic_prefix",
        "packages_url", "state_dir")}
    values["source_url"] = _toml(_without_password(cfg.source_url))
    path.write_text(_TEMPLATE.format(**values))
    return True


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", "@")).geturl()


def _ddl_trigger_line(conn: Any) -> str:
    """Install the DDL event trigger (schema changes get their exact place in the stream),
    or say why not and what it means."""
    if ddl_trigger.installed(conn):
        return "OK   DDL event trigger (schema changes are captured at their position)"
    if ddl_trigger.is_superuser(conn):
        ddl_trigger.install(conn)
        return "OK   DDL event trigger installed (schema changes are captured at their position)"
    return ("WARN DDL event trigger not installed: it needs a superuser (run `journal init` "
            "once as one). Until then capture stops at the first schema change of a captured "
            "table and asks for a new full snapshot")


def register(group: click.Group) -> None:
    @group.command("init")
    @click.option("--source", "source_url", help="source database URL (postgresql://…)")
    @click.option("--journal", "journal_url", help="kafka://host:port or file:///dir")
    @click.pass_context
    def init(ctx: click.Context, source_url: str | None, journal_url: str | None) -> None:
        """Check the source, create the publication, the journal topics or directories,
        and journal.toml if absent. The slot and the initial snapshot come with the first
        `journal capture`."""
        cfg = load(ctx, source_url=source_url, journal_url=journal_url)
        with slot.connect(cfg, autocommit=True) as conn:
            slot.preflight(conn, cfg)
            click.echo("OK   source: wal_level = logical, replication allowed, every table "
                       "capturable (logged, keyed or REPLICA IDENTITY FULL)")
            slot.ensure_publication(conn, cfg)
            click.echo(f"OK   publication {cfg.publication}")
            click.echo(_ddl_trigger_line(conn))
            info = slot.slot_info(conn, cfg.slot)
            if info is None:
                slot.check_free_slot(conn)
            database = conn.info.dbname
        writer = open_writer(cfg.journal_location(), database)
        writer.close()
        click.echo(f"OK   journal {cfg.journal_url} (database {database})")
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
        path = Path(ctx.find_root().obj.get("config_path") or DEFAULT_FILE)
        if write_config_file(path, cfg):
            click.echo(f"OK   wrote {path}")
        click.echo(f"slot {cfg.slot}: " + ("exists" if info is not None else
                                           "created with the initial snapshot by the first "
                                           "`journal capture`"))
