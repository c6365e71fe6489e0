"""Codec benchmarks: encode and decode records/s of our reference path, our compiled
paths (Python, and C where built) and fastavro's schemaless writer and reader alone, on
the same schema and data.

    python bench/codec.py                  # 2,000 records per kind, best of 7 runs of 0.2 s
    python bench/codec.py --records 500 --seconds 0.1 --repeat 15

Kinds: the rows of a table shaped like ``journal/sample.py``'s ``document`` (ints, text,
an enum, timestamps, a date, numeric, uuid, jsonb, a text array, bytea, nulls) as insert
events; a change mix (inserts, updates with a before image, key-only deletes); the same
rows as a package holds them (Row records, no envelope); BEGIN and END markers.

``reference`` is fastavro's generic writer/reader plus our conversions (``encode_generic``,
``decode_generic``), what every compiled path must equal; ``compiled`` is the compiled
path in Python (generated row readers and writers, the Python envelope decoder); ``C`` is
what ``encode``, ``decode`` and a package's writer try first where the C decoder and writer
(``journal/codec/_fastread.pyx``, ``_fastwrite.pyx``) are built: rows and change events
read in C, row images written in C, markers as ``compiled``; ``fastavro`` is
``schemaless_writer``/``schemaless_reader`` alone on the same schema and the datum fastavro
itself reads back: the floor of the generic path, without our conversions. Ratios are
compiled over reference, C over compiled and C over fastavro.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import fastavro
from psycopg.postgres import types as pg_types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from journal.catalog import Column, TableSchema  # noqa: E402
from journal.codec import (  # noqa: E402
    SchemaRegistry,
    decode_generic,
    encode,
    encode_generic,
    envelope_schema,
    record_reader,
    split_header,
    to_avro_row,
)
from journal.events import ChangeEvent, TransactionMarker  # noqa: E402
from journal.positions import Position  # noqa: E402

try:  # the compiled paths, where this version of the codec has them
    from journal.codec import encode_compiled
except ImportError:
    encode_compiled = None  # type: ignore[assignment]
try:
    from journal.codec import decode_compiled
except ImportError:
    decode_compiled = None  # type: ignore[assignment]
try:  # the C decoder and the switch to its Python twin
    from journal.codec.decoder import IN_C, MAGIC, Unhandled, compile_decoder
except ImportError:
    IN_C = False
try:  # the C writer of rows and the switch to its Python twin
    from journal.codec.encoder import IN_C as ENCODE_IN_C
    from journal.codec.encoder import ChangeEncoder, row_writer
except ImportError:
    ENCODE_IN_C = False


def _oid(name: str) -> int:
    return pg_types[name].oid


def _array_oid(name: str) -> int:
    return pg_types[name].array_oid


ENUM_OID = 16_400  # an enum's OID is the database's own: any untyped OID travels as text
DOCUMENT = TableSchema("public", "document", (
    Column("id", "bigint", _oid("int8"), True),
    Column("uuid", "uuid", _oid("uuid"), True),
    Column("title", "character varying(255)", _oid("varchar"), True),
    Column("document_type_id", "integer", _oid("int4"), True),
    Column("owner_id", "integer", _oid("int4"), True),
    Column("current_version_id", "bigint", _oid("int8")),
    Column("status", "document_status", ENUM_OID, True),
    Column("page_count", "integer", _oid("int4")),
    Column("size_bytes", "bigint", _oid("int8")),
    Column("price", "numeric(12,2)", _oid("numeric")),
    Column("is_archived", "boolean", _oid("bool"), True),
    Column("created", "timestamp with time zone", _oid("timestamptz"), True),
    Column("modified", "timestamp without time zone", _oid("timestamp"), True),
    Column("due_date", "date", _oid("date")),
    Column("metadata", "jsonb", _oid("jsonb")),
    Column("keywords", "text[]", _array_oid("text")),
    Column("thumbnail", "bytea", _oid("bytea")),
    Column("body", "text", _oid("text")),
), ("id",))
STATUSES = ("draft", "review", "approved", "published", "archived")
WORDS = ("contract", "invoice", "policy", "memo", "report", "minutes", "offer", "claim")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
COMMIT_TS = 1_780_000_000_000_000


def document(rng: random.Random, doc_id: int) -> dict[str, Any]:
    """One row, about a fifth of its nullable columns null, as capture hands it over."""
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.2 else value

    created = T0 + timedelta(seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6))
    title = f"{rng.choice(WORDS).title()} {doc_id:08d} for customer {rng.randrange(9973)}"
    return {
        "id": doc_id, "uuid": UUID(int=rng.getrandbits(128), version=4), "title": title,
        "document_type_id": rng.randrange(1, 20), "owner_id": rng.randrange(1, 5000),
        "current_version_id": maybe(doc_id * 3), "status": rng.choice(STATUSES),
        "page_count": maybe(rng.randrange(1, 400)),
        "size_bytes": maybe(rng.randrange(10**3, 10**9)),
        "price": maybe(Decimal(rng.randrange(10**9)).scaleb(-2)),
        "is_archived": rng.random() < 0.1, "created": created,
        "modified": (created + timedelta(days=rng.randrange(30))).replace(tzinfo=None),
        "due_date": maybe(date(2025, 1, 1) + timedelta(days=rng.randrange(1000))),
        "metadata": maybe(json.dumps({"source": rng.choice(WORDS), "pages": rng.randrange(9),
                                      "reviewed": rng.random() < 0.5})),
        "keywords": maybe(rng.sample(WORDS, rng.randrange(4))),
        "thumbnail": maybe(rng.randbytes(rng.randrange(16, 96))),
        "body": maybe(" ".join(rng.choice(WORDS) for _ in range(rng.randrange(5, 60)))),
    }


def workload(count: int, seed: int) -> dict[str, list[Any]]:
    """The records of each kind: one transaction's worth of events per row."""
    rng = random.Random(seed)
    rows = [document(rng, i + 1) for i in range(count)]

    def event(op: str, i: int, before: dict | None, after: dict | None) -> ChangeEvent:
        return ChangeEvent(op, "edms", DOCUMENT, Position((1 << 32) + i * 0x100, 1),
                           1000 + i, COMMIT_TS + i, before, after)

    changes: list[Any] = []
    for i, row in enumerate(rows):
        kind = rng.random()
        if kind < 0.5:
            changes.append(event("c", i, None, row))
        elif kind < 0.85:
            changed = dict(row, title=row["title"] + " (rev)", page_count=rng.randrange(400))
            changes.append(event("u", i, row, changed))
        else:
            changes.append(event("d", i, {"id": row["id"]}, None))
    return {
        "rows as inserts": [event("c", i, None, row) for i, row in enumerate(rows)],
        "change mix": changes,
        "package rows": rows,
        "BEGIN markers": [TransactionMarker("BEGIN", "edms", Position((1 << 32) + i, 0),
                                            1000 + i, COMMIT_TS + i) for i in range(count)],
        "END markers": [TransactionMarker("END", "edms", Position((1 << 32) + i, 7), 1000 + i,
                                          COMMIT_TS + i, 6) for i in range(count)],
    }


