"""The schema registry: schemas by fingerprint, and what is built once per schema.

A transport publishes the registry's schemas beside the records and a package copies
them, so a reader decodes with exactly the writer's schema. The registry also keeps, per
table version and per fingerprint, the compiled encoder and decoder built from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import fastavro

from journal.catalog import TableSchema
from journal.codec.decoder import compile_decoder
from journal.codec.encoder import ChangeEncoder
from journal.codec.wire import envelope_schema, fingerprint, packaged_fingerprint, packaged_schema
from journal.errors import ValidationError
from journal.events import Record


class SchemaRegistry:
    """Schemas by fingerprint: what a transport publishes and a package copies."""

    def __init__(self) -> None:
        self._json: dict[bytes, str] = {}
        self._parsed: dict[bytes, Any] = {}
        self._tables: dict[bytes, TableSchema] = {}
        self._by_table: dict[TableSchema, tuple[bytes, Any, Any]] = {}
        # id(table) -> (table, encoder): hashing a TableSchema per record is measurable
        self._encoders: dict[int, tuple[TableSchema, ChangeEncoder]] = {}
        # fingerprint -> compiled decoder, or None where fastavro reads the schema
        self._decoders: dict[bytes, Callable[[bytes], Record] | None] = {}
        for name in ("transaction", "message"):
            self.add(json.dumps(packaged_schema(name)))

    def add(self, schema_json: str) -> bytes:
        schema = json.loads(schema_json)
        fp = fingerprint(schema)
        if fp not in self._json:
            self._json[fp] = schema_json
            self._parsed[fp] = fastavro.parse_schema(schema)
            if schema.get("name") == "Envelope" and "pg_table" in schema:
                self._tables[fp] = TableSchema.from_avro_envelope(schema)
        return fp

    def for_table(self, table: TableSchema) -> tuple[bytes, Any, Any]:
        """(fingerprint, parsed envelope, parsed key schema), registering on first use."""
        hit = self._by_table.get(table)
        if hit is None:
            fp = self.add(json.dumps(envelope_schema(table)))
            key = fastavro.parse_schema(table.avro_key_schema())
            hit = self._by_table[table] = (fp, self._parsed[fp], key)
            self._tables[fp] = table
        return hit

    def encoder(self, table: TableSchema) -> ChangeEncoder:
        """The compiled envelope encoder of a table version, registering it on first use."""
        hit = self._encoders.get(id(table))
        if hit is None or hit[0] is not table:
            fp, parsed, key_schema = self.for_table(table)
            hit = self._encoders[id(table)] = (table, ChangeEncoder(table, fp, parsed,
                                                                     key_schema))
        return hit[1]

    def decoder(self, fp: bytes) -> Callable[[bytes], Record] | None:
        """The compiled decoder of a schema's values, or None: unknown fingerprint, or a
        schema the compiled decoders do not read (fastavro does)."""
        try:
            return self._decoders[fp]
        except KeyError:
            pass
        if fp not in self._parsed:
            return None
        decoder = self._decoders[fp] = compile_decoder(fp, self._parsed[fp],
                                                       self._tables.get(fp))
        return decoder

    def fingerprint_of(self, name: str) -> bytes:
        return packaged_fingerprint(name)

    def schema_json(self, fp: bytes) -> str:
        try:
            return self._json[fp]
        except KeyError:
            raise ValidationError(f"no schema with fingerprint {fp.hex()} is known") from None

    def items(self) -> list[tuple[bytes, str]]:
        return list(self._json.items())

    def __contains__(self, fp: bytes) -> bool:
        return fp in self._json

    def parsed(self, fp: bytes) -> Any:
        if fp not in self._parsed:
            self.schema_json(fp)
        return self._parsed[fp]

    def table(self, fp: bytes) -> TableSchema | None:
        return self._tables.get(fp)

