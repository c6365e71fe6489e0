"""``journal serve`` with a certificate and key speaks HTTPS only, on loopback by default."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from journal.embedded import free_port

REPO = Path(__file__).resolve().parent.parent


def test_serve_with_a_certificate_speaks_https_on_loopback(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNAL_")}
    env.update(PYTHONPATH=str(REPO), JOURNAL_CONFIG=str(tmp_path / "absent.toml"),
               JOURNAL_STATE_DIR=str(tmp_path / "state"),
               JOURNAL_SOURCE_URL="postgresql://nobody@127.0.0.1:9/none")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "journal.cli", "serve", "--port",
                                    str(port), "--cert", str(cert), "--key", str(key)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/login",
                              verify=ssl.create_default_context(cafile=str(cert)))
                break
            except httpx.ConnectError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert r.status_code == 200 and "Log in" in r.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/login")
        assert f"running on https://127.0.0.1:{port}" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()


def test_serve_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    res = subprocess.run([sys.executable, "-m", "journal.cli", "serve", "--cert", str(cert)],
                         env={**os.environ, "PYTHONPATH": str(REPO),
                              "JOURNAL_STATE_DIR": str(tmp_path / "state")},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--cert and --key go together" in res.stderr
