"""The Kafka journal against the real broker started by scripts/services."""

from __future__ import annotations

import io
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import avro.io
import avro.schema
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from journal.catalog import Column, TableSchema
from journal.codec import SchemaRegistry, encode, split_header
from journal.errors import TransportError
from journal.events import ChangeEvent, TransactionMarker
from journal.positions import Position
from journal.transport import decoded, deduplicate, open_reader, open_writer
from journal.transport.kafka import KafkaJournal
from tests import services

pytestmark = pytest.mark.integration

DOC = TableSchema("public", "document", (
    Column("id", "integer", 23, True), Column("title", "text", 25),
    Column("amount", "numeric(12,2)", 1700), Column("created", "timestamp with time zone", 1184),
    Column("uuid", "uuid", 2950, True)), ("id",))


@pytest.fixture
def journal_url(kafka_journal_url: str) -> str:
    return kafka_journal_url


def event(i: int) -> ChangeEvent:
    row = {"id": i, "title": f"Document {i} — ünïcødé", "amount": Decimal(i) / 100,
           "created": datetime(2024, 5, 1, 12, 0, i % 60, 123456, tzinfo=UTC),
           "uuid": uuid.UUID(int=i)}
    return ChangeEvent("c", "edms", DOC, Position(1000 + i, 1), 700 + i, 1_714_564_800_000_000,
                       None, row)


def append(writer, registry: SchemaRegistry, records) -> None:
    encoded = [(r.position, *encode(r, registry)) for r in records]
    writer.publish_schemas(registry)
    for position, key, value in encoded:
        writer.append(position, key, value)
    writer.flush()


def test_records_and_schemas_round_trip(journal_url: str) -> None:
    registry = SchemaRegistry()
    records = [TransactionMarker("BEGIN", "edms", Position(1001, 0), 701, 5),
               *[event(i) for i in range(1, 6)]]
    writer = open_writer(journal_url, "edms")
    try:
        append(writer, registry, records)
    finally:
        writer.close()
    reader = open_reader(journal_url, "edms")
    try:
        raws = list(reader.read())
        assert list(decoded(raws, reader.registry())) == records
    finally:
        reader.close()
    assert [r.offset for r in raws] == sorted(r.offset for r in raws)
    assert raws[1].key == encode(records[1], registry)[0]


def test_reread_from_committed_offset_delivers_the_rest(journal_url: str) -> None:
    registry = SchemaRegistry()
    writer = open_writer(journal_url, "edms")
    append(writer, registry, [event(i) for i in range(1, 11)])
    reader = open_reader(journal_url, "edms")
    try:
        raws = list(reader.read())
        reader.commit_offset("compactor", raws[3].next_offset)
    finally:
        reader.close()
    append(writer, registry, [event(i) for i in range(11, 13)])
    writer.close()
    reader = open_reader(journal_url, "edms")  # a restarted consumer
    try:
        start = reader.committed_offset("compactor")
        again = list(reader.read(start))
        assert reader.committed_offset("someone-else") == 0
    finally:
        reader.close()
    assert [r.position.commit_lsn - 1000 for r in again] == list(range(5, 13))


def test_reference_avro_library_decodes_an_event_read_from_kafka(journal_url: str,
                                                                  kafka_bootstrap: str) -> None:
    registry = SchemaRegistry()
    writer = open_writer(journal_url, "edms")
    append(writer, registry, [event(42)])
    writer.close()
    reader = open_reader(journal_url, "edms")
    try:
        (raw,) = list(reader.read())
    finally:
        reader.close()
    fp, body = split_header(raw.value)
    # the schema comes from the schemas topic, looked up by fingerprint, not from our code
    journal = KafkaJournal.from_url(journal_url, "edms")
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        consumer.assign([TopicPartition(journal.schemas_topic, 0)])
        schemas = {m.key: m.value for m in consumer}
    finally:
        consumer.close()
    schema = avro.schema.parse(schemas[fp.hex().encode()].decode())
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))
    after = event(42).after
    assert datum["op"] == "c"
    assert datum["source"]["commit_lsn"] == 1042
    assert datum["after"]["id"] == 42
    assert datum["after"]["title"] == after["title"]
    assert datum["after"]["amount"] == Decimal("0.42")
    assert datum["after"]["created"] == after["created"]
    assert datum["after"]["uuid"] == str(after["uuid"])


def test_unreachable_broker_fails_fast_with_a_clear_error() -> None:
    for open_ in (open_writer, open_reader):
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"cannot reach Kafka at 127\.0\.0\.1:1: "):
            open_("kafka://127.0.0.1:1", "edms")
        assert time.monotonic() - started < 10


