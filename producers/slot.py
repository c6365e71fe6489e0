"""The source side of capture: pre-flight checks, the publication, the replication slot,
and the slot's recorded identity.

Every check fails with one line that says what is wrong and how to fix it. The slot's
identity (system, database, slot, the consistent point it was created at, and the highest
LSN capture ever confirmed to it) is kept in a small JSON file in the state directory, so
that a slot that was dropped, recreated or consumed by someone else is *detected* at
start: capture then says so and takes a new snapshot generation instead of resuming over
a gap.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from journal.config import Config, redact
from journal.durable import write_atomically
from journal.errors import ConfigError, SourceError
from journal.positions import format_lsn, parse_lsn
from producers.source_catalog import capture_problems

log = logging.getLogger(__name__)

_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
STATE_VERSION = 1


# --- connecting ----------------------------------------------------------------------------

def connect(config: Config, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection to the source, with a one-line error naming the fix on failure."""
    conninfo = config.source_conninfo()
    try:
        return psycopg.connect(**conninfo, **kwargs)
    except psycopg.Error as exc:
        raise SourceError(connection_error(config.source_url, exc)) from None


def connection_error(url: str, exc: BaseException) -> str:
    """The one-line message for a failed connection (never with a password in it)."""
    text = " ".join(str(exc).split())
    where = redact(url)
    lowered = text.lower()
    if "could not translate host name" in lowered or "name or service not known" in lowered \
            or "nodename nor servname" in lowered:
        return (f"cannot resolve the source host of {where}: check the host name "
                "in [source] url")
    if "connection refused" in lowered:
        return (f"connection refused by {where}: is PostgreSQL running and listening "
                "on that host and port?")
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (f"authentication failed for {where}: set JOURNAL_SOURCE_PASSWORD "
                "(or JOURNAL_SOURCE_PASSWORD_FILE, ~/.pgpass)")
    if "replication" in lowered and ("permission denied" in lowered
                                     or "must be superuser" in lowered
                                     or "must have" in lowered):
        return (f"the role of {where} may not start replication: "
                "ALTER ROLE <name> REPLICATION (or use a superuser)")
    if "does not exist" in lowered and "database" in lowered:
        return f"{_last_line(text)} ({where}): check the database name in [source] url"
    if "pg_hba.conf" in lowered:
        return (f"{_last_line(text)}: allow the capture role in pg_hba.conf "
                f"(connections to {where})")
    return f"cannot connect to {where}: {_last_line(text)}"


def _last_line(text: str) -> str:
    return text.replace("connection failed: ", "").strip()


# --- checks --------------------------------------------------------------------------------

def check_wal_level(value: str) -> None:
    if value != "logical":
        raise SourceError(f"wal_level is {value!r}, capture needs logical: set wal_level = "
                          "logical in postgresql.conf and restart PostgreSQL")


def check_slot_name(name: str) -> None:
    if not _SLOT_NAME.match(name):
        raise ConfigError(f"slot name {name!r} is not valid: use 1-63 lower-case letters, "
                          "digits and underscores ([source] slot)")


def preflight(conn: psycopg.Connection[Any], config: Config) -> None:
    """Every check that needs only a normal connection; raises on the first failure."""
    check_slot_name(config.slot)
    (wal_level,) = conn.execute("SHOW wal_level").fetchone()  # type: ignore[misc]
    check_wal_level(wal_level)
    row = conn.execute("SELECT rolname, rolsuper, rolreplication FROM pg_roles "
                       "WHERE rolname = current_user").fetchone()
    assert row is not None
    role, superuser, replication = row
    if not (superuser or replication):
        raise SourceError(f"role {role} may not start replication: "
                          f"ALTER ROLE {role} REPLICATION (or use a superuser)")
    check_tables(conn, config)


def check_tables(conn: psycopg.Connection[Any], config: Config) -> list[str]:
    """The captured tables ("schema.table"): each must exist, be a table capture can see
    the rows of, and say which row each update or delete changed (``capture_problems``)."""
    if config.tables:
        wanted = list(config.tables)
        found = {f"{s}.{t}": partition for s, t, partition in conn.execute(
            "SELECT n.nspname, c.relname, c.relispartition FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)",
            (wanted,)).fetchall()}
        missing = [t for t in wanted if t not in found]
        if missing:
            raise SourceError(f"captured table(s) {', '.join(missing)} do not exist in the "
                              "source database: fix [source] tables in journal.toml")
        partitions = [t for t in wanted if found[t]]
        if partitions:
            # its changes are published as changes of the partitioned table
            raise SourceError(f"captured table(s) {', '.join(partitions)} are partitions: "
                              "name their partitioned table in [source] tables instead")
    else:
        missing_schemas = [s for s in config.schemas if conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (s,)).fetchone() is None]
        if missing_schemas:
            raise SourceError(f"schema(s) {', '.join(missing_schemas)} do not exist in the "
                              "source database: fix [source] schemas in journal.toml")
        # partitions are captured through their partitioned table, never on their own
        wanted = [f"{s}.{t}" for s, t in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s) "
            "AND left(c.relname, 8) <> 'journal_' ORDER BY 1, 2",
            (list(config.schemas),)).fetchall()]
    problems = capture_problems(conn, wanted)
    if problems:
        raise SourceError("cannot capture every table exactly:\n  " + "\n  ".join(problems))
    return wanted


