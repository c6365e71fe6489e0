"""The container image, built with podman and run on the host network against the test
PostgreSQL 18 and Kafka: what deploy/compose.yaml runs, container by container.

The base image (debootstrap, about a minute) is made once and kept while its recipe is
unchanged; the image build runs once per session and podman's layer cache keys each step by
its inputs (the dependency layer by pyproject.toml alone), so an unchanged tree rebuilds in
seconds. Without podman the module skips, and fails under CI (CI=1), where .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from journal import __version__, sample
from journal.config import Config
from journal.embedded import free_port
from journal.events import ChangeEvent, LogicalMessage, TransactionMarker
from journal.packages.store import open_store
from producers import slot
from tests.support.capture import (
    assert_reconstructs,
    capture_config,
    committed_transactions,
    database_of,
    loaded_sample,
    raw_positions,
    read_records,
)
from tests.support.ci import unavailable
from tests.support.databases import scratch_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PODMAN_DIR = REPO / "deploy" / "podman"
TAG = "localhost/edms-journal:test"
# the image's user (deploy/Containerfile): bind-mounted directories must be its own
IMAGE_UID = 10001
IMAGE_SIZE_GOAL = 250 * 1000**2  # bytes, as podman counts MB


# --- podman -------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(PODMAN_DIR / "containers.conf")}


def podman(*args: str, check: bool = True, timeout: float = 180
           ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["podman", *args], env=_env(), capture_output=True, text=True,
                         timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {res.returncode}:\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="session")
def image() -> str:
    """The image built from this tree (and the base image, where missing)."""
    message = None
    if shutil.which("podman") is None:
        message = ("podman is not installed: apt-get install podman runc debootstrap "
                   "(.ci/run does this)")
    elif os.geteuid() != 0:
        # debootstrap, and mount points owned by the image's user, need root
        message = "the container tests build a debootstrap base image: run them as root"
    if message is not None:
        unavailable(message)
    res = subprocess.run([str(PODMAN_DIR / "build"), TAG], env=_env(), capture_output=True,
                         text=True, timeout=900, check=False)
    if res.returncode != 0:
        pytest.fail(f"deploy/podman/build failed:\n{res.stderr[-4000:]}", pytrace=False)
    return TAG


@dataclass(frozen=True)
class Mounts:
    """Host directories standing in for compose's volumes and the mounted journal.toml."""

    config: Path
    state: Path
    packages: Path

    def args(self) -> list[str]:
        return ["-v", f"{self.config}:/etc/edms-journal/journal.toml:ro",
                "-v", f"{self.state}:/var/lib/edms-journal/state",
                "-v", f"{self.packages}:/var/lib/edms-journal/packages"]


def mounts_for(cfg: Config, tmp_path: Path) -> Mounts:
    """A journal.toml as a deployment writes it (container paths) and the directories."""
    dirs = {}
    for name in ("state", "packages"):
        dirs[name] = tmp_path / f"volume-{name}"
        dirs[name].mkdir()
        os.chown(dirs[name], IMAGE_UID, IMAGE_UID)
    config = tmp_path / "container-journal.toml"
    config.write_text("\n".join([
        "[source]", f'url = "{cfg.source_url}"', f'slot = "{cfg.slot}"',
        f"heartbeat_interval_s = {cfg.heartbeat_interval_s}",
        "[journal]", f'url = "{cfg.journal_url}"', f'topic_prefix = "{cfg.topic_prefix}"',
        # a segment every two seconds, so the compactor daemon packages a change quickly
        "[packages]", 'url = "file:///var/lib/edms-journal/packages"',
        "segment_max_age_s = 2",
        "[state]", 'dir = "/var/lib/edms-journal/state"', ""]))
    config.chmod(0o644)
    return Mounts(config, dirs["state"], dirs["packages"])


class Containers:
    """Named containers of one test, removed afterwards whatever happened."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.names: list[str] = []

    def create(self, mounts: Mounts, *command: str) -> str:
        name = f"ej-{uuid.uuid4().hex[:10]}"
        podman("create", "--name", name, "--network", "host", *mounts.args(), self.image,
               *command)
        self.names.append(name)
        return name

    def run(self, mounts: Mounts, *command: str, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
        return podman("run", "--rm", "--network", "host", "--no-healthcheck", *mounts.args(),
                      self.image, *command, check=False, timeout=timeout)

    def logs(self, name: str) -> str:
        res = podman("logs", name, check=False)
        return (res.stdout + res.stderr)[-4000:]

    def running(self, name: str) -> bool:
        res = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        return res.stdout.strip() == "true"

    def exit_code(self, name: str) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout)

    def healthy(self, name: str) -> bool:
        """Run the image's HEALTHCHECK (`journal health`) in the container now."""
        return podman("healthcheck", "run", name, check=False, timeout=60).returncode == 0

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "0", name, check=False)


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    c = Containers(image)
    try:
        yield c
    finally:
        c.remove_all()


