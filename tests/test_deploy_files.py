"""deploy/: the compose file and the systemd units start the same daemons, with commands and
options the CLI accepts, and the units are valid for systemd. Nothing needs to run."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from journal.cli import main
from tests.support.ci import unavailable

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DAEMONS = ("capture", "compact", "serve")


def compose_commands(text: str) -> dict[str, list[str]]:
    """Each service's `command:` (a JSON-style flow list) by service name.

    A reader for the file's own plain layout (service names indented two spaces under
    `services:`), so the test needs no YAML library."""
    commands: dict[str, list[str]] = {}
    service = None
    in_services = False
    for line in text.splitlines():
        if re.match(r"^\S", line):
            in_services = line.startswith("services:")
            service = None
        elif in_services and (m := re.match(r"^  ([\w-]+):\s*$", line)):
            service = m.group(1)
        elif service and (m := re.match(r"^    command:\s*(\[.*\])\s*$", line)):
            commands[service] = json.loads(m.group(1))
    return commands


def unit_command(unit: Path) -> list[str]:
    """The arguments after `journal` in the unit's ExecStart."""
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line.removeprefix("ExecStart="))
            assert argv[0] == "/opt/edms-journal/bin/journal", line
            return argv[1:]
    raise AssertionError(f"{unit.name} has no ExecStart")


def test_compose_reader_finds_commands_only_under_services():
    text = ("x-journal: &journal\n  command: [\"no\"]\nservices:\n  a:\n    image: x\n"
            "    command: [\"capture\", \"--once-until-idle\", \"1\"]\n  b:\n    image: y\n"
            "volumes:\n  a:\n")
    assert compose_commands(text) == {"a": ["capture", "--once-until-idle", "1"]}


@pytest.mark.parametrize("daemon", DAEMONS)
def test_compose_service_and_systemd_unit_run_the_same_command(daemon: str):
    compose = compose_commands((DEPLOY / "compose.yaml").read_text())
    unit = unit_command(DEPLOY / "systemd" / f"edms-journal-{daemon}.service")
    assert compose[daemon][0] == unit[0] == daemon
    # the container listens on every interface of its own network; the host service on
    # loopback only (the API binds to 127.0.0.1 unless told otherwise)
    def without_host(args: list[str]) -> list[str]:
        return [a for i, a in enumerate(args)
                if a != "--host" and (i == 0 or args[i - 1] != "--host")]
    assert without_host(compose[daemon]) == without_host(unit)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_deployed_commands_and_options_are_ones_the_cli_accepts(daemon: str):
    args = compose_commands((DEPLOY / "compose.yaml").read_text())[daemon]
    command = main.commands[args[0]]
    try:
        command.make_context(args[0], list(args[1:]), resilient_parsing=False)
    except click.UsageError as exc:
        pytest.fail(f"compose.yaml runs `journal {' '.join(args)}`: {exc}")


def test_health_unit_runs_what_the_image_healthcheck_runs():
    assert unit_command(DEPLOY / "systemd" / "edms-journal-health.service") == ["health"]
    assert 'CMD ["journal", "health"]' in (DEPLOY / "Containerfile").read_text()


def test_systemd_units_pass_systemd_analyze_verify():
    if shutil.which("systemd-analyze") is None:  # .ci/run installs it
        unavailable("systemd-analyze is not installed")
    units = sorted(str(p) for p in (DEPLOY / "systemd").glob("edms-journal-*"))
    res = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                         text=True, check=False)
    # the package is not installed on the test machine: that one complaint is expected
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if line and "/opt/edms-journal/bin/journal is not executable" not in line]
    assert problems == []
