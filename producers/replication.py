"""The streaming replication connection (libpq through psycopg 3's low-level ``pq``).

psycopg has no replication API, but libpq does everything needed: a connection with
``replication=database`` speaks the walsender's simple-query commands
(``IDENTIFY_SYSTEM``, ``CREATE_REPLICATION_SLOT``, ``START_REPLICATION``), and the stream
is a COPY BOTH exchange of XLogData (``w``) and keepalive (``k``) messages from the
server and standby status updates (``r``) from us. The status update's flush position is
the one and only thing that lets the server recycle WAL and advance the slot; callers
pass only what the journal has durably acknowledged.
"""

from __future__ import annotations

import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from journal.errors import SourceError
from journal.positions import format_lsn, parse_lsn
from journal.values import SESSION_SETTINGS
from producers.pgoutput import PG_EPOCH_OFFSET_US

_XLOGDATA = struct.Struct(">qqq")
_KEEPALIVE = struct.Struct(">qqB")
_STATUS = struct.Struct(">cqqqqB")


@dataclass(frozen=True, slots=True)
class SystemIdentity:
    system_identifier: str
    timeline: int
    xlogpos: int
    database: str


@dataclass(frozen=True, slots=True)
class CreatedSlot:
    name: str
    consistent_point: int
    snapshot_name: str


@dataclass(frozen=True, slots=True)
class XLogData:
    data_start: int
    wal_end: int
    send_time: int  # µs since the Unix epoch
    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    send_time: int
    reply_requested: bool


def _session_options() -> str:
    # The walsender prints column values with these settings, which the loaders expect.
    opts = [f"-c {k}={v.replace(' ', '')}" for k, v in SESSION_SETTINGS.items()
            if k != "client_encoding"]
    return " ".join(opts)


class ReplicationConnection:
    """One walsender connection. Not thread-safe; one stream per connection."""

    def __init__(self, conninfo: dict[str, Any]) -> None:
        kwargs = dict(conninfo)
        url = kwargs.pop("conninfo")
        self._conninfo = make_conninfo(url, replication="database", client_encoding="UTF8",
                                       options=_session_options(), **kwargs)
        self._conn = psycopg.connect(self._conninfo, autocommit=True)
        self.pgconn: pq.abc.PGconn = self._conn.pgconn
        self.streaming = False

    # -- commands ----------------------------------------------------------------------

    def _command(self, command: str) -> Any:
        result = self.pgconn.exec_(command.encode())
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK,
                                 pq.ExecStatus.COPY_BOTH):
            message = (result.error_message or self.pgconn.error_message).decode(
                errors="replace").strip()
            raise SourceError(f"{command.split()[0]} failed: {' '.join(message.split())}")
        return result

    def identify_system(self) -> SystemIdentity:
        r = self._command("IDENTIFY_SYSTEM")
        values = [r.get_value(0, i) for i in range(r.nfields)]
        return SystemIdentity(values[0].decode(), int(values[1]),
                              parse_lsn(values[2].decode()),
                              values[3].decode() if values[3] else "")

    def create_slot(self, name: str, *, temporary: bool = False) -> CreatedSlot:
        """Create the logical slot and export its snapshot.

        The snapshot lives only while this connection stays open and idle: read it (on
        another connection) before calling ``start``. A ``temporary`` slot disappears
        with this connection, even when the process dies.
        """
        kind = "TEMPORARY LOGICAL" if temporary else "LOGICAL"
        r = self._command(f"CREATE_REPLICATION_SLOT {_ident(name)} {kind} pgoutput "
                          "(SNAPSHOT 'export')")
        fields = {r.fname(i).decode(): r.get_value(0, i) for i in range(r.nfields)}
        return CreatedSlot(fields["slot_name"].decode(),
                           parse_lsn(fields["consistent_point"].decode()),
                           fields["snapshot_name"].decode())

    def start(self, slot: str, publication: str, start_lsn: int = 0) -> None:
        """Enter COPY BOTH: the server streams changes after the slot's confirmed LSN."""
        pub = '"' + publication.replace('"', '""') + '"'
        pub_literal = "'" + pub.replace("'", "''") + "'"
        self._command(f"START_REPLICATION SLOT {_ident(slot)} LOGICAL {format_lsn(start_lsn)} "
                      f"(proto_version '1', publication_names {pub_literal}, "
                      "messages 'true')")
        self.pgconn.nonblocking = 1
        self.streaming = True

    # -- the stream --------------------------------------------------------------------

    def read(self, timeout: float) -> XLogData | Keepalive | None:
        """The next message of the stream, or None when none arrived within ``timeout``."""
        deadline = None
        while True:
            n, data = self.pgconn.get_copy_data(1)
            if n > 0:
                return _parse(bytes(data))
            if n == -1:
                self.streaming = False
                raise SourceError(f"the server ended replication: {self._final_error()}")
            if n < -1:
                raise SourceError("replication stream failed: "
                                  + self.pgconn.error_message.decode(errors="replace").strip())
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            remaining = deadline - now
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.pgconn.socket], [], [], remaining)
            if ready:
                self.pgconn.consume_input()

    def send_status(self, lsn: int, reply: bool = False) -> None:
        """Standby status update: written, flushed and applied up to ``lsn``."""
        now = int(time.time() * 1_000_000) - PG_EPOCH_OFFSET_US
        message = _STATUS.pack(b"r", lsn, lsn, lsn, now, 1 if reply else 0)
        while self.pgconn.put_copy_data(message) == 0:
            self._wait_writable()
        self._flush()

    def end_stream(self, timeout: float = 5.0) -> None:
        """Leave COPY BOTH cleanly: the server has then processed every status update."""
        if not self.streaming:
            return
        self.streaming = False
        try:
            while self.pgconn.put_copy_end() == 0:
                self._wait_writable()
            self._flush()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                n, _ = self.pgconn.get_copy_data(1)
                if n == 0:
                    if select.select([self.pgconn.socket], [], [], 0.1)[0]:
                        self.pgconn.consume_input()
                    continue
                if n < 0:
                    break
            self.pgconn.nonblocking = 0
            while self.pgconn.get_result() is not None:
                pass
        except (psycopg.Error, OSError):
            pass  # the connection is going away anyway

    def _flush(self) -> None:
        while self.pgconn.flush() == 1:
            self._wait_writable()

    def _wait_writable(self) -> None:
        select.select([], [self.pgconn.socket], [], 1.0)
        self.pgconn.consume_input()

    def _final_error(self) -> str:
        result = self.pgconn.get_result()
        if result is not None and result.error_message:
            return " ".join(result.error_message.decode(errors="replace").split())
        return "no error reported"

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 — closing a broken connection must not raise
            pass


def _parse(data: bytes) -> XLogData | Keepalive:
    kind = data[:1]
    if kind == b"w":
        start, end, ts = _XLOGDATA.unpack_from(data, 1)
        return XLogData(start, end, ts + PG_EPOCH_OFFSET_US, data[25:])
    if kind == b"k":
        end, ts, reply = _KEEPALIVE.unpack_from(data, 1)
        return Keepalive(end, ts + PG_EPOCH_OFFSET_US, bool(reply))
    raise SourceError(f"unexpected replication message {kind!r}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
