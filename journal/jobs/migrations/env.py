"""Alembic's environment for the job database: run on the connection the caller opened
(journal.jobs.database.JobDatabase.upgrade).

A new revision is a small file under versions/, named for what it changes, written from
models.py; tests/test_job_database.py fails until the migrated schema equals the models'.
"""

from __future__ import annotations

from alembic import context

from journal.jobs.models import Base

connection = context.config.attributes["connection"]
# batch mode: SQLite alters a table by copying it, PostgreSQL with ALTER TABLE
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
