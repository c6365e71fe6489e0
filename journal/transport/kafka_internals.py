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
result class is checked, and whose ``_supports_epoch_bump`` ``fenced_stays_fenced`` turns
off). ``missing`` says which a producer lacks; the writer then keeps to
the public API, and tests/test_kafka_internals.py fails naming what changed.

Written against kafka-python 3.0 (3.0.12): ``RecordAccumulator.append(tp, timestamp_ms,
key, value, headers, ...)`` returns ``(future, batch_is_full, new_batch_created,
abort_for_new_batch)``; ``Sender.wakeup()``;
``TransactionManager.maybe_add_partition_to_transaction(tp)`` and ``begin_commit()``,
whose result has ``wait(timeout_ms)``.

``append_many`` goes one step further, because the accumulator's per-record path (a lock,
a record encoded byte by byte in Python, a future per record) was then the largest cost
of capture: it writes a whole list of records into the partition's open batch at once,
in C (``_records.pyx``, the bytes kafka-python's ``DefaultRecordBatchBuilder.append``
writes), under the accumulator's lock for the partition, and updates the batch's counts
as its own ``append`` would. What it reaches for: ``RecordAccumulator._tp_lock``,
``._batches``, ``._closed``, ``._appends_in_progress``; ``ProducerBatch.records``,
``.produce_future``, ``.last_append``, ``.max_record_size``; ``MemoryRecordsBuilder``'s
``_builder``, ``_closed``, ``_next_offset``; ``DefaultRecordBatchBuilder``'s ``_buffer``,
``_batch_size``, ``_first_timestamp``, ``_max_timestamp``, ``_last_offset``,
``_num_records``. A batch is still created, closed, sequenced, sent, retried and
completed by kafka-python; a new batch is opened by its ``append`` of one record.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

try:  # the C writer of records, compiled at install
    from journal.transport import _records
except ImportError:  # no C compiler at install: records go one by one through append
    _records = None

# the leading parameters of RecordAccumulator.append, passed by position
APPEND_PARAMETERS = ("tp", "timestamp_ms", "key", "value", "headers")
TRANSACTION_METHODS = ("maybe_add_partition_to_transaction", "begin_commit")
ACCUMULATOR_ATTRIBUTES = ("_tp_lock", "_batches", "_closed", "_appends_in_progress")
BATCH_ATTRIBUTES = ("records", "produce_future", "last_append", "max_record_size")
MEMORY_RECORDS_SLOTS = ("_builder", "_closed", "_next_offset")
BUILDER_SLOTS = ("_buffer", "_batch_size", "_first_timestamp", "_max_timestamp",
                 "_last_offset", "_num_records")


def missing_for_batches(producer: Any) -> list[str]:
    """What ``append_many``'s direct writing into batches needs that this kafka-python
    lacks (empty: none); with anything missing, ``append_many`` appends one by one."""
    try:
        from kafka import TopicPartition
        from kafka.producer.producer_batch import ProducerBatch
        from kafka.record.default_records import DefaultRecordBatchBuilder
        from kafka.record.memory_records import MemoryRecordsBuilder
    except ImportError as exc:
        return [f"kafka-python's batch classes ({exc})"]
    problems = [f"RecordAccumulator.{name}" for name in ACCUMULATOR_ATTRIBUTES
                if not hasattr(producer._accumulator, name)]
    problems += [f"MemoryRecordsBuilder.{name}" for name in MEMORY_RECORDS_SLOTS
                 if name not in getattr(MemoryRecordsBuilder, "__slots__", ())]
    problems += [f"DefaultRecordBatchBuilder.{name}" for name in BUILDER_SLOTS
                 if name not in getattr(DefaultRecordBatchBuilder, "__slots__", ())]
    try:
        batch = ProducerBatch(TopicPartition("t", 0), MemoryRecordsBuilder(2, 0, 1024))
    except Exception as exc:
        return [*problems, f"ProducerBatch(tp, MemoryRecordsBuilder(2, 0, 1024)) ({exc})"]
    problems += [f"ProducerBatch.{name}" for name in BATCH_ATTRIBUTES
                 if not hasattr(batch, name)]
    if not problems and type(batch.records._builder) is not DefaultRecordBatchBuilder:
        problems.append("MemoryRecordsBuilder._builder (a DefaultRecordBatchBuilder)")
    return problems


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


def fenced_stays_fenced(producer: Any) -> bool:
    """Make a transactional ``producer`` stop for good when the broker refuses its epoch,
    instead of asking for a new one; False when this kafka-python has no such switch.

    kafka-python answers a record refused for its epoch (``INVALID_PRODUCER_EPOCH``, what
    a writer fenced by a newer one with the same transactional id meets) by bumping the
    epoch, and when the coordinator refuses that too, by asking for a fresh producer id
    under the same transactional id: the fenced writer then fences the writer that fenced
    it. The Java client treats that refusal as fatal. So does this writer, which gives up
    at its first unacknowledged record anyway and is replaced by a new one: a producer whose
    transaction manager says the broker cannot bump epochs takes the pre-KIP-360 path,
    where those errors are fatal for a transactional producer."""
    manager = getattr(producer, "_transaction_manager", None)
    if manager is None or not callable(getattr(manager, "_supports_epoch_bump", None)):
        return False
    if not manager.is_transactional():
        return True  # an idempotent producer has no one to fence: its bump is harmless
    manager._supports_epoch_bump = lambda: False
    return True


