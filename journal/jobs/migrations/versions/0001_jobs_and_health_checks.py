"""Backup configurations, backup and restore jobs, health check results.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_utc = sa.DateTime(timezone=True)


def _job_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("configuration_id", sa.Integer(),
                  sa.ForeignKey("backup_configuration.id"), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _utc, nullable=False),
        sa.Column("heartbeat_at", _utc, nullable=False),
        sa.Column("finished_at", _utc, nullable=True),
        sa.Column("progress", sa.String(500), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "backup_configuration",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("snapshot_schedule", sa.String(100), nullable=True),
        sa.Column("export_schedule", sa.String(100), nullable=True),
        sa.Column("retention_schedule", sa.String(100), nullable=True),
        sa.Column("health_schedule", sa.String(100), nullable=True),
        sa.Column("drill_schedule", sa.String(100), nullable=True),
        sa.Column("retention_policy", sa.String(200), nullable=False),
        sa.Column("drill_target", sa.String(1000), nullable=True),
        sa.Column("export_dir", sa.String(1000), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc, nullable=False),
    )
    op.create_table(
        "backup_job", *_job_columns(),
        sa.Column("from_position", sa.String(40), nullable=True),
        sa.Column("to_position", sa.String(40), nullable=True),
        sa.Column("packages", sa.JSON(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_backup_job_status", "backup_job", ["status"])
    op.create_table(
        "restore_job", *_job_columns(),
        sa.Column("target", sa.String(1000), nullable=False),
        sa.Column("restore_target", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("reached_position", sa.String(40), nullable=True),
        sa.Column("tables", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=True),
        sa.Column("verify_detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_restore_job_status", "restore_job", ["status"])
    op.create_table(
        "health_check",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("backup_job.id"), nullable=True),
        sa.Column("checked_at", _utc, nullable=False),
        sa.Column("check", sa.String(100), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_health_check_job_id", "health_check", ["job_id"])
