"""``journal serve``'s process: the API and the dashboard in one application on uvicorn,
the capture sampler, the job worker and, when asked, the scheduler beside them."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

from fastapi import FastAPI

from journal.api.app import create_app
from journal.api.capture import CaptureSampler
from journal.api.security import Sessions
from journal.api.state import AppState
from journal.api.worker import JobWorker
from journal.config import Config
from journal.dashboard.routes import install as install_dashboard
from journal.jobs.database import open_database
from journal.jobs.scheduler import CommandExecutor, run_forever, sync_configuration

log = logging.getLogger(__name__)


def build_state(config: Config, config_path: str | None) -> AppState:
    db = open_database(config)
    return AppState(config=config, config_path=config_path, db=db, sessions=Sessions(),
                    sampler=CaptureSampler(config), worker=JobWorker(db, config_path))


def build_app(state: AppState) -> FastAPI:
    app = create_app(state)
    install_dashboard(app)
    return app


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    certfile: str | None = None
    keyfile: str | None = None


def serve(config: Config, config_path: str | None, listen: Listen,
          with_scheduler: bool = False, ready: threading.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn's own handlers), then stop the scheduler and
    the running jobs (they end cancelled) and return."""
    import uvicorn

    state = build_state(config, config_path)
    app = build_app(state)
    state.sampler.start()
    stop = threading.Event()
    executor = CommandExecutor(config_path)
    scheduler = None
    if with_scheduler:
        sync_configuration(state.db, config)
        scheduler = threading.Thread(target=run_forever, args=(state.db, executor, stop),
                                     name="scheduler", daemon=True)
        scheduler.start()
    server = uvicorn.Server(uvicorn.Config(
        app, host=listen.host, port=listen.port, ssl_certfile=listen.certfile,
        ssl_keyfile=listen.keyfile, log_level="info", proxy_headers=False,
        server_header=False))
    if ready is not None:
        threading.Thread(target=_signal_ready, args=(server, ready), daemon=True).start()
    # uvicorn handles SIGTERM and SIGINT while it runs and raises them again once it has
    # shut down: caught here, they end the process through the clean-up below, exit 0
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()
        executor.terminate()
        state.worker.stop()
        if scheduler is not None:
            scheduler.join(timeout=60)
        state.sampler.stop()
        state.db.dispose()


def _stopped(signum: int, _frame: object) -> None:
    log.info("%s: stopped", signal.Signals(signum).name)


def _signal_ready(server: object, ready: threading.Event) -> None:
    while not getattr(server, "started", False):
        threading.Event().wait(0.05)
    ready.set()
