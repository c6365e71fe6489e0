"""The sample's live workload: random EDMS transactions, reproducible from a seed."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from journal.sample.load import (
    COLUMNS,
    content_type_id,
    document_row,
    permission_id,
    user_row,
    version_row,
)
from journal.sample.schema import (
    COLORS,
    EPOCH,
    PERMISSION_ACTIONS,
    STATUSES,
    WORDS,
    WORKFLOWS,
    connection,
)

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
            (self.tick(), user_id, content_type_id("edms", model), str(object_id),
             repr_[:200], flag, message))


def _create_document(w: _Workload) -> None:
    """A document with its first version, tags and initial state: the FK cycle, deferred."""
    owner = w.pick("auth_user")
    doc_id = w.next_id("document")
    version_id = w.next_id("document_version")
    row = list(document_row(w.rng, doc_id, owner, current_version_id=version_id))
    row[11] = w.tick()
    row[12] = row[11].replace(tzinfo=None)
    w.execute(sql.SQL("INSERT INTO document ({}) VALUES ({})").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS["document"]),
        sql.SQL(", ").join(sql.Placeholder() * len(row))), row)
    version = list(version_row(w.rng, version_id, doc_id, 1))
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
    version = list(version_row(w.rng, 0, doc, number))
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
    row = list(user_row(w.rng, user_id, w.pick("auth_user")))
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
                  (content_type_id("edms", "document"), doc,
                   permission_id("edms", "document", w.rng.choice(PERMISSION_ACTIONS)),
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
              (content_type_id("edms", "document"), doc))
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
    with connection(conn_or_url) as conn:
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
