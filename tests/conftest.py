"""Shared fixtures. Integration tests use the real servers that scripts/services starts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests import services


def database_url(server_url: str, dbname: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextmanager
def scratch_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """A new, empty database on the server; dropped (slots and sessions first) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(server_url, name)
    finally:
        drop_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall():
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg18_server() -> str:
    return services.pg18_url()


@pytest.fixture(scope="session")
def pg15_server() -> str:
    return services.pg15_url()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return services.kafka_bootstrap()


@pytest.fixture(params=["pg18", "pg15"])
def pg_server(request: pytest.FixtureRequest) -> str:
    """Both PostgreSQL versions of the matrix."""
    return services.pg18_url() if request.param == "pg18" else services.pg15_url()


@pytest.fixture
def source_db(pg18_server: str) -> Iterator[str]:
    with scratch_database(pg18_server, "src") as url:
        yield url


@pytest.fixture
def target_db(pg18_server: str) -> Iterator[str]:
    with scratch_database(pg18_server, "dst") as url:
        yield url
