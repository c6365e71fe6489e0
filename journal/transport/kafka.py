"""The Kafka journal: the production transport.

Topics (``topic_prefix`` defaults to ``edms_journal``):

- ``<prefix>.<database>.changes``: every record of one source database. Key = the
  record's key (Avro primary key of a row change), value = the single-object Avro value,
  header ``position`` = ``Position.to_bytes()``. One partition by default, so the topic
  itself is in commit order; nothing depends on that: with more partitions the reader
  merges them by position. ``cleanup.policy=delete`` and ``retention.ms=-1``: the
  compactor, not Kafka, decides what is kept (it writes packages; an operator may set a
  finite retention once packages cover it).
- ``<prefix>.schemas``: compacted; key = fingerprint (hex), value = schema JSON.

Durability and order: the writer is an idempotent, transactional producer (acks=all).
Everything appended between two ``flush`` calls is one Kafka transaction, committed by
``flush``; readers use ``read_committed``. A flush that fails therefore leaves none of
its records visible, never a gap followed by later records — which the position-based
dedupe of every consumer would turn into a silent loss when capture sends the records
again. The transactional id (``<prefix>.<database>.writer``) also fences an older writer:
when a second capture process starts, the first one's next flush fails.
(``?transactional=false`` gives a plain idempotent producer, whose flush only checks that
every send was acknowledged.)

Offsets: with one partition ``RawRecord.offset`` is the Kafka offset. With ``P > 1``
partitions it is ``kafka_offset << 12 | partition`` (up to 4096 partitions), and a
committed offset moves only the partitions it names: the reader resumes each partition
at its own committed offset and may deliver records again, which dedupe drops.

One module because the writer's transactions, the reader's read_committed merge and the
offset encoding above are one contract; kafka-python's private parts stay in
``journal.transport.kafka_internals``.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

from journal.codec import SchemaRegistry
from journal.errors import ConfigError, TransportError
from journal.positions import Position
from journal.transport import Committed, JournalReader, JournalWriter, RawRecord
from journal.transport.kafka_internals import direct_partition, fenced_stays_fenced, unanswered

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "edms_journal"
POSITION_HEADER = "position"
PARTITION_BITS = 12
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # large document rows must still fit in one record
_DIRECT_MAX_BYTES = MAX_MESSAGE_BYTES // 2  # larger records take send()'s size check
_PENDING_RECORDS = 512  # records appended before they are handed to the producer at once
_TOPIC_OK = re.compile(r"^[A-Za-z0-9._-]+$")
_TOPIC_EXISTS = 36  # TOPIC_ALREADY_EXISTS
T = TypeVar("T")


def _compression() -> str | None:
    # zstd needs the zstandard module; lz4 the lz4 module; gzip is always there but costs
    # more CPU than it saves on a local network, so without zstd/lz4 we send uncompressed
    from kafka import codec

    if codec.has_zstd():
        return "zstd"
    if codec.has_lz4():
        return "lz4"
    return None


def topic_part(name: str) -> str:
    """A database name as a topic name component (Kafka allows [A-Za-z0-9._-])."""
    if _TOPIC_OK.match(name) and name not in (".", ".."):
        return name
    import hashlib

    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class KafkaJournal:
    """The journal of one source database in a Kafka cluster."""

    bootstrap: tuple[str, ...]
    database: str
    topic_prefix: str = DEFAULT_PREFIX
    partitions: int = 1
    replication_factor: int = 1
    min_insync_replicas: int = 1
    retention_ms: int = -1
    transactional: bool = True
    connect_timeout: float = 8.0  # seconds to reach the cluster before giving up
    delivery_timeout: float = 60.0  # seconds a flush may spend retrying

    @classmethod
    def from_url(cls, url: str, database: str, **overrides: Any) -> KafkaJournal:
        """``kafka://host:port[,host:port][?topic_prefix=&partitions=&replication_factor=
        &min_insync_replicas=&retention_ms=&transactional=]``"""
        parts = urlsplit(url)
        hosts = tuple(h.strip() for h in parts.netloc.split(",") if h.strip())
        if parts.scheme != "kafka" or not hosts:
            raise ConfigError(f"not a Kafka journal URL: {url!r} (expected kafka://host:port)")
        for host in hosts:
            _, sep, port = host.rpartition(":")
            if not sep or not port.isdigit():
                raise ConfigError(f"Kafka address {host!r} in {url!r} needs host:port")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kwargs: dict[str, Any] = {}
        for name in ("partitions", "replication_factor", "min_insync_replicas", "retention_ms"):
            if name in query:
                try:
                    kwargs[name] = int(query.pop(name))
                except ValueError:
                    raise ConfigError(f"{name} in {url!r} is not an integer") from None
        if "topic_prefix" in query:
            kwargs["topic_prefix"] = query.pop("topic_prefix")
        if "transactional" in query:
            kwargs["transactional"] = query.pop("transactional").lower() in ("1", "true", "yes")
        if query:
            raise ConfigError(f"unknown options {sorted(query)} in {url!r}")
        kwargs.update(overrides)
        journal = cls(hosts, database, **kwargs)
        if not _TOPIC_OK.match(journal.topic_prefix):
            raise ConfigError(f"topic_prefix {journal.topic_prefix!r} may only use "
                              "letters, digits, '.', '_' and '-'")
        if not 1 <= journal.partitions <= 1 << PARTITION_BITS:
            raise ConfigError(f"partitions must be 1..{1 << PARTITION_BITS}")
        return journal

    @property
    def changes_topic(self) -> str:
        return f"{self.topic_prefix}.{topic_part(self.database)}.changes"

    @property
    def schemas_topic(self) -> str:
        return f"{self.topic_prefix}.schemas"

    @property
    def transactional_id(self) -> str:
        return f"{self.topic_prefix}.{topic_part(self.database)}.writer"

    @property
    def address(self) -> str:
        return ",".join(self.bootstrap)

    def client_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": list(self.bootstrap),
                "bootstrap_timeout_ms": int(self.connect_timeout * 1000),
                "request_timeout_ms": 15_000,
                "reconnect_backoff_max_ms": 2_000}

    def topic_configs(self) -> dict[str, dict[str, Any]]:
        common = {"min.insync.replicas": str(self.min_insync_replicas)}
        return {
            self.changes_topic: {
                "num_partitions": self.partitions,
                "replication_factor": self.replication_factor,
                "configs": {**common, "cleanup.policy": "delete",
                            "retention.ms": str(self.retention_ms),
                            "max.message.bytes": str(MAX_MESSAGE_BYTES)},
            },
            self.schemas_topic: {
                "num_partitions": 1,
                "replication_factor": self.replication_factor,
                "configs": {**common, "cleanup.policy": "compact",
                            "max.message.bytes": str(MAX_MESSAGE_BYTES)},
            },
        }

    def ensure_topics(self) -> None:
        """Create the changes and schemas topics if missing (idempotent)."""
        from kafka.admin import KafkaAdminClient

        admin = self._connect(lambda: KafkaAdminClient(**self.client_config()))
        try:
            wanted = self.topic_configs()
            existing = set(self._call(admin.list_topics, "listing topics"))
            missing = {name: spec for name, spec in wanted.items() if name not in existing}
            if missing:
                result = self._call(lambda: admin.create_topics(missing, raise_errors=False),
                                    "creating topics")
                for topic in result.get("topics", []):
                    code = topic.get("error_code", 0)
                    if code not in (0, _TOPIC_EXISTS):
                        raise TransportError(
                            f"cannot create Kafka topic {topic.get('name')}: "
                            f"{topic.get('error_message') or f'error code {code}'}")
                self._call(lambda: admin.wait_for_topics(list(missing), timeout_ms=30_000),
                           "waiting for new topics")
        finally:
            admin.close()

    def writer(self) -> KafkaJournalWriter:
        self.ensure_topics()
        return KafkaJournalWriter(self)

    def reader(self) -> KafkaJournalReader:
        return KafkaJournalReader(self)

    # -- error mapping --------------------------------------------------------------------

    def _connect(self, make: Callable[[], T]) -> T:
        try:
            return make()
        except Exception as exc:  # kafka-python raises KafkaTimeoutError, NoBrokers…
            raise TransportError(f"cannot reach Kafka at {self.address}: {exc}") from exc

    def _call(self, call: Callable[[], T], what: str) -> T:
        from kafka.errors import KafkaError

        try:
            return call()
        except TransportError:
            raise
        except (KafkaError, OSError) as exc:
            raise TransportError(f"Kafka at {self.address}: {what} failed: {exc}") from exc


def _bounded(call: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``call`` with a deadline: some kafka-python calls wait without one."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=f"kafka {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TransportError(f"{what} did not finish within {timeout:.0f} s")
    if error:
        raise error[0]
    return result[0]


class KafkaJournalWriter(JournalWriter):
    def __init__(self, journal: KafkaJournal) -> None:
        from kafka import KafkaProducer

        self.journal = journal
        self._futures: list[tuple[Any, int]] = []  # (future, how many records it answers for)
        self._pending: list[tuple[bytes | None, bytes, bytes]] = []
        self._in_transaction = False
        self._ready = False  # open and in a transaction (if transactional): append may send
        self._broken: str | None = None
        config = {
            **journal.client_config(),
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,  # the most idempotence allows
            "linger_ms": 5,
            "batch_size": 512 * 1024,
            "compression_type": _compression(),
            "max_request_size": MAX_MESSAGE_BYTES,
            "delivery_timeout_ms": int(journal.delivery_timeout * 1000),
            "max_block_ms": 30_000,
        }
        if journal.transactional:
            config["transactional_id"] = journal.transactional_id
            config["transaction_timeout_ms"] = 120_000
        self._producer = journal._connect(lambda: KafkaProducer(**config))
        try:
            if journal.transactional:
                if not fenced_stays_fenced(self._producer):
                    log.warning("this kafka-python may let a fenced journal writer take its "
                                "transactional id back")
                journal._call(self._producer.init_transactions, "initialising the writer")
            self._published = {fp for fp, _ in _read_schemas(journal)}
            self._changes_topic = journal.changes_topic
            self._changes_partition = self._single_partition(self._changes_topic)
            # with one partition, records may skip send's per-record checks
            self._direct = (direct_partition(self._producer, self._changes_topic, 0)
                            if self._changes_partition == 0 else None)
        except BaseException:
            self._producer.close(timeout=1)
            raise

    def _single_partition(self, topic: str) -> int | None:
        # With one partition, naming it spares the key-hashing partitioner on every send;
        # with more, the default partitioner keeps spreading records by key.
        found = self.journal._call(lambda: self._producer.partitions_for(topic),
                                   f"describing {topic}")
        return 0 if found == {0} else None

    def publish_schemas(self, registry: SchemaRegistry) -> None:
        self._check()
        new = [(fp, text) for fp, text in registry.items() if fp not in self._published]
        for fp, text in new:
            self._send(self.journal.schemas_topic, fp.hex().encode(), text.encode(), None)
        if new:
            # schemas are durable before any record that needs them
            self.flush()
            self._published.update(fp for fp, _ in new)

    def append(self, position: Position, key: bytes | None, value: bytes) -> None:
        # the hot path of capture: no per-record closures or error-mapping wrappers
        if not self._ready:
            self._check()
            self._begin()
        if self._direct is not None and len(value) < _DIRECT_MAX_BYTES:
            # handed to the producer a list at a time: written into its batch in C
            self._pending.append((key, value, position.to_bytes()))
            if len(self._pending) >= _PENDING_RECORDS:
                self._hand_over()
            return
        self._hand_over()
        try:
            future = self._producer.send(self._changes_topic, value, key,
                                         [(POSITION_HEADER, position.to_bytes())],
                                         self._changes_partition)
        except Exception as exc:
            self._send_failed(exc)
        self._futures.append((future, 1))

    def _hand_over(self) -> None:
        """The records appended since the last hand-over, into the producer, in order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            placed = self._direct.append_many(pending, POSITION_HEADER)  # type: ignore[union-attr]
        except Exception as exc:
            self._send_failed(exc)
        self._futures.extend(placed)

    def flush(self) -> None:
        self._check()
        self._hand_over()
        if not self._futures and not self._in_transaction:
            return
        timeout = self.journal.delivery_timeout + 10
        try:
            self.journal._call(lambda: self._producer.flush(timeout=timeout), "flush")
            # one future per batch of records, or per record sent alone
            failed = [(why, n) for f, n in self._futures if (why := unanswered(f))]
            if failed:
                raise TransportError(
                    f"Kafka at {self.journal.address} did not acknowledge "
                    f"{sum(n for _, n in failed)} of {sum(n for _, n in self._futures)} "
                    f"records: {failed[0][0]}")
            if self._in_transaction:
                self.journal._call(lambda: self._commit(timeout), "committing the transaction")
                self._in_transaction = False
        except TransportError as exc:
            self._fail(str(exc))
            raise
        finally:
            self._ready = False
        self._futures = []

    def _commit(self, timeout: float) -> None:
        producer = self._producer
        if self._direct is None:
            _bounded(producer.commit_transaction, timeout, "committing the Kafka transaction")
            return
        # commit_transaction() without a thread per flush: it waits without a deadline
        if not self._direct.commit_transaction(timeout):
            raise TransportError(f"committing the Kafka transaction did not finish within "
                                 f"{timeout:.0f} s")

    def close(self) -> None:
        self._ready = False
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            if self._in_transaction and not self._broken:
                _bounded(producer.abort_transaction, 10, "aborting the Kafka transaction")
        except Exception as exc:  # closing anyway; the coordinator aborts it on timeout
            log.debug("abort on close failed: %s", exc)
        try:
            producer.close(timeout=5)
        except Exception as exc:
            log.debug("producer close failed: %s", exc)

    # -- internals ------------------------------------------------------------------------

    def _check(self) -> None:
        if self._producer is None:
            raise TransportError("Kafka journal writer is closed")
        if self._broken:
            raise TransportError(f"Kafka journal writer is unusable after an earlier "
                                 f"failure ({self._broken}); open a new one")

    def _begin(self) -> None:
        if self.journal.transactional and not self._in_transaction:
            try:
                self.journal._call(self._producer.begin_transaction, "beginning a transaction")
                if self._direct is not None:
                    # what send() does for every record: the partition joins the transaction
                    self.journal._call(self._direct.add_to_transaction,
                                       "adding the partition to the transaction")
            except TransportError as exc:
                self._fail(str(exc))
                raise
            self._in_transaction = True
        self._ready = True

    def _send(self, topic: str, key: bytes | None, value: bytes,
              headers: list[tuple[str, bytes]] | None) -> None:
        self._begin()
        self._hand_over()
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers)
        except Exception as exc:
            self._send_failed(exc)
        self._futures.append((future, 1))

    def _send_failed(self, exc: Exception) -> NoReturn:
        from kafka.errors import KafkaError

        if isinstance(exc, KafkaError | OSError):
            error = TransportError(f"Kafka at {self.journal.address}: sending a record "
                                   f"failed: {exc}")
            self._fail(str(error))
            raise error from exc
        self._fail(f"sending a record failed: {exc!r}")
        raise exc

    def _fail(self, reason: str) -> None:
        # After a failure the producer's state is unknown (Kafka may fence it, bump its
        # epoch or drop batches): no further record may go through it.
        self._broken = reason
        self._ready = False
        self._pending = []  # never to be sent: the writer is unusable from here
        if self._in_transaction:
            try:
                _bounded(self._producer.abort_transaction, 10, "aborting the Kafka transaction")
            except Exception as exc:  # the coordinator aborts it after transaction timeout
                log.debug("abort after failure failed: %s", exc)
            self._in_transaction = False


