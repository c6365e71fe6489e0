"""Shared fixtures. Integration tests use the real servers that scripts/services starts.

A test that needs a server is marked ``integration`` so that ``pytest -m "not integration"``
runs with no server at all; the hooks below fail loudly on a test that needs one unmarked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from journal import sample
from journal.config import Config
from producers.capture import run_capture
from tests import services
from tests.support.capture import capture_config, loaded_sample
from tests.support.databases import scratch_database

# the fixtures below that reach a server; item.fixturenames holds every fixture a test
# uses, directly or through other fixtures
SERVER_FIXTURES = frozenset({"pg18_server", "pg15_server", "pg_server", "kafka_bootstrap",
                             "source_db", "target_db"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError(
            "these tests use a server fixture but are not marked integration (add "
            "`pytestmark = pytest.mark.integration` or `@pytest.mark.integration`):\n  "
            + "\n  ".join(unmarked))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # before any fixture: a test that asks tests.services for a server unmarked fails there
    unmarked = item.get_closest_marker("integration") is None
    services.unmarked_test = item.nodeid if unmarked else None


@pytest.fixture(scope="session")
def pg18_server() -> str:
    return services.pg18_url()


@pytest.fixture(scope="session")
def pg15_server() -> str:
    return services.pg15_url()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return services.kafka_bootstrap()


@pytest.fixture
def kafka_journal_url(kafka_bootstrap: str) -> Iterator[str]:
    """A Kafka journal under topics of the test's own, deleted afterwards."""
    prefix = f"test_{uuid.uuid4().hex[:10]}"
    yield f"kafka://{kafka_bootstrap}?topic_prefix={prefix}"
    services.delete_topics(kafka_bootstrap, prefix)


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


@pytest.fixture
def edms_source(source_db: str) -> str:
    """A source database holding the small EDMS sample."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.load(conn, 8, seed=3)
    return source_db


@pytest.fixture
def captured(source_db: str, tmp_path: Path) -> Config:
    """A source with a snapshot generation and a workload after it, all in the journal
    (small journal segments, so retention can drop the snapshot's segments later)."""
    loaded_sample(source_db, scale=10)
    cfg = capture_config(source_db, tmp_path,
                         journal_url=f"file://{tmp_path}/journal?segment_bytes=8192",
                         packages_url=f"file://{tmp_path}/first")
    run_capture(cfg, once_until_idle=1.0)
    sample.workload(source_db, 60, seed=3)
    run_capture(cfg, once_until_idle=1.0)
    return cfg
