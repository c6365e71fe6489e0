"""The hash-chained audit trail, and the scheduler's claims on fire times.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", _utc, nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("command", sa.String(100), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(50), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "scheduled_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("configuration_id", sa.Integer(),
                  sa.ForeignKey("backup_configuration.id"), nullable=False),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("scheduled_for", _utc, nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(300), nullable=False),
        sa.Column("claimed_at", _utc, nullable=False),
        sa.Column("finished_at", _utc, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.UniqueConstraint("configuration_id", "task", "scheduled_for",
                            name="uq_scheduled_run_slot"),
    )
    for table in ("backup_job", "restore_job"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("scheduled_run_id", sa.Integer(), nullable=True))
            batch.create_foreign_key(f"fk_{table}_scheduled_run", "scheduled_run",
                                     ["scheduled_run_id"], ["id"])
