"""The codec: stream records as Avro single-object encoded values, schemas by fingerprint.

Capture encodes every record it journals with ``encode``; every reader of the stream
(transports, compaction, packages, restore) decodes with ``decode``. The room has four
parts, each in its own module:

- ``wire``: the framing (``C3 01`` + fingerprint + body), the schemas and fingerprints;
- ``registry``: ``SchemaRegistry``, the schemas by fingerprint a transport publishes and a
  package copies, with the compiled encoder and decoder built once per schema;
- ``reference``: fastavro's generic writer and reader with our row conversions, what
  every compiled path must equal and what handles whatever a compiled path leaves to it;
- ``encoder`` and ``decoder``: the compiled paths (``bench/codec.py`` measures what they
  buy over the reference and over fastavro alone); the decoder reads rows and change
  events in C (``_fastread``), the encoder writes rows (package members and the images of
  change events) in C (``_fastwrite``), where the extensions were compiled at install.

Beside them, ``copytext`` hands the restorer's COPY writer the C formatter of COPY text
(``_copytext``): journal values as psycopg's ``write_row`` would send them. The decoder's
``record_copier`` writes a package's rows as the same COPY text straight from their Avro
bytes (the formatting code of both is ``_copyout.pxi``).
"""

from journal.codec.decoder import (
    decode,
    decode_compiled,
    record_copier,
    record_reader,
    record_walker,
)
from journal.codec.encoder import (
    avro_long,
    encode,
    encode_compiled,
    row_writer,
    table_row_writer,
)
from journal.codec.reference import (
    avro_field_value,
    decode_generic,
    encode_generic,
    from_avro_row,
    to_avro_row,
)
from journal.codec.registry import SchemaRegistry
from journal.codec.wire import MAGIC, envelope_schema, fingerprint, packaged_schema, split_header

__all__ = [
    "MAGIC",
    "SchemaRegistry",
    "avro_field_value",
    "avro_long",
    "decode",
    "decode_compiled",
    "decode_generic",
    "encode",
    "encode_compiled",
    "encode_generic",
    "envelope_schema",
    "fingerprint",
    "from_avro_row",
    "packaged_schema",
    "record_copier",
    "record_reader",
    "record_walker",
    "row_writer",
    "split_header",
    "table_row_writer",
    "to_avro_row",
]
