"""Opening the job database, and keeping its schema at the revision this code needs.

The embedded default is a SQLite file in the state directory, so a laptop and the demo need
nothing; a deployment names a PostgreSQL database in ``[jobs] url``. ``journal db upgrade``
runs the Alembic migrations shipped in this package. A SQLite file is upgraded on the spot
by any command that needs it; a PostgreSQL job database is shared and is upgraded on
purpose, so a command finding it behind refuses with the exact command to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from journal.config import Config, redact
from journal.errors import ConfigError, JournalError

MIGRATIONS = Path(__file__).with_name("migrations")
FILE = "jobs.sqlite"
# the newest revision under migrations/versions (a test keeps the two equal): every command
# compares with it, and importing Alembic to find it would cost each command a tenth of a second
HEAD = "0003"


class JobDatabaseError(JournalError):
    """The job database could not be reached or written."""


def default_url(state_dir: str | Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / FILE}"


def url_of(config: Config) -> str:
    return config.jobs_url or default_url(config.state_dir)


def _alembic_config() -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision, as Alembic finds it in migrations/versions."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # take the write lock up front: two processes upgrading a read lock at once
            # is a deadlock SQLite answers with "database is locked", whatever the timeout
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith(("postgresql", "postgres")):
        if url.startswith("postgres://") or url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(f"[jobs] url {redact(url)}: expected sqlite:///FILE or postgresql://…")


class JobDatabase:
    """An engine and a session factory; each unit of work opens a session of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def label(self) -> str:
        return redact(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise JobDatabaseError(f"job database {self.label}: {exc}") from exc

    def revision(self) -> str | None:
        """The revision the database is at (Alembic's own table), None when empty."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("alembic_version"):
                    return None
                return conn.execute(text("SELECT version_num FROM alembic_version")
                                    ).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise JobDatabaseError(f"job database {self.label}: {exc}") from exc

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command as alembic_command

        cfg = _alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                alembic_command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise JobDatabaseError(f"job database {self.label}: {exc}") from exc

    def is_embedded(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def ensure_current(self) -> None:
        """Upgrade an embedded SQLite file; refuse a shared database that is behind."""
        current, head = self.revision(), HEAD
        if current == head:
            return
        if self.is_embedded():
            self.upgrade()
            return
        raise ConfigError(
            f"the job database {self.label} is at revision {current or 'none (empty)'} and "
            f"this version of journal needs {head}: run `journal db upgrade`")

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(config: Config) -> JobDatabase:
    """The configured job database, at the revision this code needs."""
    db = JobDatabase(url_of(config))
    db.ensure_current()
    return db
