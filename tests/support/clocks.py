"""A clock for the scheduler that the test moves, not the wall."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class FakeClock:
    """Time moves only when the scheduler sleeps or a job runs."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        self.current += timedelta(seconds=seconds)
