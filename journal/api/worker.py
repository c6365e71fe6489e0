"""Long jobs of the API: each runs as a ``journal`` command in a child process, like the
scheduler's. The API queues the job's row first (so it can answer 202 with the job's URL at
once) and the child adopts it (``JOURNAL_JOB``): the row a restore leaves is the one the
CLI leaves, started by ``api:NAME``. SIGTERM to the child is how a job is cancelled."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from journal.audit import sanitize
from journal.config import redact
from journal.jobs import repository
from journal.jobs.database import JobDatabase
from journal.jobs.recorder import JOB_ENV, STARTED_BY_ENV
from journal.jobs.repository import JobRef
from journal.jobs.tokens import Caller

log = logging.getLogger(__name__)


class JobWorker:
    def __init__(self, db: JobDatabase, config_path: str | None) -> None:
        self.db, self.config_path = db, config_path
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()

    def launch(self, caller: Caller, kind: str, args: list[str], **fields: Any) -> JobRef:
        """Queue the job's row and start ``journal ARGS`` to run it."""
        command = " ".join(sanitize(args))
        ref = repository.queue_job(self.db, kind, caller.started_by, command, **fields)
        argv = [sys.executable, "-m", "journal.cli"]
        if self.config_path:
            argv += ["-c", self.config_path]
        env = dict(os.environ, **{STARTED_BY_ENV: caller.started_by, JOB_ENV: str(ref)})
        log.info("job %s for %s: journal %s", ref, caller.started_by, command)
        child = subprocess.Popen(argv + args, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with self._lock:
            self._children[str(ref)] = child
        threading.Thread(target=self._wait, args=(ref, child), name=f"job-{ref}",
                         daemon=True).start()
        return ref

    def _wait(self, ref: JobRef, child: subprocess.Popen[bytes]) -> None:
        _, err = child.communicate()
        with self._lock:
            self._children.pop(str(ref), None)
        job = repository.get_job(self.db, ref)
        if job is None or job.status in repository.FINAL:
            return
        # the child ended without closing its row: before it took the row over (a usage
        # error), or killed by the signal before its handler was set
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        why = redact(lines[-1]).removeprefix("error: ") if lines else (
            f"its process exited {child.returncode}")
        with self._lock:
            cancelled = str(ref) in self._cancelled
        repository.finish_job(self.db, ref, "cancelled" if cancelled else "failed",
                              "cancelled by the API" if cancelled else why)

    def running_here(self, ref: JobRef) -> bool:
        with self._lock:
            child = self._children.get(str(ref))
        return child is not None and child.poll() is None

    def cancel(self, ref: JobRef) -> bool:
        """SIGTERM to the job's child: it ends ``cancelled`` (a restore rolls back).
        False when this server does not run it."""
        with self._lock:
            child = self._children.get(str(ref))
        if child is None or child.poll() is not None:
            return False
        with self._lock:
            self._cancelled.add(str(ref))
        child.send_signal(signal.SIGTERM)
        return True

    def stop(self) -> None:
        with self._lock:
            children = list(self._children.values())
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
