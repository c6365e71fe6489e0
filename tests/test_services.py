"""The local services the integration tests rely on are up and configured as expected."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from tests import services

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("url", "major"), [(services.pg18_url, 18), (services.pg15_url, 15)],
                         ids=["pg18", "pg15"])
def test_postgres_is_logical_and_the_right_version(url, major: int) -> None:
    with psycopg.connect(url(), connect_timeout=10) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])
        assert version // 10000 == major
        assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"
        assert int(conn.execute("SHOW max_replication_slots").fetchone()[0]) >= 10
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_kafka_round_trip() -> None:
    bootstrap = services.kafka_bootstrap()
    topic = f"services-check-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            meta = producer.send(topic, key=b"k", value=b"hello").get(timeout=30)
            assert meta.offset == 0
        finally:
            producer.close()
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=20000)
        try:
            first = next(iter(consumer), None)  # None after consumer_timeout_ms
        finally:
            consumer.close()
        assert first is not None, "nothing consumed within 20 s"
        assert (first.key, first.value) == (b"k", b"hello")
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_tidy_drops_what_killed_runs_leave(tmp_path) -> None:
    """On a PostgreSQL 18 of its own (the shared servers are never tidied by a test): `up`
    warns about an inactive slot holding WAL, `tidy` drops it and its database."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "services")
    env = {**os.environ, "JOURNAL_SERVICES_DIR": str(tmp_path / "services"),
           "JOURNAL_SERVICES_SLOT_WARNING_BYTES": "0"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, script, *args, "--only", "pg18"], env=env,
                              capture_output=True, text=True, timeout=180, check=True)

    try:
        url = run("up").stdout.split("JOURNAL_TEST_PG18_URL=")[1].split()[0]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE left_behind")
        with psycopg.connect(url.rsplit("/", 1)[0] + "/left_behind", autocommit=True) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot('left_slot', 'pgoutput')")
            conn.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        warned = run("up").stderr
        assert "1 inactive replication slot(s)" in warned and "left_slot in left_behind" in warned
        assert "dropped 1 slot(s) and 1 database(s)" in run("tidy").stderr
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
            assert conn.execute("SELECT datname FROM pg_database WHERE datname ="
                                " 'left_behind'").fetchone() is None
        assert "warning" not in run("up").stderr
    finally:
        subprocess.run([sys.executable, script, "down", "--only", "pg18"], env=env,
                       capture_output=True, timeout=120, check=False)
