"""The EDMS sample database: a Django-style schema, a fast bulk load and a live workload.

It is what the demo captures and what the tests restore: surrogate integer ids everywhere,
natural keys beside them (a user's ``username``, a document's ``uuid``, a content type's
``(app_label, model)``), a self-reference (a user's manager), a foreign-key cycle
(``document.current_version_id`` -> ``document_version``, deferred), generic foreign keys
(``access_control_entry`` and ``django_admin_log`` point at any row through a content type
and an object id), an enum, jsonb, arrays, bytea and large TOASTed text.

Deletes follow Django: the database does not cascade, the application deletes dependants
itself (so the journal sees every deleted row). The one exception is a user's manager,
``ON DELETE SET NULL`` as Django's ``on_delete=SET_NULL`` would be if left to the database.
Only the cycle's foreign key is deferrable: the rest are checked at once, which is what
makes load and restore order matter.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from journal.catalog import table_schemas
from journal.values import read_rows
from producers.source_catalog import read_catalog

SCHEMA_DDL = """
CREATE TYPE document_status AS ENUM ('draft', 'review', 'approved', 'published', 'archived');

CREATE TABLE django_content_type (
    id serial PRIMARY KEY,
    app_label varchar(100) NOT NULL,
    model varchar(100) NOT NULL,
    CONSTRAINT django_content_type_app_label_model_key UNIQUE (app_label, model)
);

CREATE TABLE auth_permission (
    id serial PRIMARY KEY,
    name varchar(255) NOT NULL,
    content_type_id integer NOT NULL REFERENCES django_content_type (id),
    codename varchar(100) NOT NULL,
    CONSTRAINT auth_permission_content_type_id_codename_key UNIQUE (content_type_id, codename)
);

CREATE TABLE auth_group (
    id serial PRIMARY KEY,
    name varchar(150) NOT NULL UNIQUE
);

CREATE TABLE auth_user (
    id serial PRIMARY KEY,
    password varchar(128) NOT NULL,
    username varchar(150) NOT NULL UNIQUE,
    email varchar(254) NOT NULL,
    first_name varchar(150) NOT NULL,
    last_name varchar(150) NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    is_staff boolean NOT NULL DEFAULT false,
    is_superuser boolean NOT NULL DEFAULT false,
    date_joined timestamptz NOT NULL,
    last_login timestamptz,
    manager_id integer REFERENCES auth_user (id) ON DELETE SET NULL
);
CREATE INDEX auth_user_manager_id_idx ON auth_user (manager_id);

CREATE TABLE auth_user_groups (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES auth_user (id),
    group_id integer NOT NULL REFERENCES auth_group (id),
    CONSTRAINT auth_user_groups_user_id_group_id_key UNIQUE (user_id, group_id)
);
CREATE INDEX auth_user_groups_group_id_idx ON auth_user_groups (group_id);

CREATE TABLE auth_group_permissions (
    id bigserial PRIMARY KEY,
    group_id integer NOT NULL REFERENCES auth_group (id),
    permission_id integer NOT NULL REFERENCES auth_permission (id),
    CONSTRAINT auth_group_permissions_group_id_permission_id_key UNIQUE (group_id, permission_id)
);
CREATE INDEX auth_group_permissions_permission_id_idx ON auth_group_permissions (permission_id);

CREATE TABLE document_type (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE,
    retention_days integer NOT NULL CHECK (retention_days > 0)
);

CREATE TABLE workflow (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE
);

CREATE TABLE workflow_state (
    id serial PRIMARY KEY,
    workflow_id integer NOT NULL REFERENCES workflow (id),
    name varchar(100) NOT NULL,
    is_initial boolean NOT NULL DEFAULT false,
    CONSTRAINT workflow_state_workflow_id_name_key UNIQUE (workflow_id, name)
);

CREATE TABLE tag (
    id serial PRIMARY KEY,
    label varchar(100) NOT NULL UNIQUE,
    color char(7) NOT NULL DEFAULT '#808080'
);

CREATE TABLE document (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL UNIQUE,
    title varchar(255) NOT NULL,
    document_type_id integer NOT NULL REFERENCES document_type (id),
    owner_id integer NOT NULL REFERENCES auth_user (id),
    current_version_id bigint,
    status document_status NOT NULL DEFAULT 'draft',
    page_count integer CHECK (page_count >= 0),
    size_bytes bigint,
    price numeric(12, 2),
    is_archived boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL,
    modified timestamp NOT NULL,
    due_date date,
    metadata jsonb,
    keywords text[],
    thumbnail bytea,
    body text
);
CREATE INDEX document_owner_id_idx ON document (owner_id);
CREATE INDEX document_document_type_id_idx ON document (document_type_id);
CREATE INDEX document_created_idx ON document (created DESC);