def test_topics_are_created_with_explicit_configs_and_creation_is_idempotent(
        journal_url: str, kafka_bootstrap: str) -> None:
    journal = KafkaJournal.from_url(journal_url, "edms")
    journal.ensure_topics()
    journal.ensure_topics()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, journal.changes_topic),
            ConfigResource(ConfigResourceType.TOPIC, journal.schemas_topic)])
    finally:
        admin.close()
    configs = {name: {key: entry["value"] for key, entry in values.items()}
               for name, values in described["topic"].items()}
    changes, schemas = configs[journal.changes_topic], configs[journal.schemas_topic]
    assert changes["cleanup.policy"] == "delete"
    assert changes["retention.ms"] == "-1"
    assert changes["min.insync.replicas"] == "1"
    assert schemas["cleanup.policy"] == "compact"


def test_a_second_writer_fences_the_first_and_its_unflushed_records_never_appear(
        journal_url: str) -> None:
    registry = SchemaRegistry()
    first = open_writer(journal_url, "edms")
    append(first, registry, [event(1)])
    # Several hand-overs: the fenced writer's refused epoch must never let it take the
    # transactional id back from the writer that fenced it (a race, so tried repeatedly).
    for n in range(2, 8, 2):
        first.append(event(n).position, *encode(event(n), registry))
        second = open_writer(journal_url, "edms")
        try:
            with pytest.raises(TransportError):
                first.flush()
            append(second, registry, [event(n + 1)])
        finally:
            first.close()
        first = second
    first.close()
    reader = open_reader(journal_url, "edms")
    try:
        assert [r.position.commit_lsn for r in reader.read()] == [1001, 1003, 1005, 1007]
    finally:
        reader.close()


def test_several_partitions_are_merged_by_position(journal_url: str) -> None:
    registry = SchemaRegistry()
    url = journal_url + "&partitions=3"
    writer = open_writer(url, "edms")
    try:
        for first in range(1, 31, 10):
            append(writer, registry, [event(i) for i in range(first, first + 10)])
    finally:
        writer.close()
    reader = open_reader(url, "edms")
    try:
        assert len(reader.partitions()) == 3
        raws = list(reader.read())
        assert [r.position.commit_lsn - 1000 for r in raws] == list(range(1, 31))
        assert len({r.offset & 0xFFF for r in raws}) > 1  # spread over partitions
        reader.commit_offset("compactor", raws[14].next_offset)
        start = reader.committed_offset("compactor")
        again = list(deduplicate(reader.read(start), after=raws[14].position))
    finally:
        reader.close()
    assert [r.position.commit_lsn - 1000 for r in again] == list(range(16, 31))


def test_plain_idempotent_mode_round_trips(journal_url: str) -> None:
    registry = SchemaRegistry()
    url = journal_url + "&transactional=false"
    writer = open_writer(url, "edms")
    try:
        append(writer, registry, [event(i) for i in range(1, 4)])
    finally:
        writer.close()
    reader = open_reader(url, "edms")
    try:
        assert [e.position.commit_lsn for e in decoded(reader.read(), reader.registry())] == [
            1001, 1002, 1003]
    finally:
        reader.close()


def test_broker_restart_mid_append_loses_and_duplicates_nothing(journal_url: str) -> None:
    """Like capture: append a batch, flush; when a flush fails, reopen and send the batch
    again. Everything flushed must be read back exactly once after dedupe."""
    registry = SchemaRegistry()
    restarting, restarted = threading.Event(), threading.Event()

    def restart() -> None:
        time.sleep(0.5)
        restarting.set()
        try:
            services.restart_kafka()
        finally:
            restarted.set()

    writer = open_writer(journal_url, "edms")
    sent: list[Position] = []
    failures = after_restart = during_restart = 0
    thread = threading.Thread(target=restart)
    thread.start()
    try:
        first = 1
        while after_restart < 5:  # keep appending through the restart and a bit beyond
            batch = [event(i) for i in range(first, first + 50)]
            # A batch overlaps the restart when it began before the broker was back and
            # ended after the restart had begun (an append may block through all of it).
            begun_before_restarted = not restarted.is_set()
            while True:
                try:
                    if writer is None:
                        writer = open_writer(journal_url, "edms")
                    append(writer, registry, batch)
                    break
                except TransportError:
                    failures += 1
                    if writer is not None:
                        writer.close()
                        writer = None
                    assert failures < 60, "the journal did not recover after the restart"
                    time.sleep(0.5)
            during_restart += begun_before_restarted and restarting.is_set()
            sent += [e.position for e in batch]
            first += 50
            after_restart += restarted.is_set()
    finally:
        thread.join(180)
        if writer is not None:
            writer.close()
    reader = open_reader(journal_url, "edms")
    try:
        got = [r.position for r in deduplicate(reader.read())]
    finally:
        reader.close()
    assert got == sent
    assert during_restart >= 1, "no batch was appended while the broker restarted"
    assert len(sent) > 250
