"""Backup packages: the format, how packages are written, read and verified, and the
store they live in.

A package is one plain tar file, ``manifest.json`` first, then Avro object container
files: a **full** snapshot holds every row of every table at one position, a **segment**
the stream records between two positions. Its id is derived from its content, so an
edited package no longer matches its name. The room, one concept per module, from the
bottom up:

- ``manifest``: what a package holds (``Manifest``, ``MemberInfo``), its schema and id;
- ``tar``: the strict tar reader and the writer (member names never leave the archive);
- ``ocf``: the Avro container files, read with bounds taken from the manifest;
- ``builder``: ``PackageBuilder`` and its row and event writers;
- ``reader``: ``open_package`` and ``PackageReader`` (rows, records, transactions);
- ``verify``: a package through every stage, a chain of packages, a whole store;
- ``store``: the ``PackageStore`` interface, the file store, leases.

Callers use the names re-exported here (the store's also as ``journal.packages.store``);
the modules' other public names serve the room itself.
"""

from journal.packages.builder import EventWriter, PackageBuilder, RowWriter
from journal.packages.manifest import (
    EVENTS,
    FORMAT_VERSION,
    KINDS,
    MANIFEST,
    STREAM_RECORD_SCHEMA,
    Manifest,
    MemberInfo,
    manifest_schema,
    member_name_for,
    positions_sort_key,
)
from journal.packages.reader import (
    PackageReader,
    PackageSource,
    open_package,
    read_manifest,
    sort_key,
)
from journal.packages.store import FileStore, Lease, PackageStore, open_store
from journal.packages.verify import Check, verify_chain, verify_package, verify_store

__all__ = [
    "EVENTS",
    "FORMAT_VERSION",
    "KINDS",
    "MANIFEST",
    "STREAM_RECORD_SCHEMA",
    "Check",
    "EventWriter",
    "FileStore",
    "Lease",
    "Manifest",
    "MemberInfo",
    "PackageBuilder",
    "PackageReader",
    "PackageSource",
    "PackageStore",
    "RowWriter",
    "manifest_schema",
    "member_name_for",
    "open_package",
    "open_store",
    "positions_sort_key",
    "read_manifest",
    "sort_key",
    "verify_chain",
    "verify_package",
    "verify_store",
]
