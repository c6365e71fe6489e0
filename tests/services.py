"""Where the services started by `scripts/services up` listen.

Each value comes from its environment variable, else from the `export` lines in
$JOURNAL_SERVICES_DIR/env (default <repo>/.services/env). A missing service is a test
failure, not a skip: run `scripts/services up`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "services"

# set by tests/conftest.py to the node id of a running test not marked integration
unmarked_test: str | None = None


def services_dir() -> Path:
    return Path(os.environ.get("JOURNAL_SERVICES_DIR") or REPO / ".services")


def _from_env_file(name: str) -> str | None:
    try:
        lines = (services_dir() / "env").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and words[1].startswith(f"{name}="):
            return words[1].split("=", 1)[1]
    return None


def _get(name: str) -> str:
    if unmarked_test is not None:
        pytest.fail(f"{unmarked_test} asks for {name} but is not marked integration: mark it, "
                    "so that `pytest -m \"not integration\"` needs no server", pytrace=False)
    value = os.environ.get(name) or _from_env_file(name)
    if not value:
        pytest.fail(f"{name} is not set and not in {services_dir() / 'env'}: "
                    "run `scripts/services up` (or `eval \"$(scripts/services up)\"`)",
                    pytrace=False)
    return value


def pg18_url() -> str:
    return _get("JOURNAL_TEST_PG18_URL")


def pg15_url() -> str:
    return _get("JOURNAL_TEST_PG15_URL")


def kafka_bootstrap() -> str:
    return _get("JOURNAL_TEST_KAFKA")


def _services(*args: str) -> None:
    env = {**os.environ, "JOURNAL_SERVICES_DIR": str(services_dir())}
    res = subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.fail(f"scripts/services {' '.join(args)} failed:\n{res.stderr}", pytrace=False)


def stop_kafka() -> None:
    _services("down", "--only", "kafka")


def start_kafka() -> None:
    """Start the broker again: same data directory, same ports; returns once it answers."""
    _services("up", "--only", "kafka")


def restart_kafka() -> None:
    stop_kafka()
    start_kafka()


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics under ``prefix`` (a test's own): the broker outlives test runs."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=10_000)
    except Exception:  # the broker may be down after a failed restart test
        return
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefix + ".")]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()