CREATE TABLE document_version (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES document (id),
    version_number integer NOT NULL,
    checksum char(64) NOT NULL,
    comment text NOT NULL DEFAULT '',
    created timestamptz NOT NULL,
    content text,
    CONSTRAINT document_version_document_id_version_number_key
        UNIQUE (document_id, version_number)
);

-- The cycle: a document points at its current version, which points back at it.
ALTER TABLE document ADD CONSTRAINT document_current_version_id_fkey
    FOREIGN KEY (current_version_id) REFERENCES document_version (id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE document_tags (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES document (id),
    tag_id integer NOT NULL REFERENCES tag (id),
    CONSTRAINT document_tags_document_id_tag_id_key UNIQUE (document_id, tag_id)
);
CREATE INDEX document_tags_tag_id_idx ON document_tags (tag_id);

-- The workflow log: no natural key, rows are told apart by their id only.
CREATE TABLE document_state (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES document (id),
    state_id integer NOT NULL REFERENCES workflow_state (id),
    actor_id integer REFERENCES auth_user (id),
    entered_at timestamptz NOT NULL,
    comment text
);
CREATE INDEX document_state_document_id_idx ON document_state (document_id);

-- A generic foreign key: (content_type_id, object_id) names any row.
CREATE TABLE access_control_entry (
    id bigserial PRIMARY KEY,
    content_type_id integer NOT NULL REFERENCES django_content_type (id),
    object_id bigint NOT NULL,
    permission_id integer NOT NULL REFERENCES auth_permission (id),
    group_id integer NOT NULL REFERENCES auth_group (id),
    CONSTRAINT access_control_entry_object_key
        UNIQUE (content_type_id, object_id, permission_id, group_id)
);

CREATE TABLE django_admin_log (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    action_time timestamptz NOT NULL,
    user_id integer NOT NULL REFERENCES auth_user (id),
    content_type_id integer REFERENCES django_content_type (id),
    object_id text,
    object_repr varchar(200) NOT NULL,
    action_flag smallint NOT NULL CHECK (action_flag >= 0),
    change_message text NOT NULL
);
CREATE INDEX django_admin_log_user_id_idx ON django_admin_log (user_id);
"""

# Tables in an order that satisfies every immediate foreign key (the cycle is deferred).
TABLES = (
    "django_content_type", "auth_permission", "auth_group", "auth_user", "auth_user_groups",
    "auth_group_permissions", "document_type", "workflow", "workflow_state", "tag",
    "document", "document_version", "document_tags", "document_state",
    "access_control_entry", "django_admin_log",
)

CONTENT_TYPES = (
    ("admin", "logentry"), ("auth", "permission"), ("auth", "group"), ("auth", "user"),
    ("contenttypes", "contenttype"), ("sessions", "session"), ("edms", "documenttype"),
    ("edms", "workflow"), ("edms", "workflowstate"), ("edms", "tag"), ("edms", "document"),
    ("edms", "documentversion"), ("edms", "documentstate"), ("edms", "accesscontrolentry"),
)
PERMISSION_ACTIONS = ("add", "change", "delete", "view")
DOCUMENT_TYPES = (
    ("Invoice", 3650), ("Contract", 3650), ("Purchase order", 2555), ("Receipt", 2555),
    ("Policy", 1825), ("Procedure", 1825), ("Report", 1095), ("Memo", 365),
    ("Letter", 730), ("Specification", 1825), ("Drawing", 3650), ("Minutes", 1095),
)
WORKFLOWS = {
    "Review": ("draft", "in review", "approved", "rejected"),
    "Publication": ("draft", "editing", "legal check", "published", "withdrawn"),
    "Records": ("received", "registered", "filed", "retained", "disposed", "on hold"),
}
STATUSES = ("draft", "review", "approved", "published", "archived")
GROUPS = ("Administrators", "Editors", "Reviewers", "Readers", "Auditors", "Legal",
          "Finance", "Records office")
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
WORDS = ("annual", "budget", "contract", "supplier", "quality", "audit", "policy", "safety",
         "invoice", "project", "review", "archive", "customer", "legal", "draft", "final",
         "summary", "north", "south", "plan", "estimate", "tender", "board", "minutes")
FIRST_NAMES = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
               "Margaret", "Niklaus", "Radia", "Tim", "Sophie", "Leslie", "John", "Mary")
LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen",
              "Thompson", "Hamilton", "Wirth", "Perlman", "Berners-Lee", "Wilson", "Lamport")
PARAGRAPH = (
    "This document is kept under the records policy of its document type. Changes are "
    "reviewed by the owner's group before approval; approved versions are immutable and "
    "every transition of the workflow is logged with its actor and time. "
)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
# Every tenth body is random text longer than a TOAST page, so it is stored out of line
# even after compression: an update that does not touch it sends it as "unchanged TOAST".
INCOMPRESSIBLE_EVERY = 10
INCOMPRESSIBLE_BYTES = 6_900  # base64: about 9,200 characters


# --- schema ------------------------------------------------------------------------------

def create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the sample's tables, in one transaction."""
    with conn.transaction():
        conn.execute(SCHEMA_DDL)


# --- bulk load ---------------------------------------------------------------------------

def load(conn: psycopg.Connection[Any], scale: int, seed: int = 0) -> dict[str, int]:
    """Fill the (empty) sample with ``scale`` documents and everything around them.

    Deterministic for a seed; COPY throughout; one transaction. Returns rows per table.
    """
    if scale < 1:
        raise ValueError("scale must be at least 1 document")
    data = _SampleData(scale, random.Random(seed))
    counts: dict[str, int] = {}
    with conn.transaction():
        for table in TABLES:
            rows = getattr(data, table)()
            counts[table] = _copy_in(conn, table, rows)
        _reset_sequences(conn)
    return counts


def _copy_in(conn: psycopg.Connection[Any], table: str,
             rows: Iterator[Sequence[Any]]) -> int:
    first = next(rows, None)
    if first is None:
        return 0
    columns = _COLUMNS[table]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    count = 1
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write_row(first)
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _reset_sequences(conn: psycopg.Connection[Any]) -> None:
    """Ids were given explicitly: move each sequence past the highest one."""
    for table in TABLES:
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')",
                           (sql.Identifier(table).as_string(conn),)).fetchone()[0]
        conn.execute(
            sql.SQL("SELECT setval({}::regclass, coalesce(max(id), 0) + 1, false) FROM {}")
            .format(sql.Literal(seq), sql.Identifier(table)))