def _consumer(journal: KafkaJournal, group: str | None = None) -> Any:
    from kafka import KafkaConsumer

    return journal._connect(lambda: KafkaConsumer(
        **journal.client_config(), group_id=group, enable_auto_commit=False,
        isolation_level="read_committed", auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES, fetch_max_bytes=4 * MAX_MESSAGE_BYTES))


def _partitions(journal: KafkaJournal, consumer: Any, topic: str) -> list[Any]:
    from kafka import TopicPartition

    found = journal._call(lambda: consumer.partitions_for_topic(topic), f"describing {topic}")
    if not found:
        raise TransportError(f"Kafka topic {topic} does not exist at {journal.address}: "
                             "run `journal init` (or start capture) first")
    return [TopicPartition(topic, p) for p in sorted(found)]


def _read_schemas(journal: KafkaJournal) -> list[tuple[bytes, str]]:
    """Every (fingerprint, schema json) of the schemas topic, beginning to end."""
    consumer = _consumer(journal)
    try:
        tps = _partitions(journal, consumer, journal.schemas_topic)
        consumer.assign(tps)
        ends = journal._call(lambda: consumer.end_offsets(tps), "reading schema offsets")
        for tp in tps:
            consumer.seek_to_beginning(tp)
        found: list[tuple[bytes, str]] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TransportError(f"reading {journal.schemas_topic} took over 60 s")
            batch = journal._call(lambda: consumer.poll(timeout_ms=500),
                                  f"reading {journal.schemas_topic}")
            for messages in batch.values():
                for m in messages:
                    if m.value is not None:
                        found.append((bytes.fromhex(m.key.decode()), m.value.decode()))
        return found
    finally:
        consumer.close(autocommit=False)