def rates(paths: Paths, count: int, seconds: float, repeat: int) -> dict[str, float | None]:
    """Best records/s of each path over ``repeat`` rounds of runs of at least ``seconds``
    of this process's CPU time (a shared machine's other processes do not count); the paths
    take turns within a round, so what load remains slows each of them alike."""
    best: dict[str, float | None] = {name: None if run is None else 0.0
                                     for name, run in paths.items()}
    for _ in range(repeat):
        for name, run in paths.items():
            if run is None:
                continue
            done, started = 0, time.process_time()
            while (elapsed := time.process_time() - started) < seconds or not done:
                run()
                done += count
            best[name] = max(best[name] or 0.0, done / elapsed)
    return best


def _write(parsed: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def _read(parsed: Any, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), parsed, None)


Paths = dict[str, Callable[[], Any] | None]


def python_decoder(registry: SchemaRegistry) -> Callable[[bytes], Any]:
    """``decode_compiled`` with its change events read in Python, not C."""
    decoders: dict[bytes, Any] = {}

    def decode(value: bytes) -> Any:
        if type(value) is not bytes or value[:2] != MAGIC:
            raise Unhandled
        fp = value[2:10]
        try:
            decoder = decoders[fp]
        except KeyError:
            decoder = decoders[fp] = compile_decoder(fp, registry.parsed(fp),
                                                     registry.table(fp), in_c=False)
        return decoder(value)
    return decode


def python_encoder(registry: SchemaRegistry) -> Callable[[Any], Any]:
    """``encode_compiled`` with the row images of change events written in Python, not C."""
    encoders: dict[int, Any] = {}

    def encode_python(record: Any) -> Any:
        if type(record) is not ChangeEvent:
            return encode_compiled(record, registry)
        encoder = encoders.get(id(record.table))
        if encoder is None:
            fp, parsed, key_schema = registry.for_table(record.table)
            encoder = encoders[id(record.table)] = ChangeEncoder(
                record.table, fp, parsed, key_schema, in_c=False)
        return encoder.encode(record)
    return encode_python