_COLUMNS: dict[str, tuple[str, ...]] = {
    "django_content_type": ("id", "app_label", "model"),
    "auth_permission": ("id", "name", "content_type_id", "codename"),
    "auth_group": ("id", "name"),
    "auth_user": ("id", "password", "username", "email", "first_name", "last_name",
                  "is_active", "is_staff", "is_superuser", "date_joined", "last_login",
                  "manager_id"),
    "auth_user_groups": ("id", "user_id", "group_id"),
    "auth_group_permissions": ("id", "group_id", "permission_id"),
    "document_type": ("id", "name", "retention_days"),
    "workflow": ("id", "name"),
    "workflow_state": ("id", "workflow_id", "name", "is_initial"),
    "tag": ("id", "label", "color"),
    "document": ("id", "uuid", "title", "document_type_id", "owner_id", "current_version_id",
                 "status", "page_count", "size_bytes", "price", "is_archived", "created",
                 "modified", "due_date", "metadata", "keywords", "thumbnail", "body"),
    "document_version": ("id", "document_id", "version_number", "checksum", "comment",
                         "created", "content"),
    "document_tags": ("id", "document_id", "tag_id"),
    "document_state": ("id", "document_id", "state_id", "actor_id", "entered_at", "comment"),
    "access_control_entry": ("id", "content_type_id", "object_id", "permission_id",
                             "group_id"),
    "django_admin_log": ("id", "action_time", "user_id", "content_type_id", "object_id",
                         "object_repr", "action_flag", "change_message"),
}


def _content_type_id(app_label: str, model: str) -> int:
    return CONTENT_TYPES.index((app_label, model)) + 1


def _permission_id(app_label: str, model: str, action: str) -> int:
    return ((_content_type_id(app_label, model) - 1) * len(PERMISSION_ACTIONS)
            + PERMISSION_ACTIONS.index(action) + 1)