def check_free_slot(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT current_setting('max_replication_slots')::int, "
                       "(SELECT count(*) FROM pg_replication_slots)").fetchone()
    assert row is not None
    limit, used = row
    if used >= limit:
        raise SourceError(f"all {limit} replication slots are in use: drop an unused one "
                          "(pg_drop_replication_slot) or raise max_replication_slots and "
                          "restart PostgreSQL")


# --- publication ---------------------------------------------------------------------------

def ensure_publication(conn: psycopg.Connection[Any], config: Config) -> None:
    """Create the publication of the captured tables, or bring its table list up to date.

    Whole schemas become ``FOR TABLES IN SCHEMA`` (tables created later are included);
    a table list becomes ``FOR TABLE``. It must exist before the slot is created: the
    slot decodes with the catalog of its own past, where a later publication is missing.
    ``publish_via_partition_root``: a change in a partition arrives as a change of its
    partitioned table, the one table the catalog describes (a row moving between
    partitions is then a delete and an insert of that table).
    """
    name = sql.Identifier(config.publication)
    if config.tables:
        targets = sql.SQL("TABLE {}").format(sql.SQL(", ").join(
            sql.Identifier(*t.split(".", 1)) for t in config.tables))
    else:
        targets = sql.SQL("TABLES IN SCHEMA {}").format(
            sql.SQL(", ").join(sql.Identifier(s) for s in config.schemas))
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                          (config.publication,)).fetchone()
    try:
        if exists is None:
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR {} "
                                 "WITH (publish_via_partition_root = true)").format(
                                     name, targets))
            log.info("created publication %s", config.publication)
        else:
            if _published(conn, config) != _wanted(conn, config):
                conn.execute(sql.SQL("ALTER PUBLICATION {} SET {}").format(name, targets))
                log.info("updated the tables of publication %s", config.publication)
            if not _via_root(conn, config) and _has_partitioned(conn, config):
                conn.execute(sql.SQL("ALTER PUBLICATION {} "
                                     "SET (publish_via_partition_root = true)").format(name))
                log.info("publication %s now publishes partitions through their root",
                         config.publication)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SourceError(f"cannot create publication {config.publication}: "
                          f"{exc.diag.message_primary} (create it as a superuser or the "
                          "tables' owner, or run journal init as one)") from None


def _published(conn: psycopg.Connection[Any], config: Config) -> tuple[set[str], set[str]]:
    tables = {f"{s}.{t}" for s, t in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_publication_rel pr "
        "JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s",
        (config.publication,)).fetchall()}
    schemas = {s for (s,) in conn.execute(
        "SELECT n.nspname FROM pg_publication_namespace pn "
        "JOIN pg_publication p ON p.oid = pn.pnpubid "
        "JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = %s",
        (config.publication,)).fetchall()}
    return tables, schemas


def _via_root(conn: psycopg.Connection[Any], config: Config) -> bool:
    row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s",
                       (config.publication,)).fetchone()
    return bool(row and row[0])


def _has_partitioned(conn: psycopg.Connection[Any], config: Config) -> bool:
    """Whether a captured table is partitioned (only then must an existing publication
    publish through the root: a role that does not own it need not change it otherwise)."""
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'p' AND NOT c.relispartition AND (n.nspname = ANY(%s) "
        "OR n.nspname || '.' || c.relname = ANY(%s)) LIMIT 1",
        (list(config.schemas) if not config.tables else [], list(config.tables))).fetchone()
    return row is not None


def _wanted(conn: psycopg.Connection[Any], config: Config) -> tuple[set[str], set[str]]:
    if config.tables:
        return set(config.tables), set()
    return set(), set(config.schemas)


# --- the slot ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlotInfo:
    """A row of pg_replication_slots."""

    name: str
    plugin: str | None
    database: str | None
    active_pid: int | None
    restart_lsn: int | None
    confirmed_flush_lsn: int | None
    catalog_xmin: int | None
    wal_status: str | None


