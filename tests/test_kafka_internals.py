"""kafka-python's private internals, as the Kafka journal writer uses them: no server needed.

A producer is built against a closed port with the API version given (so it never asks a
broker); if an upgrade of kafka-python moves or renames what the writer reaches past
``send`` for, these tests fail and name it, instead of capture quietly falling back to
the slower path or breaking at its first record.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.producer.future import FutureRecordMetadata
from kafka.record.default_records import DefaultRecordBatch

from journal.transport import kafka_internals
from journal.transport.kafka_internals import (
    DirectPartition,
    direct_partition,
    fenced_stays_fenced,
    missing,
)
from tests.support import ci


@pytest.fixture
def producer() -> Iterator[Any]:
    # the writer's producer settings that shape the internals: idempotent, transactional
    made = KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 5),
                         enable_idempotence=True, acks="all",
                         transactional_id="edms_journal.test.writer")
    try:
        yield made
    finally:
        made._accumulator.abort_incomplete_batches()  # nothing to deliver, nowhere to
        made.close(timeout=0)


def test_this_kafka_python_has_every_internal_the_writer_uses(producer: Any):
    assert missing(producer) == [], "kafka-python changed shape: the writer falls back to send"
    assert isinstance(direct_partition(producer, "edms_journal.db.changes", 0), DirectPartition)


def test_a_transactional_producer_refused_its_epoch_stops_instead_of_taking_a_new_one(
        producer: Any):
    from kafka.errors import InvalidProducerEpochError, OutOfOrderSequenceNumberError
    from kafka.producer.transaction_manager import TransactionManager

    manager = producer._transaction_manager
    batch = SimpleNamespace(topic_partition=TopicPartition("t", 0))
    # kafka-python's own answer: bump the epoch, and take a fresh producer id if refused
    assert manager.classify_batch_error(InvalidProducerEpochError, batch) == \
        TransactionManager.ERROR_CLASS_NEEDS_EPOCH_BUMP
    assert fenced_stays_fenced(producer)
    for error in (InvalidProducerEpochError, OutOfOrderSequenceNumberError):
        assert manager.classify_batch_error(error, batch) == TransactionManager.ERROR_CLASS_FATAL


def test_an_idempotent_producer_keeps_its_epoch_bump():
    from kafka.errors import InvalidProducerEpochError
    from kafka.producer.transaction_manager import TransactionManager

    plain = KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 5),
                          enable_idempotence=True, acks="all")
    try:
        assert fenced_stays_fenced(plain)
        batch = SimpleNamespace(topic_partition=TopicPartition("t", 0))
        assert plain._transaction_manager.classify_batch_error(
            InvalidProducerEpochError, batch) == TransactionManager.ERROR_CLASS_NEEDS_EPOCH_BUMP
    finally:
        plain.close(timeout=0)


def test_a_record_appended_directly_lands_in_the_producers_batch_for_the_partition(
        producer: Any):
    direct = direct_partition(producer, "edms_journal.db.changes", 0)
    assert direct is not None
    future = direct.append(b"key", b"value", [("position", b"\0" * 12)])
    assert isinstance(future, FutureRecordMetadata) and not future.is_done
    assert direct.topic_partition == TopicPartition("edms_journal.db.changes", 0)
    # the batch is the producer's own: aborting its incomplete batches fails the future
    producer._accumulator.abort_incomplete_batches()
    assert future.is_done and future.failed()


def test_a_producer_without_the_internals_is_named_and_not_used_directly():
    bare = SimpleNamespace(config={})
    assert missing(bare) == [
        "KafkaProducer._accumulator (a RecordAccumulator)",
        "KafkaProducer._sender.wakeup",
        "KafkaProducer._transaction_manager.maybe_add_partition_to_transaction",
        "KafkaProducer._transaction_manager.begin_commit",
    ]
    assert direct_partition(bare, "t", 0) is None


def test_an_accumulator_append_of_another_shape_is_named(producer: Any,
                                                         monkeypatch: pytest.MonkeyPatch):
    def append(tp: Any, key: Any, value: Any, headers: Any, timestamp_ms: Any) -> None:
        raise AssertionError("not to be called")

    monkeypatch.setattr(producer._accumulator, "append", append)
    assert missing(producer) == [
        "RecordAccumulator.append('tp', 'timestamp_ms', 'key', 'value', 'headers') "
        "(it takes ('tp', 'key', 'value', 'headers', 'timestamp_ms'))"]


def test_a_producer_with_serializers_keeps_to_send(producer: Any):
    producer.config["value_serializer"] = bytes
    assert direct_partition(producer, "t", 0) is None


# -- records written into the open batch at once ----------------------------------------------

TOPIC = "edms_journal.db.changes"


def _small_batches(batch_size: int) -> Any:
    return KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 5),
                         enable_idempotence=True, acks="all", batch_size=batch_size,
                         transactional_id="edms_journal.test.writer")


def _records(count: int) -> list[tuple[bytes | None, bytes, bytes]]:
    # keys absent and present, values across the varint length boundaries (63/64, 8191/8192)
    sizes = [0, 1, 63, 64, 127, 128, 8191, 8192, 300, 5]
    return [(None if i % 7 == 3 else f"key{i}".encode() * (i % 5),
             bytes([i % 251]) * sizes[i % len(sizes)], i.to_bytes(12, "big"))
            for i in range(count)]


def _built(producer: Any) -> list[bytes]:
    # every batch of the partition, closed as the sender closes it before sending
    out = []
    for batch in producer._accumulator._batches[TopicPartition(TOPIC, 0)]:
        batch.records.close()
        out.append(bytes(batch.records.buffer()))
    return out


def _close(producer: Any) -> None:
    producer._accumulator.abort_incomplete_batches()
    producer.close(timeout=0)


@pytest.mark.parametrize("batch_size", [1024, 16384, 512 * 1024])
def test_records_written_at_once_are_the_bytes_appending_one_by_one_writes(
        batch_size: int, monkeypatch: pytest.MonkeyPatch):
    ci.unavailable("the C record writer") if kafka_internals._records is None else None
    records = _records(400)
    one, many = _small_batches(batch_size), _small_batches(batch_size)
    try:
        stamp = 1_780_000_000_123
        tp = TopicPartition(TOPIC, 0)
        for key, value, header in records:  # kafka-python's own path, the reference
            one._accumulator.append(tp, stamp, key, value, [("position", header)])
        monkeypatch.setattr(kafka_internals.time, "time", lambda: stamp / 1000)
        direct = direct_partition(many, TOPIC, 0)
        assert direct is not None and direct.in_batches
        # handed over in lists of uneven lengths, as capture hands them over
        placed = []
        for start, end in [(0, 1), (1, 150), (150, 151), (151, 400)]:
            placed += direct.append_many(records[start:end], "position")
        assert sum(n for _, n in placed) == len(records)
        expected = _built(one)
        assert len(expected) >= (2 if batch_size < 512 * 1024 else 1)
        assert _built(many) == expected
    finally:
        _close(one)
        _close(many)


def test_records_written_at_once_read_back_in_order_with_their_headers():
    ci.unavailable("the C record writer") if kafka_internals._records is None else None
    records = _records(50)
    producer = _small_batches(2048)
    try:
        direct = direct_partition(producer, TOPIC, 0)
        assert direct is not None
        direct.append_many(records, "position")
        read = []
        for raw in _built(producer):
            for record in DefaultRecordBatch(raw):
                read.append((record.offset, record.key, record.value, record.headers))
        assert [(k, v, [("position", h)]) for k, v, h in records] == [
            (key, value, headers) for _, key, value, headers in read]
        # offsets count from 0 in each batch, as the broker expects of a producer's batch
        assert [o for o, *_ in read][0] == 0
    finally:
        _close(producer)


def test_every_record_written_at_once_is_answered_by_a_future_that_fails_with_its_batch():
    producer = _small_batches(1024)
    try:
        direct = direct_partition(producer, TOPIC, 0)
        assert direct is not None
        placed = direct.append_many(_records(120), "position")
        assert sum(n for _, n in placed) == 120
        assert [kafka_internals.unanswered(f) for f, _ in placed] == ["no answer"] * len(placed)
        producer._accumulator.abort_incomplete_batches()
        assert all(f.is_done for f, _ in placed)
        assert {kafka_internals.unanswered(f) for f, _ in placed} == {
            "IllegalStateError: Producer is closed forcefully."}
    finally:
        producer.close(timeout=0)


def test_a_batch_acknowledged_by_the_broker_counts_as_answered():
    producer = _small_batches(1024)
    try:
        direct = direct_partition(producer, TOPIC, 0)
        assert direct is not None
        placed = direct.append_many(_records(40), "position")
        # what the sender does on a successful produce response: each batch completes
        queue = producer._accumulator._batches[TopicPartition(TOPIC, 0)]
        assert len(queue) > 1
        while queue:
            batch = queue.popleft()
            batch.complete(100, -1)
            producer._accumulator.deallocate(batch)
        assert [kafka_internals.unanswered(f) for f, _ in placed] == [None] * len(placed)
    finally:
        producer.close(timeout=0)


def test_without_the_c_writer_records_go_one_by_one_through_append(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(kafka_internals, "_records", None)
    producer = _small_batches(1024)
    try:
        direct = direct_partition(producer, TOPIC, 0)
        assert direct is not None and not direct.in_batches
        placed = direct.append_many(_records(30), "position")
        assert [n for _, n in placed] == [1] * 30
        assert all(isinstance(f, FutureRecordMetadata) for f, _ in placed)
    finally:
        _close(producer)


def test_a_kafka_python_without_the_batch_internals_is_named(producer: Any,
                                                             monkeypatch: pytest.MonkeyPatch):
    from kafka.record.default_records import DefaultRecordBatchBuilder

    assert kafka_internals.missing_for_batches(producer) == []
    monkeypatch.setattr(DefaultRecordBatchBuilder, "__slots__",
                        tuple(s for s in DefaultRecordBatchBuilder.__slots__
                              if s != "_num_records"))
    assert kafka_internals.missing_for_batches(producer) == [
        "DefaultRecordBatchBuilder._num_records"]
    assert not direct_partition(producer, TOPIC, 0).in_batches  # type: ignore[union-attr]