def stream_paths(records: Sequence[Any]) -> tuple[Paths, Paths]:
    """(encode paths, decode paths) of single-object encoded stream records."""
    registry = SchemaRegistry()
    values = [encode(r, registry)[1] for r in records]
    split = [split_header(v) for v in values]
    parsed = [registry.parsed(fp) for fp, _ in split]
    datums = [_read(p, body) for p, (_, body) in zip(parsed, split, strict=True)]
    pairs = list(zip(parsed, datums, strict=True))
    encode_python = python_encoder(registry) if ENCODE_IN_C else None

    def encoding_py() -> list[Any]:
        return [encode_python(r) for r in records] if encode_python is not None \
            else [encode_compiled(r, registry) for r in records]
    encoding: Paths = {
        "reference": lambda: [encode_generic(r, registry) for r in records],
        "compiled": None if encode_compiled is None else encoding_py,
        "C": (lambda: [encode_compiled(r, registry) for r in records]) if ENCODE_IN_C
        else None,
        "fastavro": lambda: [_write(p, d) for p, d in pairs],
    }
    bodies = list(zip(parsed, [body for _, body in split], strict=True))
    in_python = python_decoder(registry) if IN_C else None

    def decoding_c() -> list[Any]:
        return [decode_compiled(v, registry) for v in values]

    def decoding_py() -> list[Any]:
        return [in_python(v) for v in values] if in_python is not None \
            else [decode_compiled(v, registry) for v in values]
    decoding: Paths = {
        "reference": lambda: [decode_generic(v, registry) for v in values],
        "compiled": None if decode_compiled is None else decoding_py,
        "C": decoding_c if IN_C else None,
        "fastavro": lambda: [_read(p, b) for p, b in bodies],
    }
    return encoding, decoding


def row_paths(rows: Sequence[dict[str, Any]]) -> tuple[Paths, Paths]:
    """(encode paths, decode paths) of package Row records (no envelope, no header)."""
    schema = envelope_schema(DOCUMENT)["fields"][0]["type"][1]
    parsed = fastavro.parse_schema(schema)
    datums = [to_avro_row(DOCUMENT, r) for r in rows]
    data = b"".join(_write(parsed, d) for d in datums)
    read_row = record_reader(parsed, in_c=False) if IN_C else record_reader(parsed)
    read_row_c = record_reader(parsed) if IN_C else None
    write_row = row_writer(parsed, in_c=False) if ENCODE_IN_C else None
    write_row_c = row_writer(parsed) if ENCODE_IN_C else None

    def read_all(read: Callable[[bytes, int], tuple[Any, int]]) -> None:
        at = 0
        for _ in range(len(rows)):
            _, at = read(data, at)

    def fastavro_all() -> None:
        buf = io.BytesIO(data)
        for _ in range(len(rows)):
            fastavro.schemaless_reader(buf, parsed, None)

    encoding: Paths = {
        "reference": lambda: [_write(parsed, to_avro_row(DOCUMENT, r)) for r in rows],
        # a package's writer: the datum converted as fastavro takes it, then the row writer
        "compiled": None if write_row is None else lambda: [write_row(d) for d in datums],
        "C": None if write_row_c is None else lambda: [write_row_c(d) for d in datums],
        "fastavro": lambda: [_write(parsed, d) for d in datums],
    }
    decoding: Paths = {
        "reference": fastavro_all,  # what a package reader falls back to
        "compiled": None if read_row is None else lambda: read_all(read_row),
        "C": None if read_row_c is None else lambda: read_all(read_row_c),
        "fastavro": fastavro_all,
    }
    return encoding, decoding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per kind")
    parser.add_argument("--seconds", type=float, default=0.2, help="least time per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    def fmt(value: float | None) -> str:
        return f"{value:>11,.0f}" if value is not None else f"{'-':>11}"

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:>6.2f}x" if a is not None and b is not None else f"{'-':>7}"

    print(f"records/s, best of {args.repeat} runs of {args.seconds} s, "
          f"{args.records} records per kind")
    print(f"{'':24}{'reference':>11} {'compiled':>11} {'C':>11} {'fastavro':>11}"
          f"  {'c/ref':>7} {'C/c':>7} {'C/fast':>7}")
    for kind, records in workload(args.records, args.seed).items():
        paths = row_paths(records) if kind == "package rows" else stream_paths(records)
        for direction, by_path in zip(("encode", "decode"), paths, strict=True):
            got = rates(by_path, len(records), args.seconds, args.repeat)
            print(f"{direction} {kind:<17}{fmt(got['reference'])} {fmt(got['compiled'])} "
                  f"{fmt(got['C'])} {fmt(got['fastavro'])}  "
                  f"{ratio(got['compiled'], got['reference'])} "
                  f"{ratio(got['C'], got['compiled'])} {ratio(got['C'], got['fastavro'])}",
                  flush=True)


if __name__ == "__main__":
    main()
