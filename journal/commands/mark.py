"""``journal mark NAME``: a named restore point written into the change stream.

The name is checked before anything is written: valid (``journal.marks.check_mark_name``)
and not used before in the stream -- the packages' manifests and the journal's tail not
yet packaged are searched (``journal.marks`` explains that decision) -- so that
``--to-mark NAME`` always means one point.
"""

from __future__ import annotations

import itertools

import click

from journal.commands._common import config as load
from journal.commands._common import echo_json
from journal.compactor import CONSUMER
from journal.errors import ValidationError
from journal.events import MARK_PREFIX
from journal.marks import check_mark_name, find_mark, marks_in_journal, marks_in_packages
from journal.packages.store import open_store
from journal.transport import open_reader
from producers import slot


def register(group: click.Group) -> None:
    @group.command("mark")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def mark(ctx: click.Context, name: str, as_json: bool) -> None:
        """Write mark NAME into the stream (restore with --to-mark NAME).

        NAME: 1-100 letters, digits, '.', '_', ':' or '-'; a name already in the stream
        is refused."""
        check_mark_name(name)
        cfg = load(ctx)
        reader = open_reader(cfg.journal_location(), cfg.database())
        try:
            seen = itertools.chain(
                marks_in_packages(open_store(cfg.packages_url).list()),
                marks_in_journal(reader, reader.committed_offset(CONSUMER)))
            earlier = find_mark(name, seen)
        finally:
            reader.close()
        if earlier is not None:
            raise ValidationError(f"mark {name!r} already exists {earlier.describe()}: "
                                  "choose another name (nothing was written)")
        with slot.connect(cfg, autocommit=True) as conn:
            # transactional: the mark commits like any transaction and has its position
            row = conn.execute("SELECT pg_logical_emit_message(true, %s, %s)::text",
                               (MARK_PREFIX, name)).fetchone()
        lsn = row[0] if row else ""
        if as_json:
            echo_json({"mark": name, "lsn": lsn})
        else:
            click.echo(f"mark {name} at {lsn}")