def slot_info(conn: psycopg.Connection[Any], name: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT slot_name, plugin, database, active_pid, restart_lsn::text, "
        "confirmed_flush_lsn::text, catalog_xmin::text, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone()
    if row is None:
        return None
    name, plugin, database, pid, restart, confirmed, xmin, wal_status = row
    return SlotInfo(name, plugin, database, pid, _lsn(restart), _lsn(confirmed),
                    int(xmin) if xmin else None, wal_status)


def _lsn(text: str | None) -> int | None:
    return parse_lsn(text) if text else None


def wait_until_inactive(conn: psycopg.Connection[Any], name: str, timeout: float) -> None:
    """Wait for the slot to be released; a killed capture's walsender takes a moment."""
    deadline = time.monotonic() + timeout
    while True:
        info = slot_info(conn, name)
        if info is None or info.active_pid is None:
            return
        if time.monotonic() >= deadline:
            raise SourceError(
                f"replication slot {name} is in use by process {info.active_pid}: stop the "
                f"other capture (or SELECT pg_terminate_backend({info.active_pid})) and retry")
        time.sleep(0.2)


def drop_slot(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE slot_name = %s", (name,))


# --- the recorded identity -----------------------------------------------------------------

@dataclass
class SlotState:
    """What capture knows about its slot, kept in ``<state_dir>/capture-<db>-<slot>.json``.

    ``confirmed_lsn`` is written *before* it is confirmed to the slot, so the slot's own
    confirmed_flush_lsn can never legitimately be ahead of it. ``relations`` holds the
    wire signature of every captured table as of ``confirmed_lsn`` (a transaction
    boundary), which keeps the positions of redelivered transactions identical.
    """

    system_identifier: str
    database: str
    slot: str
    generation: str
    consistent_point: int
    confirmed_lsn: int
    snapshot_complete: bool = False
    relations: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["consistent_point"] = format_lsn(self.consistent_point)
        data["confirmed_lsn"] = format_lsn(self.confirmed_lsn)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlotState:
        data = dict(data)
        data["consistent_point"] = parse_lsn(data["consistent_point"])
        data["confirmed_lsn"] = parse_lsn(data["confirmed_lsn"])
        return cls(**data)


def state_path(state_dir: str | Path, database: str, slot: str) -> Path:
    return Path(state_dir) / f"capture-{database}-{slot}.json"


def load_state(path: Path) -> SlotState | None:
    try:
        return SlotState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"capture state {path} is unreadable ({exc}): move it away to "
                          "start a new snapshot generation") from None


def save_state(path: Path, state: SlotState) -> None:
    """Write atomically: temporary file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(state.to_json(), indent=1, sort_keys=True).encode())


def check_slot_is_ours(info: SlotInfo | None, database: str) -> None:
    """A slot of that name that belongs to another database or plugin is someone else's:
    never drop it, refuse."""
    if info is None:
        return
    if info.database != database or info.plugin != "pgoutput":
        raise SourceError(f"replication slot {info.name} already exists for database "
                          f"{info.database} (plugin {info.plugin}): set another name in "
                          "[source] slot")


def resume_problem(state: SlotState | None, info: SlotInfo | None, system_identifier: str,
                   database: str) -> str | None:
    """Why the slot cannot be resumed (a new snapshot generation is needed), or None.

    Pure: the recorded state against what the server reports now.
    """
    if state is None:
        if info is None:
            return "first start: no slot yet"
        return (f"slot {info.name} exists but this state directory has no record of it "
                "(another installation's, or the state was lost)")
    if not state.snapshot_complete:
        return "the previous snapshot did not complete"
    if state.system_identifier != system_identifier:
        return (f"the source is a different PostgreSQL system (identifier {system_identifier}, "
                f"recorded {state.system_identifier}): failover or restore from backup")
    if state.database != database:
        return f"the source database changed from {state.database} to {database}"
    if info is None:
        return (f"slot {state.slot} has disappeared (dropped, or lost in a failover): "
                f"changes after {format_lsn(state.confirmed_lsn)} may be missing")
    confirmed = info.confirmed_flush_lsn or 0
    if confirmed > state.confirmed_lsn:
        return (f"slot {info.name} was recreated or consumed by someone else: it is at "
                f"{format_lsn(confirmed)}, capture never confirmed past "
                f"{format_lsn(state.confirmed_lsn)}")
    if confirmed < state.consistent_point:
        return (f"slot {info.name} was recreated: it is at {format_lsn(confirmed)}, before "
                f"the recorded consistent point {format_lsn(state.consistent_point)}")
    return None
