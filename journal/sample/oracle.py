"""The source's state read straight from the database, independently of the journal:
the oracle every capture and restore test compares with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from journal.catalog import table_schemas
from journal.sample.schema import connection
from journal.values import read_rows
from producers.source_catalog import read_catalog

# --- state -------------------------------------------------------------------------------

def snapshot_state(url_or_conn: psycopg.Connection[Any] | str,
                   schemas: Sequence[str] = ("public",)) -> dict[str, dict[tuple[Any, ...],
                                                                      dict[str, Any]]]:
    """Every row of every table, keyed by table then primary key, in the journal's values."""
    with connection(url_or_conn) as conn:
        state: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for name, table in table_schemas(read_catalog(conn, schemas)).items():
            state[name] = {table.key_of(row): row for row in read_rows(conn, table)}
        return state