def wait_snapshot_complete(containers: Containers, name: str, cfg: Config, state: Path,
                           timeout: float = 120) -> None:
    """Until the capture container has finished its initial snapshot and streams."""
    state_file = slot.state_path(str(state), database_of(cfg.source_url), cfg.slot)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_file.exists() and slot.load_state(state_file).snapshot_complete:
            return
        if not containers.running(name):
            raise AssertionError(f"capture exited before streaming:\n{containers.logs(name)}")
        time.sleep(0.3)
    raise AssertionError(f"no complete snapshot after {timeout}s:\n{containers.logs(name)}")


def wait_reconstructed(cfg: Config, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_reconstructs(read_records(cfg, database_of(url)), url)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def kafka_config(url: str, tmp_path: Path, kafka: str) -> Config:
    return capture_config(url, tmp_path, "kafka", kafka)


# --- the image ----------------------------------------------------------------------------

def test_image_runs_as_a_non_root_user_without_a_compiler_and_is_small(
        image: str, capsys: pytest.CaptureFixture[str]):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    size = int(info["Size"])
    with capsys.disabled():
        print(f"\nimage {image}: {size / 1000**2:.0f} MB uncompressed "
              f"({size / 1024**2:.0f} MiB; goal < {IMAGE_SIZE_GOAL / 1000**2:.0f} MB)")
    assert info["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert info["Config"]["Entrypoint"] == ["journal"]
    assert info["Healthcheck"]["Test"] == ["CMD", "journal", "health"]
    who = podman("run", "--rm", "--no-healthcheck", "--entrypoint", "id", image, "-u")
    assert int(who.stdout) == IMAGE_UID
    compilers = podman("run", "--rm", "--no-healthcheck", "--entrypoint", "sh", image, "-c",
                       "command -v gcc cc c++ clang tcc || true")
    assert compilers.stdout.strip() == "", "a compiler is left in the final stage"
    assert size < IMAGE_SIZE_GOAL


def test_version_in_the_image_is_the_tree_it_was_built_from(image: str):
    res = podman("run", "--rm", "--no-healthcheck", "--network", "host", image, "--version")
    assert res.stdout.strip() == f"journal, version {__version__}"


def test_demo_runs_in_the_image_with_its_embedded_postgresql(image: str):
    # the embedded server refuses root; the image's user runs it as it is
    res = podman("run", "--rm", "--no-healthcheck", "--network", "host", image, "demo",
                 "--scale", "200", "--transactions", "100", check=False, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "demo OK" in res.stdout


# --- capture and compact against the test servers ----------------------------------------

def _packaged_tag_labels(packages: Path) -> dict[str, set[str]]:
    """Tag labels inserted by segments, and present in full snapshots, read on the host."""
    found: dict[str, set[str]] = {"segment": set(), "full": set()}
    store = open_store(f"file://{packages}")
    for manifest in store.list():
        with store.open(manifest.package_id) as reader:
            if manifest.kind == "full":
                found["full"] |= {row["label"] for row in reader.rows("public.tag")}
            else:
                found["segment"] |= {
                    r.after["label"] for r in reader.records()
                    if isinstance(r, ChangeEvent) and r.op == "c" and r.after is not None
                    and "label" in r.after and "color" in r.after}
    return found


def test_capture_and_compact_containers_put_a_source_change_into_a_package(
        pg18_server: str, kafka_bootstrap: str, containers: Containers, tmp_path: Path):
    with scratch_database(pg18_server, "ctr") as url:
        loaded_sample(url, scale=20)
        cfg = kafka_config(url, tmp_path, kafka_bootstrap)
        mounts = mounts_for(cfg, tmp_path)
        capture = containers.create(mounts, "capture")
        podman("start", capture)
        wait_snapshot_complete(containers, capture, cfg, mounts.state)
        # nothing packaged yet: the health check must say so
        assert not containers.healthy(capture)

        compact = containers.create(mounts, "compact")
        podman("start", compact)
        label = f"container-{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO tag (label) VALUES (%s)", (label,))
        deadline = time.monotonic() + 90
        while label not in (found := _packaged_tag_labels(mounts.packages))["segment"]:
            assert containers.running(compact), containers.logs(compact)
            assert time.monotonic() < deadline, f"{label} never reached a package: {found}"
            time.sleep(1)
        for name in (capture, compact):
            assert containers.healthy(name), podman(
                "inspect", "--format", "{{json .State.Health}}", name).stdout[-3000:]

        # the journal the containers wrote equals the source, read with SQL on the host
        assert_reconstructs(read_records(cfg, database_of(url)), url)
        # SIGTERM (what compose and systemd send): both finish their work and exit 0
        for name in (capture, compact):
            podman("stop", "--time", "60", name)
            assert containers.exit_code(name) == 0, containers.logs(name)
        res = containers.run(mounts, "compact", "--once", "--snapshot")
        assert res.returncode == 0, res.stderr[-2000:]
        assert label in _packaged_tag_labels(mounts.packages)["full"]


def test_killing_the_capture_container_mid_workload_loses_and_doubles_nothing(
        pg18_server: str, kafka_bootstrap: str, containers: Containers, tmp_path: Path):
    rng = random.Random()
    with scratch_database(pg18_server, "ckill") as url:
        loaded_sample(url, scale=20)
        cfg = kafka_config(url, tmp_path, kafka_bootstrap)
        mounts = mounts_for(cfg, tmp_path)
        capture = containers.create(mounts, "capture")
        podman("start", capture)
        wait_snapshot_complete(containers, capture, cfg, mounts.state)
        reference = f"{cfg.slot}_ref"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                         (reference,))
        workload = threading.Thread(target=sample.workload, args=(url, 600),
                                    kwargs={"seed": 13, "rate": 60})
        workload.start()
        kills = 0
        while workload.is_alive():
            time.sleep(rng.uniform(1.0, 3.0))
            podman("kill", "--signal", "KILL", capture)
            podman("wait", capture, timeout=60)
            kills += 1
            podman("start", capture)  # what restart: unless-stopped does
        workload.join()
        wait_reconstructed(cfg, url)
        podman("stop", "--time", "60", capture)
        assert kills >= 2
        print(f"capture container killed {kills} times during the workload")

        records = read_records(cfg, database_of(url))
        assert_reconstructs(records, url)
        generations = [r for r in records if isinstance(r, LogicalMessage)
                       and r.prefix == "edms_journal.snapshot"]
        assert len(generations) == 1, "a restarted container must resume, not re-snapshot"
        snapshot_lsn = generations[0].position.commit_lsn
        ends = [r.position.commit_lsn for r in records if isinstance(r, TransactionMarker)
                and r.status == "END" and r.position.commit_lsn != snapshot_lsn]
        assert len(ends) == len(set(ends))  # every transaction once
        assert set(ends) == committed_transactions(url, reference)
        assert len(raw_positions(cfg, database_of(url))) >= len(records)


# --- the API --------------------------------------------------------------------------------

def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_container_answers_api_health_with_a_token(
        image: str, pg18_server: str, kafka_bootstrap: str, containers: Containers,
        tmp_path: Path):
    with scratch_database(pg18_server, "capi") as url:
        loaded_sample(url, scale=5)
        cfg = kafka_config(url, tmp_path, kafka_bootstrap)
        mounts = mounts_for(cfg, tmp_path)
        port = free_port()
        capture = containers.create(mounts, "capture")
        podman("start", capture)
        wait_snapshot_complete(containers, capture, cfg, mounts.state)
        res = containers.run(mounts, "compact", "--once")
        assert res.returncode == 0, res.stderr[-2000:]
        serve = containers.create(mounts, "serve", "--host", "127.0.0.1", "--port", str(port),
                                  "--with-scheduler")
        podman("start", serve)
        created = containers.run(mounts, "tokens", "create", "--name", "container-test",
                                 "--role", "viewer")
        assert created.returncode == 0, created.stderr[-2000:]
        token = created.stdout.strip().splitlines()[-1]
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"{base}/health", token)
                break
            except OSError:
                assert containers.running(serve), containers.logs(serve)
                assert time.monotonic() < deadline, "serve did not listen"
                time.sleep(0.5)
        assert status == 200, body[:2000]
        assert token.encode() not in body
        assert _get(f"{base}/health")[0] == 401
        assert containers.healthy(serve)
        podman("stop", "--time", "60", serve)
        assert containers.exit_code(serve) == 0, containers.logs(serve)