def unanswered(future: Any) -> str | None:
    """Why ``future`` (a record's, from ``send`` or ``append``, or a batch's, from
    ``append_many``) does not stand for acknowledged records; None when it does.

    A batch's future "succeeds" with ``(base offset, timestamp, record errors)`` even when
    the batch failed: the errors (or a base offset of -1) say so. A batch split because
    the broker found it too large never completes its own future (its records move to new
    batches, whose outcome only the records' own futures would see): that counts as
    unanswered, and the writer fails rather than guess."""
    if not future.is_done:
        return "no answer"
    if future.failed():
        return str(future.exception)
    value = future.value
    if type(value) is tuple and len(value) == 3:  # a batch's result
        base_offset, _, errors = value
        if errors is not None:
            return str(errors(0))
        if base_offset == -1:
            return "the batch was not written"
    return None


class DirectPartition:
    """One partition of a producer, appended to through the producer's accumulator."""

    def __init__(self, producer: Any, topic: str, partition: int) -> None:
        from kafka import TopicPartition

        self.topic_partition = TopicPartition(topic, partition)
        self._accumulator = producer._accumulator
        self._sender = producer._sender
        self._transactions = producer._transaction_manager
        self.in_batches = _records is not None and not missing_for_batches(producer)
        if self.in_batches:
            from kafka.record.default_records import DefaultRecordBatchBuilder
            self._builder_type = DefaultRecordBatchBuilder

    def append(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
               ) -> Any:
        """Add one record to the partition's current batch; its future, as ``send`` gives."""
        future, full, new_batch, _ = self._accumulator.append(
            self.topic_partition, None, key, value, headers)
        if full or new_batch:
            self._sender.wakeup()
        return future

    def append_many(self, records: list[tuple[bytes | None, bytes, bytes]], header: str
                    ) -> list[tuple[Any, int]]:
        """Add ``records`` — ``(key, value, value of the header named header)`` — in
        order; returns ``(future, count)`` per batch they went into: each future completes
        when its batch (those ``count`` records among them) is acknowledged or fails."""
        if not self.in_batches:
            return [(self.append(key, value, [(header, h)]), 1) for key, value, h in records]
        accumulator = self._accumulator
        tp = self.topic_partition
        name = header.encode("utf-8")
        timestamp = int(time.time() * 1000)  # what append stamps each record with, once
        placed: list[tuple[Any, int]] = []
        start, n = 0, len(records)
        while start < n:
            now = time.monotonic()
            count = 0
            accumulator._appends_in_progress.increment()
            try:
                with accumulator._tp_lock(tp):
                    if accumulator._closed:
                        from kafka.errors import IllegalStateError
                        raise IllegalStateError("RecordAccumulator is closed")
                    queue = accumulator._batches[tp]
                    if queue:
                        batch = queue[-1]
                        count = self._fill(batch, records, start, name, timestamp, now)
                        full = len(queue) > 1 or batch.records.is_full()
            finally:
                accumulator._appends_in_progress.decrement()
            if count:
                placed.append((batch.produce_future, count))
            else:  # no open batch, or it is full: append opens the next one
                key, value, h = records[start]
                future, full, new_batch, _ = accumulator.append(
                    tp, timestamp, key, value, [(header, h)])
                placed.append((future, 1))
                count = 1
                full = full or new_batch
            if full:
                self._sender.wakeup()
            start += count
        return placed

    def _fill(self, batch: Any, records: list[tuple[bytes | None, bytes, bytes]],
              start: int, name: bytes, timestamp: int, now: float) -> int:
        """As many records as ``batch`` holds, from ``start``, written into it in C."""
        memory = batch.records
        if memory._closed:
            return 0
        builder = memory._builder
        if type(builder) is not self._builder_type:
            return 0
        first = builder._first_timestamp is None
        count, largest = _records.append_records(
            builder._buffer, records, start, builder._batch_size, memory._next_offset,
            0 if first else timestamp - builder._first_timestamp, name, first)
        if count:
            if first:
                builder._first_timestamp = builder._max_timestamp = timestamp
            elif builder._max_timestamp < timestamp:
                builder._max_timestamp = timestamp
            builder._num_records += count
            builder._last_offset = memory._next_offset + count - 1
            memory._next_offset += count
            batch.last_append = now
            batch.max_record_size = max(batch.max_record_size, largest)
        return count

    def add_to_transaction(self) -> None:
        """What ``send`` does for every record: the partition joins the open transaction."""
        self._transactions.maybe_add_partition_to_transaction(self.topic_partition)

    def commit_transaction(self, timeout_s: float) -> bool:
        """``commit_transaction()`` without a thread: True when it finished in time."""
        result = self._transactions.begin_commit()
        self._sender.wakeup()
        return bool(result.wait(timeout_ms=timeout_s * 1000))
