"""The sample's bulk load: dense ids from 1, rows generated per table, COPY in."""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from journal.sample.schema import (
    COLORS,
    CONTENT_TYPES,
    DOCUMENT_TYPES,
    EPOCH,
    FIRST_NAMES,
    GROUPS,
    INCOMPRESSIBLE_BYTES,
    INCOMPRESSIBLE_EVERY,
    LAST_NAMES,
    PARAGRAPH,
    PERMISSION_ACTIONS,
    STATUSES,
    TABLES,
    WORDS,
    WORKFLOWS,
)

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
    columns = COLUMNS[table]
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


COLUMNS: dict[str, tuple[str, ...]] = {
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


def content_type_id(app_label: str, model: str) -> int:
    return CONTENT_TYPES.index((app_label, model)) + 1


def permission_id(app_label: str, model: str, action: str) -> int:
    return ((content_type_id(app_label, model) - 1) * len(PERMISSION_ACTIONS)
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
            yield user_row(self.rng, i, manager_id=self._manager_of(i))

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
            yield document_row(self.rng, doc, self.rng.randint(1, self.users),
                                current_version_id=version_id)

    def document_version(self) -> Iterator[tuple[Any, ...]]:
        for doc in range(1, self.scale + 1):
            first = self.first_version_id[doc]
            for n in range(1, self.versions[doc] + 1):
                yield version_row(self.rng, first + n - 1, doc, n)

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
        ct = content_type_id("edms", "document")
        for doc in range(1, self.scale + 1):
            if doc % 2:
                continue
            for action in ("view", "change"):
                row_id += 1
                yield (row_id, ct, doc, permission_id("edms", "document", action),
                       1 + (doc // 2) % self.groups)
        # Entries on other kinds of rows: the same columns point at document types.
        ct = content_type_id("edms", "documenttype")
        for type_id in range(1, len(DOCUMENT_TYPES) + 1):
            row_id += 1
            yield (row_id, ct, type_id, permission_id("edms", "documenttype", "view"),
                   1 + type_id % self.groups)

    def django_admin_log(self) -> Iterator[tuple[Any, ...]]:
        ct = content_type_id("edms", "document")
        for i in range(1, max(10, self.scale // 2) + 1):
            doc = self.rng.randint(1, self.scale)
            yield (i, EPOCH + timedelta(seconds=i * 61), self.rng.randint(1, self.users), ct,
                   str(doc), f"Document {doc}", 2, '[{"changed": {"fields": ["Title"]}}]')


def _tag_label(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]}-{i}"


def user_row(rng: random.Random, user_id: int, manager_id: int | None) -> tuple[Any, ...]:
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


def document_row(rng: random.Random, doc_id: int, owner_id: int,
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


def version_row(rng: random.Random, version_id: int, doc_id: int,
                 number: int) -> tuple[Any, ...]:
    content = _body(rng, f"Version {number} of document {doc_id}",
                    (doc_id + number) % (2 * INCOMPRESSIBLE_EVERY) == 0)
    return (version_id, doc_id, number, f"{rng.getrandbits(256):064x}",
            "" if number == 1 else f"revision {number}",
            EPOCH + timedelta(minutes=doc_id, seconds=number), content)
