"""The process that reads a point-in-time restore's changes beside the snapshot's COPY:
a worker that ends early must never leave the restore waiting for it."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from restorer.folded import _Collector


class _DiesWhenRead:
    """Ends the process that unpickles it, as a worker killed while it starts."""

    def __reduce__(self) -> tuple[Any, ...]:
        return os._exit, (3,)


def test_a_worker_that_dies_before_reading_its_work_is_not_waited_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the work is read after the part that ends the worker, and is several times a pipe's
    # buffer: written to a child that is gone, it blocks until someone reads
    manifests = [b"m" * 4_000_000]
    outcome: list[Any] = []

    def collect() -> None:
        with caplog.at_level(logging.WARNING), \
                _Collector(_DiesWhenRead(), "base", manifests, None, None,  # type: ignore[arg-type]
                           tmp_path, None) as collector:  # type: ignore[arg-type]
            outcome.append(collector.result())

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the restore waits for a worker that died"
    assert outcome == [None]
    assert "ended without an answer (exit code 3)" in caplog.text
