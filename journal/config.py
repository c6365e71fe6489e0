"""Configuration: ``journal.toml``, overridden by ``JOURNAL_*`` variables, then by flags.

Secrets never live in the file: a source password comes from ``JOURNAL_SOURCE_PASSWORD``,
``JOURNAL_SOURCE_PASSWORD_FILE`` or libpq's own ``PGPASSFILE``/``~/.pgpass``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from journal.errors import ConfigError

DEFAULT_FILE = "journal.toml"


@dataclass(frozen=True)
class Config:
    source_url: str = ""
    slot: str = "edms_journal"
    publication: str = "edms_journal"
    tables: tuple[str, ...] = ()  # empty: every table of the publication's schemas
    schemas: tuple[str, ...] = ("public",)
    journal_url: str = "file://./journal-data/journal"
    topic_prefix: str = "edms_journal"
    # how long the file journal keeps what is already packaged (Kafka: the topic's own
    # retention.ms); the default is Kafka's, seven days
    journal_retention_s: float = 7 * 24 * 3600.0
    packages_url: str = "file://./journal-data/packages"
    segment_max_events: int = 100_000
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_s: float = 300.0
    snapshot_every_segments: int = 24
    retention: str = "REDUNDANCY 2"
    heartbeat_interval_s: float = 10.0
    natural_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # per table: a list of {content_type, object_id, ...} pairs (one table alone is
    # accepted; an empty list turns detection off for the table)
    generic_foreign_keys: dict[str, Any] = field(default_factory=dict)
    state_dir: str = "./journal-data"
    # the job database (jobs, health results, audit trail); empty: <state_dir>/jobs.sqlite
    jobs_url: str = ""
    # [schedule]: the backup configuration `journal schedule` runs (cron expressions)
    schedule: dict[str, Any] = field(default_factory=dict)

    def journal_location(self) -> str:
        """The transport URL as every part uses it (Kafka: with the configured topic prefix)."""
        url = self.journal_url
        if url.startswith("kafka://") and "topic_prefix=" not in url:
            url += ("&" if "?" in url else "?") + f"topic_prefix={self.topic_prefix}"
        return url

    def database(self) -> str:
        """The source database's name: it names the journal's topic or directory."""
        name = urlsplit(self.source_url).path.lstrip("/")
        if not name:
            raise ConfigError(f"the source URL {redact(self.source_url)} names no database: "
                              "end it with /DBNAME")
        return name

    def source_password(self) -> str | None:
        if pw := os.environ.get("JOURNAL_SOURCE_PASSWORD"):
            return pw
        if path := os.environ.get("JOURNAL_SOURCE_PASSWORD_FILE"):
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read JOURNAL_SOURCE_PASSWORD_FILE: {exc}") from exc
        return None

    def source_conninfo(self) -> dict[str, Any]:
        """psycopg connection keywords, with the password kept out of the URL."""
        if not self.source_url:
            raise ConfigError("no source database: set [source] url in journal.toml "
                              "or JOURNAL_SOURCE_URL")
        check_postgres_url(self.source_url)
        kwargs: dict[str, Any] = {"conninfo": self.source_url}
        if pw := self.source_password():
            kwargs["password"] = pw
        return kwargs


_ENV = {
    "JOURNAL_SOURCE_URL": "source_url",
    "JOURNAL_SLOT": "slot",
    "JOURNAL_PUBLICATION": "publication",
    "JOURNAL_JOURNAL_URL": "journal_url",
    "JOURNAL_TOPIC_PREFIX": "topic_prefix",
    "JOURNAL_PACKAGES_URL": "packages_url",
    "JOURNAL_RETENTION": "retention",
    "JOURNAL_STATE_DIR": "state_dir",
    "JOURNAL_JOBS_URL": "jobs_url",
}

_TOML = {
    ("source", "url"): "source_url",
    ("source", "slot"): "slot",
    ("source", "publication"): "publication",
    ("source", "tables"): "tables",
    ("source", "schemas"): "schemas",
    ("source", "heartbeat_interval_s"): "heartbeat_interval_s",
    ("journal", "url"): "journal_url",
    ("journal", "topic_prefix"): "topic_prefix",
    ("journal", "retention_s"): "journal_retention_s",
    ("packages", "url"): "packages_url",
    ("packages", "segment_max_events"): "segment_max_events",
    ("packages", "segment_max_bytes"): "segment_max_bytes",
    ("packages", "segment_max_age_s"): "segment_max_age_s",
    ("packages", "snapshot_every_segments"): "snapshot_every_segments",
    ("packages", "retention"): "retention",
    ("state", "dir"): "state_dir",
    ("jobs", "url"): "jobs_url",
}


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read the TOML file (if any), then the environment, then explicit overrides."""
    values: dict[str, Any] = {}
    file = Path(path) if path else Path(os.environ.get("JOURNAL_CONFIG", DEFAULT_FILE))
    if file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"{file}: {exc}") from exc
        for (section, key), attr in _TOML.items():
            if key in data.get(section, {}):
                values[attr] = data[section][key]
        for table, cols in data.get("natural_keys", {}).items():
            values.setdefault("natural_keys", {})[table] = tuple(cols)
        for table, spec in data.get("generic_foreign_keys", {}).items():
            values.setdefault("generic_foreign_keys", {})[table] = (
                dict(spec) if isinstance(spec, dict) else [dict(s) for s in spec])
        if "schedule" in data:
            values["schedule"] = dict(data["schedule"])
        unknown = (set(data) - {s for s, _ in _TOML}
                   - {"natural_keys", "generic_foreign_keys", "schedule"})
        if unknown:
            raise ConfigError(f"{file}: unknown section(s) {sorted(unknown)}")
    elif path:
        raise ConfigError(f"configuration file {file} does not exist")
    for env, attr in _ENV.items():
        if env in os.environ:
            values[attr] = os.environ[env]
    values.update({k: v for k, v in overrides.items() if v is not None})
    for attr in ("tables", "schemas"):
        if isinstance(values.get(attr), str):
            values[attr] = tuple(t for t in values[attr].split(",") if t)
        elif attr in values:
            values[attr] = tuple(values[attr])
    return replace(Config(), **values)


