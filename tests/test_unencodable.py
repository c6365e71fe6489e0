"""A value the journal cannot record stops capture once: no retry loop, no new generation."""

from __future__ import annotations

import threading

import pytest

from journal.config import Config
from journal.errors import UnencodableValue
from producers import capture


def test_capture_stops_at_once_on_a_value_it_cannot_record(monkeypatch) -> None:
    runs: list[int] = []
    stop = threading.Event()

    def run(self: capture._Session) -> None:
        runs.append(1)
        self.streamed = True  # a retry would follow for a lost connection…
        stop.set()  # …and end at once, without the error, if it were retried
        raise UnencodableValue("public.t", "c", "x", "why")

    monkeypatch.setattr(capture._Session, "run", run)
    monkeypatch.setattr(capture._Session, "close", lambda self: None)
    with pytest.raises(UnencodableValue, match="table public.t, column c: value 'x'"):
        capture.run_capture(Config(), stop)
    assert runs == [1]
