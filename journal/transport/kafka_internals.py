"""kafka-python's private internals the Kafka journal writer relies on, behind one door.

Why they are used at all: ``KafkaProducer.send`` spends half its time on checks that hold
for every record of the changes topic once they hold for one (topic metadata, a single
partition named explicitly, no serializers, well-formed headers, the partition added to
the transaction), and send was the largest cost of capture; ``commit_transaction`` starts
a thread per call. So the writer appends to the producer's record accumulator itself,
wakes its sender, adds the partition to the transaction once per transaction, and begins
the commit itself. The records still go through the same batches, idempotent sequence
numbers and transaction.

Nothing in kafka-python promises these names: ``KafkaProducer._accumulator``, ``._sender``
and ``._transaction_manager``, and the module ``kafka.producer.record_accumulator``. They
are touched here and nowhere else (with ``kafka.producer.transaction_manager``, whose
result class is checked). ``missing`` says which a producer lacks; the writer then keeps to
the public API, and tests/test_kafka_internals.py fails naming what changed.

Written against kafka-python 3.0 (3.0.12): ``RecordAccumulator.append(tp, timestamp_ms,
key, value, headers, ...)`` returns ``(future, batch_is_full, new_batch_created,
abort_for_new_batch)``; ``Sender.wakeup()``;
``TransactionManager.maybe_add_partition_to_transaction(tp)`` and ``begin_commit()``,
whose result has ``wait(timeout_ms)``.
"""

from __future__ import annotations

import inspect
from typing import Any

# the leading parameters of RecordAccumulator.append, passed by position
APPEND_PARAMETERS = ("tp", "timestamp_ms", "key", "value", "headers")
TRANSACTION_METHODS = ("maybe_add_partition_to_transaction", "begin_commit")


def missing(producer: Any) -> list[str]:
    """What of the internals ``DirectPartition`` needs ``producer`` lacks (empty: none)."""
    try:
        from kafka.producer.record_accumulator import RecordAccumulator
    except ImportError:
        return ["kafka.producer.record_accumulator.RecordAccumulator"]
    problems = []
    accumulator = getattr(producer, "_accumulator", None)
    if not isinstance(accumulator, RecordAccumulator):
        problems.append("KafkaProducer._accumulator (a RecordAccumulator)")
    else:
        parameters = tuple(inspect.signature(accumulator.append).parameters)
        if parameters[:len(APPEND_PARAMETERS)] != APPEND_PARAMETERS:
            problems.append(f"RecordAccumulator.append{APPEND_PARAMETERS} "
                            f"(it takes {parameters})")
    if not callable(getattr(getattr(producer, "_sender", None), "wakeup", None)):
        problems.append("KafkaProducer._sender.wakeup")
    manager = getattr(producer, "_transaction_manager", None)
    problems += [f"KafkaProducer._transaction_manager.{name}" for name in TRANSACTION_METHODS
                 if not callable(getattr(manager, name, None))]
    try:
        from kafka.producer.transaction_manager import TransactionalRequestResult
    except ImportError:
        return [*problems, "kafka.producer.transaction_manager.TransactionalRequestResult"]
    if "timeout_ms" not in inspect.signature(TransactionalRequestResult.wait).parameters:
        problems.append("TransactionalRequestResult.wait(timeout_ms)")
    return problems


def direct_partition(producer: Any, topic: str, partition: int) -> DirectPartition | None:
    """A way past ``send`` to one partition of ``producer``, or None when this kafka-python
    is not the shape this module was written against, or serializers are configured
    (records must then go through ``send``)."""
    if missing(producer):
        return None
    if (producer.config.get("key_serializer") is not None
            or producer.config.get("value_serializer") is not None):
        return None
    return DirectPartition(producer, topic, partition)


class DirectPartition:
    """One partition of a producer, appended to through the producer's accumulator."""

    def __init__(self, producer: Any, topic: str, partition: int) -> None:
        from kafka import TopicPartition

        self.topic_partition = TopicPartition(topic, partition)
        self._accumulator = producer._accumulator
        self._sender = producer._sender
        self._transactions = producer._transaction_manager

    def append(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
               ) -> Any:
        """Add one record to the partition's current batch; its future, as ``send`` gives."""
        future, full, new_batch, _ = self._accumulator.append(
            self.topic_partition, None, key, value, headers)
        if full or new_batch:
            self._sender.wakeup()
        return future

    def add_to_transaction(self) -> None:
        """What ``send`` does for every record: the partition joins the open transaction."""
        self._transactions.maybe_add_partition_to_transaction(self.topic_partition)

    def commit_transaction(self, timeout_s: float) -> bool:
        """``commit_transaction()`` without a thread: True when it finished in time."""
        result = self._transactions.begin_commit()
        self._sender.wakeup()
        return bool(result.wait(timeout_ms=timeout_s * 1000))
