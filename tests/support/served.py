"""A real ``journal serve`` over real packages, for the API, dashboard and load tests: a
sample source on PostgreSQL 18, captured and compacted once, a journal.toml, the server as
a child process on a free loopback port, and one token per role."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from journal.compactor import Compactor
from journal.config import Config
from journal.embedded import free_port
from journal.jobs import repository
from journal.jobs.database import JobDatabase, default_url
from journal.packages.store import open_store
from journal.transport import open_reader
from producers.capture import run_capture
from tests.support.capture import capture_config, loaded_sample, write_toml
from tests.support.databases import scratch_database

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    base: str
    cfg: Config
    toml: Path
    source_url: str
    pg_server: str
    tokens: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api(self) -> str:
        return self.base + "/api/v1"

    def client(self, role: str | None = "viewer", **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30, **kwargs)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "journal.cli", "-c", str(self.toml), *args],
                             capture_output=True, text=True, env=child_env(), timeout=300,
                             check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"journal {' '.join(args)}: {res.stderr[-2000:]}")
        return res

    def job_count(self) -> int:
        """Jobs in the server's job database, read directly (the API caches its lists)."""
        db = JobDatabase(default_url(self.cfg.state_dir))
        try:
            return len(repository.list_jobs(db, limit=100_000))
        finally:
            db.dispose()

    def compact(self) -> None:
        reader = open_reader(self.cfg.journal_location(), self.cfg.database())
        try:
            Compactor(reader, open_store(self.cfg.packages_url)).run(once=True)
        finally:
            reader.close()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNAL_")
           or k == "JOURNAL_SERVICES_DIR"}
    env["PYTHONPATH"] = str(REPO)
    return env


def prepare(pg18_server: str, source_url: str, tmp: Path, scale: int = 10) -> tuple[Config, Path]:
    loaded_sample(source_url, scale=scale)
    cfg = capture_config(source_url, tmp, packages_url=f"file://{tmp}/packages")
    run_capture(cfg, once_until_idle=1.0)
    toml = write_toml(tmp, cfg)
    toml.write_text(toml.read_text() + f'[packages]\nurl = "{cfg.packages_url}"\n')
    return cfg, toml


@contextmanager
def served(pg18_server: str, tmp: Path, scale: int = 10, extra_args: tuple[str, ...] = ()
           ) -> Iterator[Served]:
    with scratch_database(pg18_server, "api") as source_url:
        cfg, toml = prepare(pg18_server, source_url, tmp, scale)
        port = free_port()
        log = tmp / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "journal.cli", "-c", str(toml), "serve", "--port",
                 str(port), *extra_args], env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        s = Served(f"http://127.0.0.1:{port}", cfg, toml, source_url, pg18_server, {},
                   process, log)
        try:
            s.compact()
            for role in ("viewer", "operator", "admin"):
                out_ = s.cli("tokens", "create", "--name", f"test-{role}", "--role", role)
                s.tokens[role] = out_.stdout.strip().splitlines()[-1]
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(s.base + "/login", timeout=2)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "serve did not listen"
                    time.sleep(0.2)
            yield s
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # SIGTERM is how systemd and podman stop it: a clean stop exits 0
            assert process.returncode == 0, log.read_text()[-3000:]