class KafkaJournalReader(JournalReader):
    def __init__(self, journal: KafkaJournal) -> None:
        self.journal = journal
        self._consumer = _consumer(journal)
        self._groups: dict[str, Any] = {}
        self._tps: list[Any] | None = None
        # multi-partition: the next offset of every partition as of the last record read
        self._frontier: tuple[int, dict[Any, int]] | None = None
        self._resume: dict[int, dict[int, int]] = {}

    def registry(self) -> SchemaRegistry:
        registry = SchemaRegistry()
        for fp, text in _read_schemas(self.journal):
            if registry.add(text) != fp:
                raise TransportError(f"schema published under {fp.hex()} in "
                                     f"{self.journal.schemas_topic} has another fingerprint")
        return registry

    def partitions(self) -> list[Any]:
        if self._tps is None:
            self._tps = _partitions(self.journal, self._consumer, self.journal.changes_topic)
        return self._tps

    def read(self, from_offset: int = 0, *, follow: bool = False,
             idle_timeout: float = 1.0) -> Iterator[RawRecord]:
        tps = self.partitions()
        consumer = self._consumer
        consumer.assign(tps)
        multi = len(tps) > 1
        for tp, start in self._starts(tps, from_offset).items():
            if start is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        ends = self.journal._call(lambda: consumer.end_offsets(tps), "reading end offsets")
        buffers: dict[Any, deque] = {tp: deque() for tp in tps}
        last_data = time.monotonic()
        while True:
            batch = self.journal._call(lambda: consumer.poll(timeout_ms=200),
                                       f"reading {self.journal.changes_topic}")
            for tp, messages in batch.items():
                buffers[tp].extend(messages)
            if batch:
                last_data = time.monotonic()
            if multi:
                if follow and not batch:
                    ends = self.journal._call(lambda: consumer.end_offsets(tps),
                                              "reading end offsets")
                yield from self._merge(tps, buffers, ends)
            else:
                for tp in tps:
                    while buffers[tp]:
                        m = buffers[tp].popleft()
                        yield RawRecord(_position(m, self.journal), m.key, m.value, m.offset,
                                        m.offset + 1)
            caught_up = all(not buffers[tp] and consumer.position(tp) >= ends[tp] for tp in tps)
            if not follow and caught_up:
                return
            if follow and time.monotonic() - last_data >= idle_timeout:
                return

    def _merge(self, tps: list[Any], buffers: dict[Any, deque], ends: dict[Any, int]
               ) -> Iterator[RawRecord]:
        # A partition with nothing buffered may still hold a lower position unless it is
        # read up to its end; only then can the lowest head be released.
        consumer = self._consumer
        while True:
            heads = []
            for tp in tps:
                if buffers[tp]:
                    m = buffers[tp][0]
                    heads.append((_position(m, self.journal), tp.partition, tp))
                elif consumer.position(tp) < ends[tp]:
                    return
            if not heads:
                return
            _, _, tp = heapq.nsmallest(1, heads)[0]
            m = buffers[tp].popleft()
            raw = RawRecord(_position(m, self.journal), m.key, m.value,
                            m.offset << PARTITION_BITS | tp.partition,
                            (m.offset + 1) << PARTITION_BITS | tp.partition)
            frontier = {t: (buffers[t][0].offset if buffers[t] else consumer.position(t))
                        for t in tps}
            self._frontier = (raw.next_offset, frontier)
            yield raw

    def _starts(self, tps: list[Any], from_offset: int) -> dict[Any, int | None]:
        if len(tps) == 1:
            return {tps[0]: from_offset or None}
        if from_offset == 0:
            return {tp: None for tp in tps}
        vector = self._resume.get(from_offset)
        if vector is not None:
            return {tp: vector.get(tp.partition) for tp in tps}
        # one partition's cursor: the others start from the beginning (dedupe drops
        # what is read again)
        partition = from_offset & ((1 << PARTITION_BITS) - 1)
        return {tp: (from_offset >> PARTITION_BITS if tp.partition == partition else None)
                for tp in tps}

    def committed(self, consumer: str) -> Committed:
        group = self._group(consumer)
        tps = self.partitions()
        committed = {}
        positions = set()
        for tp in tps:
            found = self.journal._call(lambda tp=tp: group.committed(tp, metadata=True),
                                       f"reading the committed offset of {consumer}")
            if found is not None:
                committed[tp.partition] = found.offset
                positions.add(found.metadata or "")
        if not committed:
            return Committed(0)
        # every partition is committed with the same position; anything else says nothing
        position = _parse_position(positions.pop()) if len(positions) == 1 else None
        if len(tps) == 1:
            return Committed(committed[tps[0].partition], position)
        partition, offset = max(committed.items(), key=lambda kv: (kv[1], kv[0]))
        token = offset << PARTITION_BITS | partition
        self._resume[token] = committed
        return Committed(token, position)

    def commit_offset(self, consumer: str, offset: int, *,
                      position: Position | None = None) -> None:
        from kafka.structs import OffsetAndMetadata

        tps = self.partitions()
        if len(tps) == 1:
            offsets = {tps[0]: offset}
        elif self._frontier is not None and self._frontier[0] == offset:
            offsets = dict(self._frontier[1])
        else:
            partition = offset & ((1 << PARTITION_BITS) - 1)
            offsets = {tp: offset >> PARTITION_BITS for tp in tps if tp.partition == partition}
        group = self._group(consumer)
        self.journal._call(
            lambda: group.commit({tp: OffsetAndMetadata(o, str(position or ""), -1)
                                  for tp, o in offsets.items()}),
            f"committing the offset of {consumer}")

    def close(self) -> None:
        for c in [self._consumer, *self._groups.values()]:
            try:
                c.close(autocommit=False)
            except Exception as exc:
                log.debug("consumer close failed: %s", exc)
        self._groups = {}

    def _group(self, name: str) -> Any:
        if not name or len(name) > 200:
            raise ConfigError(f"consumer name {name!r} is not a valid group id")
        if name not in self._groups:
            self._groups[name] = _consumer(self.journal, group=self._group_id(name))
        return self._groups[name]

    def _group_id(self, name: str) -> str:
        return f"{self.journal.topic_prefix}.{topic_part(self.journal.database)}.{name}"


def _position(message: Any, journal: KafkaJournal) -> Position:
    for key, value in message.headers or ():
        if key == POSITION_HEADER and len(value) == 16:
            return Position.from_bytes(value)
    raise TransportError(f"record at offset {message.offset} of {message.topic} "
                         f"partition {message.partition} has no position header: not "
                         "written by this journal")


def _parse_position(text: str) -> Position | None:
    """The position a commit's metadata names (commits of older versions carry none)."""
    try:
        return Position.parse(text) if text else None
    except ValueError:
        return None