def check_postgres_url(url: str) -> None:
    scheme = _parse(url).drivername if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {redact(url)} (expected postgresql://…)")


_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(url: str) -> str:
    """The URL (or libpq key=value string) with any password replaced, for messages and logs."""
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    try:
        parsed = _parse(url)
    except ConfigError:  # unparsable: hide the whole user part
        return _CONNINFO_PASSWORD.sub(r"\1***", re.sub(r"//[^/]*@", "//***@", url))
    if parsed.password is None:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    return _CONNINFO_PASSWORD.sub(r"\1***", parsed.render_as_string(hide_password=True))


def without_password(url: str) -> str:
    """The URL with no password at all, for what is stored (a job's target, a configuration):
    libpq's ~/.pgpass or the environment supplies it when the URL is used."""
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub("", url).strip()
    try:
        p = _parse(url)
    except ConfigError:
        return redact(url)
    return URL.create(p.drivername, p.username, None, p.host, p.port, p.database,
                      p.query).render_as_string(hide_password=False)


def _parse(url: str) -> URL:
    # SQLAlchemy's URL parser: percent-encoding, IPv6 hosts and query strings done right
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError("cannot parse the URL (check its form: scheme://user@host:port/db)"
                          ) from None


def file_url_path(url: str) -> Path | None:
    """The directory a ``file:///dir`` URL names (``file://./dir``: relative to the current
    directory), or None when the URL names no local directory."""
    parts = urlsplit(url)
    if parts.scheme != "file" or not parts.path:
        return None
    if parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    if parts.netloc == ".":
        return Path("." + unquote(parts.path))
    return None
