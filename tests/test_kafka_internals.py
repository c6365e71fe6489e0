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

from journal.transport.kafka_internals import DirectPartition, direct_partition, missing


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
