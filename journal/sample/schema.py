"""The sample database's schema (a Django-style EDMS), its fixed vocabulary, and how
to reach it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg

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


@contextmanager
def connection(conn_or_url: psycopg.Connection[Any] | str) -> Iterator[psycopg.Connection[Any]]:
    """The connection given, or a new one (autocommit) to the URL given."""
    if isinstance(conn_or_url, str):
        with psycopg.connect(conn_or_url, autocommit=True) as conn:
            yield conn
    else:
        yield conn_or_url
