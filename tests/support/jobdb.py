"""Job databases for the tests: a SQLite file, or a scratch database on PostgreSQL 18."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.databases import scratch_database

# the PostgreSQL variant needs the server: only it is an integration test
BACKENDS = ["sqlite", pytest.param("pg18", marks=pytest.mark.integration)]


@contextmanager
def job_database_url(backend: str, tmp_path: Path, pg18_url: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite'}"
        return
    with scratch_database(pg18_url, "jobs") as url:
        yield url