class _SampleData:
    """Row generators of the bulk load, one method per table; ids are dense from 1."""

    def __init__(self, scale: int, rng: random.Random) -> None:
        self.scale = scale
        self.rng = rng
        self.users = max(20, scale // 10)
        self.groups = len(GROUPS)
        self.tags = max(10, min(500, scale // 20))
        self.states_by_workflow: dict[int, list[int]] = {}
        self.versions: dict[int, int] = {}  # document id -> number of versions
        self.first_version_id: dict[int, int] = {}

    def django_content_type(self) -> Iterator[tuple[Any, ...]]:
        for i, (app_label, model) in enumerate(CONTENT_TYPES, 1):
            yield i, app_label, model

    def auth_permission(self) -> Iterator[tuple[Any, ...]]:
        for ct, (_, model) in enumerate(CONTENT_TYPES, 1):
            for action in PERMISSION_ACTIONS:
                pid = (ct - 1) * len(PERMISSION_ACTIONS) + PERMISSION_ACTIONS.index(action) + 1
                yield pid, f"Can {action} {model}", ct, f"{action}_{model}"

    def auth_group(self) -> Iterator[tuple[Any, ...]]:
        yield from enumerate(GROUPS, 1)

    def auth_user(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.users + 1):
            yield _user_row(self.rng, i, manager_id=self._manager_of(i))

    def _manager_of(self, user_id: int) -> int | None:
        # A tree: the first users manage nobody above them; others report to a lower id.
        return None if user_id <= 3 else self.rng.randint(1, min(user_id - 1, 50))

    def auth_user_groups(self) -> Iterator[tuple[Any, ...]]:
        row_id = 0
        for user in range(1, self.users + 1):
            for group in sorted(self.rng.sample(range(1, self.groups + 1), 2)):
                row_id += 1
                yield row_id, user, group

    def auth_group_permissions(self) -> Iterator[tuple[Any, ...]]:
        row_id = 0
        total = len(CONTENT_TYPES) * len(PERMISSION_ACTIONS)
        for group in range(1, self.groups + 1):
            # Administrators get everything, the others a deterministic share.
            perms = range(1, total + 1) if group == 1 else sorted(
                self.rng.sample(range(1, total + 1), total // 3))
            for perm in perms:
                row_id += 1
                yield row_id, group, perm

    def document_type(self) -> Iterator[tuple[Any, ...]]:
        for i, (name, days) in enumerate(DOCUMENT_TYPES, 1):
            yield i, name, days

    def workflow(self) -> Iterator[tuple[Any, ...]]:
        yield from enumerate(WORKFLOWS, 1)

    def workflow_state(self) -> Iterator[tuple[Any, ...]]:
        state_id = 0
        for wf, states in enumerate(WORKFLOWS.values(), 1):
            for j, name in enumerate(states):
                state_id += 1
                self.states_by_workflow.setdefault(wf, []).append(state_id)
                yield state_id, wf, name, j == 0

    def tag(self) -> Iterator[tuple[Any, ...]]:
        for i in range(1, self.tags + 1):
            yield i, _tag_label(i), COLORS[i % len(COLORS)]

    def document(self) -> Iterator[tuple[Any, ...]]:
        version_id = 0
        for doc in range(1, self.scale + 1):
            versions = self.rng.randint(1, 3)
            self.versions[doc] = versions
            self.first_version_id[doc] = version_id + 1
            version_id += versions
            # current_version_id is the last version, loaded after: the deferred FK.
            yield _document_row(self.rng, doc, self.rng.randint(1, self.users),
                                current_version_id=version_id)

    def document_version(self) -> Iterator[tuple[Any, ...]]:
        for doc in range(1, self.scale + 1):
            first = self.first_version_id[doc]
            for n in range(1, self.versions[doc] + 1):
                yield _version_row(self.rng, first + n - 1, doc, n)

    def document_tags(self) -> Iterator[tuple[Any, ...]]:
        row_id = 0
        for doc in range(1, self.scale + 1):
            for tag in sorted(self.rng.sample(range(1, self.tags + 1), self.rng.randint(0, 3))):
                row_id += 1
                yield row_id, doc, tag

    def document_state(self) -> Iterator[tuple[Any, ...]]:
        row_id = 0
        for doc in range(1, self.scale + 1):
            states = self.states_by_workflow[1 + doc % len(WORKFLOWS)]
            for step in range(self.rng.randint(1, 3)):
                row_id += 1
                actor = None if step == 0 else self.rng.randint(1, self.users)
                yield (row_id, doc, states[step], actor,
                       EPOCH + timedelta(minutes=doc, seconds=step * 37, microseconds=step),
                       None if step == 0 else f"moved to step {step}")

    def access_control_entry(self) -> Iterator[tuple[Any, ...]]:
        row_id = 0
        ct = _content_type_id("edms", "document")
        for doc in range(1, self.scale + 1):
            if doc % 2:
                continue
            for action in ("view", "change"):
                row_id += 1
                yield (row_id, ct, doc, _permission_id("edms", "document", action),
                       1 + (doc // 2) % self.groups)
        # Entries on other kinds of rows: the same columns point at document types.
        ct = _content_type_id("edms", "documenttype")
        for type_id in range(1, len(DOCUMENT_TYPES) + 1):
            row_id += 1
            yield (row_id, ct, type_id, _permission_id("edms", "documenttype", "view"),
                   1 + type_id % self.groups)

    def django_admin_log(self) -> Iterator[tuple[Any, ...]]:
        ct = _content_type_id("edms", "document")
        for i in range(1, max(10, self.scale // 2) + 1):
            doc = self.rng.randint(1, self.scale)
            yield (i, EPOCH + timedelta(seconds=i * 61), self.rng.randint(1, self.users), ct,
                   str(doc), f"Document {doc}", 2, '[{"changed": {"fields": ["Title"]}}]')


def _tag_label(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]}-{i}"


def _user_row(rng: random.Random, user_id: int, manager_id: int | None) -> tuple[Any, ...]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    username = f"{first.lower()}.{last.lower()}.{user_id}"
    joined = EPOCH - timedelta(days=rng.randint(0, 2000), microseconds=rng.randint(0, 10**6))
    last_login = None if user_id % 5 == 0 else joined + timedelta(days=rng.randint(0, 300))
    password = f"pbkdf2_sha256$600000${rng.getrandbits(64):016x}${rng.getrandbits(128):032x}"
    return (user_id, password, username, f"{username}@example.org", first, last,
            user_id % 17 != 0, user_id % 7 == 0, user_id == 1, joined, last_login, manager_id)


def _body(rng: random.Random, title: str, incompressible: bool) -> str:
    if incompressible:
        return title + "\n" + base64.b64encode(rng.randbytes(INCOMPRESSIBLE_BYTES)).decode()
    return title + "\n" + PARAGRAPH * rng.randint(8, 16)


def _document_row(rng: random.Random, doc_id: int, owner_id: int,
                  current_version_id: int | None) -> tuple[Any, ...]:
    title = " ".join(rng.choices(WORDS, k=3)).capitalize() + f" {doc_id}"
    created = EPOCH + timedelta(minutes=doc_id, microseconds=rng.randint(0, 999_999))
    price = None if doc_id % 4 == 0 else Decimal(rng.randint(-50_000, 5_000_000)) / 100
    metadata = None if doc_id % 6 == 0 else json.dumps(
        {"source": rng.choice(("scan", "upload", "email")), "pages": rng.randint(1, 40),
         "reviewers": [rng.randint(1, 100) for _ in range(rng.randint(0, 2))]})
    keywords = None if doc_id % 5 == 0 else (
        [] if doc_id % 5 == 1 else rng.sample(WORDS, rng.randint(1, 4)))
    thumbnail = None if doc_id % 3 == 0 else rng.randbytes(rng.randint(16, 96))
    return (doc_id, uuid.UUID(int=rng.getrandbits(128) ^ doc_id, version=4), title,
            rng.randint(1, len(DOCUMENT_TYPES)), owner_id, current_version_id,
            rng.choice(STATUSES[:4]), rng.randint(0, 400), rng.randint(1_000, 50_000_000),
            price, False, created, created.replace(tzinfo=None) + timedelta(hours=1),
            None if doc_id % 2 else date(2025, 1, 1) + timedelta(days=doc_id % 700),
            metadata, keywords, thumbnail,
            _body(rng, title, doc_id % INCOMPRESSIBLE_EVERY == 0))


def _version_row(rng: random.Random, version_id: int, doc_id: int,
                 number: int) -> tuple[Any, ...]:
    content = _body(rng, f"Version {number} of document {doc_id}",
                    (doc_id + number) % (2 * INCOMPRESSIBLE_EVERY) == 0)
    return (version_id, doc_id, number, f"{rng.getrandbits(256):064x}",
            "" if number == 1 else f"revision {number}",
            EPOCH + timedelta(minutes=doc_id, seconds=number), content)


# --- workload ----------------------------------------------------------------------------

@dataclass
class WorkloadStats:
    transactions: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.transactions / self.elapsed_s if self.elapsed_s else 0.0


Transaction = Callable[["_Workload"], None]
_ANY_ROW = sql.SQL("true")


class _Workload:
    """One connection and one random stream; each kind of transaction is a function below."""

    def __init__(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        # The clock is part of the random stream: the same seed on the same database
        # writes the same timestamps.
        self.now = self.one("SELECT greatest(%s, (SELECT max(created) FROM document), "
                            "(SELECT max(action_time) FROM django_admin_log))", (EPOCH,))

    def execute(self, query: str | sql.Composable,
                params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> Any:
        rows = self.execute(query, params)
        return rows[0][0] if rows else None

    def pick(self, table: str, where: sql.Composable = _ANY_ROW) -> int | None:
        """A random existing id of ``table`` (deterministic for a given database state)."""
        low, high = self.execute(sql.SQL("SELECT min(id), max(id) FROM {} WHERE {}")
                                 .format(sql.Identifier(table), where))[0]
        if low is None:
            return None
        start = self.rng.randint(low, high)
        return self.one(sql.SQL("SELECT id FROM {} WHERE id >= %s AND {} ORDER BY id LIMIT 1")
                        .format(sql.Identifier(table), where), (start,))

    def tick(self) -> datetime:
        self.now += timedelta(seconds=self.rng.randint(0, 20),
                              microseconds=self.rng.randint(1, 999_999))
        return self.now

    def next_id(self, table: str) -> int:
        return self.one("SELECT nextval(pg_get_serial_sequence(%s, 'id'))",
                        (sql.Identifier(table).as_string(self.conn),))

    def admin_log(self, user_id: int, model: str, object_id: Any, repr_: str,
                  flag: int, message: str) -> None:
        self.execute(
            "INSERT INTO django_admin_log (action_time, user_id, content_type_id, object_id, "
            "object_repr, action_flag, change_message) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (self.tick(), user_id, _content_type_id("edms", model), str(object_id),
             repr_[:200], flag, message))


def _create_document(w: _Workload) -> None:
    """A document with its first version, tags and initial state: the FK cycle, deferred."""
    owner = w.pick("auth_user")
    doc_id = w.next_id("document")
    version_id = w.next_id("document_version")
    row = list(_document_row(w.rng, doc_id, owner, current_version_id=version_id))
    row[11] = w.tick()
    row[12] = row[11].replace(tzinfo=None)
    w.execute(sql.SQL("INSERT INTO document ({}) VALUES ({})").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS["document"]),
        sql.SQL(", ").join(sql.Placeholder() * len(row))), row)
    version = list(_version_row(w.rng, version_id, doc_id, 1))
    version[5] = w.tick()
    w.execute("INSERT INTO document_version (id, document_id, version_number, checksum, "
              "comment, created, content) VALUES (%s, %s, %s, %s, %s, %s, %s)", version)
    for tag in sorted(w.rng.sample(range(1, 11), w.rng.randint(0, 3))):
        w.execute("INSERT INTO document_tags (document_id, tag_id) SELECT %s, id FROM tag "
                  "ORDER BY id OFFSET %s LIMIT 1", (doc_id, tag - 1))
    state = w.one("SELECT id FROM workflow_state WHERE is_initial ORDER BY id OFFSET %s LIMIT 1",
                  (doc_id % len(WORKFLOWS),))
    w.execute("INSERT INTO document_state (document_id, state_id, actor_id, entered_at) "
              "VALUES (%s, %s, %s, %s)", (doc_id, state, owner, w.tick()))
    w.admin_log(owner, "document", doc_id, row[2], 1, '[{"added": {}}]')


def _add_version(w: _Workload) -> None:
    doc = w.pick("document", sql.SQL("NOT is_archived"))
    if doc is None:
        return
    number = w.one("SELECT coalesce(max(version_number), 0) + 1 FROM document_version "
                   "WHERE document_id = %s", (doc,))
    version = list(_version_row(w.rng, 0, doc, number))
    version_id = w.one("INSERT INTO document_version (document_id, version_number, checksum, "
                       "comment, created, content) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                       version[1:5] + [w.tick(), version[6]])
    w.execute("UPDATE document SET current_version_id = %s, modified = %s, size_bytes = %s "
              "WHERE id = %s", (version_id, w.tick().replace(tzinfo=None),
                                len(version[6]), doc))


def _rename_document(w: _Workload) -> None:
    """Touches the title only: the large body travels as unchanged TOAST."""
    doc = w.pick("document")
    if doc is None:
        return
    title = " ".join(w.rng.choices(WORDS, k=4)).capitalize() + f" {doc}"
    w.execute("UPDATE document SET title = %s, modified = %s WHERE id = %s",
              (title, w.tick().replace(tzinfo=None), doc))
    w.admin_log(w.pick("auth_user"), "document", doc, title, 2,
                '[{"changed": {"fields": ["Title"]}}]')


def _transition_state(w: _Workload) -> None:
    doc = w.pick("document", sql.SQL("NOT is_archived"))
    if doc is None:
        return
    state = w.pick("workflow_state")
    status = w.rng.choice(STATUSES[:4])
    w.execute("INSERT INTO document_state (document_id, state_id, actor_id, entered_at, "
              "comment) VALUES (%s, %s, %s, %s, %s)",
              (doc, state, w.pick("auth_user"), w.tick(), f"set to {status}"))
    w.execute("UPDATE document SET status = %s WHERE id = %s", (status, doc))


def _change_tags(w: _Workload) -> None:
    """Many-to-many: drop one tag of a document, add another."""
    doc = w.pick("document")
    if doc is None:
        return
    w.execute("DELETE FROM document_tags WHERE id = (SELECT min(id) FROM document_tags "
              "WHERE document_id = %s)", (doc,))
    w.execute("INSERT INTO document_tags (document_id, tag_id) VALUES (%s, %s) "
              "ON CONFLICT (document_id, tag_id) DO NOTHING", (doc, w.pick("tag")))


def _add_user(w: _Workload) -> None:
    """A new user, reporting to someone, in a group."""
    user_id = w.next_id("auth_user")
    row = list(_user_row(w.rng, user_id, w.pick("auth_user")))
    row[9] = w.tick()
    w.execute("INSERT INTO auth_user (id, password, username, email, first_name, last_name, "
              "is_active, is_staff, is_superuser, date_joined, last_login, manager_id) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", row)
    w.execute("INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)",
              (user_id, w.pick("auth_group")))


def _log_in(w: _Workload) -> None:
    w.execute("UPDATE auth_user SET last_login = %s WHERE id = %s",
              (w.tick(), w.pick("auth_user")))


def _change_manager(w: _Workload) -> None:
    w.execute("UPDATE auth_user SET manager_id = %s WHERE id = %s AND id <> 1",
              (w.pick("auth_user"), w.pick("auth_user")))


def _remove_user(w: _Workload) -> None:
    """A leaver without documents or history; the reports lose their manager (SET NULL)."""
    leaver = w.pick("auth_user", sql.SQL(
        "id > 1 AND NOT EXISTS (SELECT 1 FROM document d WHERE d.owner_id = auth_user.id) "
        "AND NOT EXISTS (SELECT 1 FROM document_state s WHERE s.actor_id = auth_user.id) "
        "AND NOT EXISTS (SELECT 1 FROM django_admin_log l WHERE l.user_id = auth_user.id)"))
    if leaver is not None:
        w.execute("DELETE FROM auth_user_groups WHERE user_id = %s", (leaver,))
        w.execute("DELETE FROM auth_user WHERE id = %s", (leaver,))


def _change_permissions(w: _Workload) -> None:
    """Grant or revoke a group permission, and an access entry on a document."""
    group = w.pick("auth_group")
    permission = w.pick("auth_permission")
    if w.rng.random() < 0.5:
        w.execute("INSERT INTO auth_group_permissions (group_id, permission_id) "
                  "VALUES (%s, %s) ON CONFLICT DO NOTHING", (group, permission))
    else:
        w.execute("DELETE FROM auth_group_permissions WHERE group_id = %s AND permission_id = "
                  "(SELECT min(permission_id) FROM auth_group_permissions WHERE group_id = %s)",
                  (group, group))
    doc = w.pick("document")
    if doc is not None:
        w.execute("INSERT INTO access_control_entry (content_type_id, object_id, "
                  "permission_id, group_id) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                  (_content_type_id("edms", "document"), doc,
                   _permission_id("edms", "document", w.rng.choice(PERMISSION_ACTIONS)),
                   group))


# The slow-moving tables. Names carry the new row's id: unique however often it runs.

def _add_tag(w: _Workload) -> None:
    tag = w.next_id("tag")
    w.execute("INSERT INTO tag (id, label, color) VALUES (%s, %s, %s)",
              (tag, f"tag-{tag}", w.rng.choice(COLORS)))


def _add_group(w: _Workload) -> None:
    group = w.next_id("auth_group")
    w.execute("INSERT INTO auth_group (id, name) VALUES (%s, %s)", (group, f"Team {group}"))


def _add_document_type(w: _Workload) -> None:
    type_id = w.next_id("document_type")
    w.execute("INSERT INTO document_type (id, name, retention_days) VALUES (%s, %s, %s)",
              (type_id, f"Type {type_id}", w.rng.randint(30, 3650)))


def _add_workflow(w: _Workload) -> None:
    workflow = w.next_id("workflow")
    w.execute("INSERT INTO workflow (id, name) VALUES (%s, %s)",
              (workflow, f"Workflow {workflow}"))
    w.execute("INSERT INTO workflow_state (workflow_id, name, is_initial) "
              "VALUES (%s, 'new', true), (%s, 'done', false)", (workflow, workflow))


def _install_app(w: _Workload) -> None:
    """A Django migration adding a model: its content type and four permissions."""
    ct = w.next_id("django_content_type")
    model = f"model{ct}"
    w.execute("INSERT INTO django_content_type (id, app_label, model) "
              "VALUES (%s, 'plugins', %s)", (ct, model))
    for action in PERMISSION_ACTIONS:
        w.execute("INSERT INTO auth_permission (name, content_type_id, codename) "
                  "VALUES (%s, %s, %s)", (f"Can {action} {model}", ct, f"{action}_{model}"))


def _archive_document(w: _Workload) -> None:
    doc = w.pick("document", sql.SQL("NOT is_archived"))
    if doc is None:
        return
    w.execute("UPDATE document SET is_archived = true, status = 'archived', modified = %s "
              "WHERE id = %s", (w.tick().replace(tzinfo=None), doc))
    w.admin_log(w.pick("auth_user"), "document", doc, f"Document {doc}", 2,
                '[{"changed": {"fields": ["Archived"]}}]')


def _delete_document(w: _Workload) -> None:
    """Django-style: the application deletes the dependants, then the document."""
    doc = w.pick("document")
    if doc is None:
        return
    w.execute("DELETE FROM access_control_entry WHERE content_type_id = %s AND object_id = %s",
              (_content_type_id("edms", "document"), doc))
    w.execute("DELETE FROM document_tags WHERE document_id = %s", (doc,))
    w.execute("DELETE FROM document_state WHERE document_id = %s", (doc,))
    w.execute("UPDATE document SET current_version_id = NULL WHERE id = %s", (doc,))
    w.execute("DELETE FROM document_version WHERE document_id = %s", (doc,))
    w.execute("DELETE FROM document WHERE id = %s", (doc,))
    w.admin_log(w.pick("auth_user"), "document", doc, f"Document {doc}", 3, "")


def _bulk_update(w: _Workload) -> None:
    """One statement, many rows: a reorganisation or a policy change."""
    choice = w.rng.randrange(3)
    if choice == 0:
        owner = w.pick("auth_user", sql.SQL(
            "EXISTS (SELECT 1 FROM document d WHERE d.owner_id = auth_user.id)"))
        w.execute("UPDATE document SET owner_id = %s, modified = %s WHERE owner_id = %s",
                  (w.pick("auth_user"), w.tick().replace(tzinfo=None), owner))
    elif choice == 1:
        w.execute("UPDATE document_type SET retention_days = retention_days + 1")
    else:
        w.execute("UPDATE auth_user SET is_staff = NOT is_staff WHERE id %% 11 = %s",
                  (w.rng.randrange(11),))


# Kind -> (function, weight). The first transactions take each kind once, so even a short
# workload changes every table.
TRANSACTIONS: dict[str, tuple[Transaction, int]] = {
    "create_document": (_create_document, 20),
    "new_version": (_add_version, 15),
    "rename_document": (_rename_document, 15),
    "transition_state": (_transition_state, 15),
    "change_tags": (_change_tags, 10),
    "add_user": (_add_user, 3),
    "log_in": (_log_in, 3),
    "change_manager": (_change_manager, 1),
    "remove_user": (_remove_user, 1),
    "change_permissions": (_change_permissions, 5),
    "archive_document": (_archive_document, 4),
    "delete_document": (_delete_document, 4),
    "bulk_update": (_bulk_update, 2),
    "add_tag": (_add_tag, 1),
    "add_group": (_add_group, 1),
    "add_document_type": (_add_document_type, 1),
    "add_workflow": (_add_workflow, 1),
    "install_app": (_install_app, 1),
}


def workload(conn_or_url: psycopg.Connection[Any] | str, transactions: int, seed: int = 0,
             rate: float | None = None) -> WorkloadStats:
    """Run ``transactions`` committed transactions of mixed kinds; ``rate`` caps them per
    second. The same seed on the same database state makes the same changes."""
    rng = random.Random(seed)
    kinds = list(TRANSACTIONS)
    weights = [TRANSACTIONS[k][1] for k in kinds]
    stats = WorkloadStats()
    start = time.monotonic()
    with _connection(conn_or_url) as conn:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise ValueError("the workload commits its own transactions: pass an idle "
                             "connection")
        with conn.transaction():
            w = _Workload(conn, rng)
        for i in range(transactions):
            kind = kinds[i] if i < len(kinds) else rng.choices(kinds, weights)[0]
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            with conn.transaction():
                TRANSACTIONS[kind][0](w)
            stats.transactions += 1
            stats.by_kind[kind] += 1
    stats.elapsed_s = time.monotonic() - start
    return stats


@contextmanager
def _connection(conn_or_url: psycopg.Connection[Any] | str) -> Iterator[psycopg.Connection[Any]]:
    if isinstance(conn_or_url, str):
        with psycopg.connect(conn_or_url, autocommit=True) as conn:
            yield conn
    else:
        yield conn_or_url


# --- state -------------------------------------------------------------------------------

def snapshot_state(url_or_conn: psycopg.Connection[Any] | str,
                   schemas: Sequence[str] = ("public",)) -> dict[str, dict[tuple[Any, ...],
                                                                      dict[str, Any]]]:
    """Every row of every table, keyed by table then primary key, in the journal's values."""
    with _connection(url_or_conn) as conn:
        state: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for name, table in table_schemas(read_catalog(conn, schemas)).items():
            state[name] = {table.key_of(row): row for row in read_rows(conn, table)}
        return state
