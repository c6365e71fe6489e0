"""One scheduler process for tests/test_scheduler.py: runs a simulated day on a clock that
all the workers share (simulated time = start + real time elapsed x factor), and logs each
run it executes as a JSON line."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime, timedelta

from journal.jobs.database import JobDatabase
from journal.jobs.scheduler import Claimed, Scheduler


class ScaledClock:
    def __init__(self, real_start: float, sim_start: datetime, factor: float) -> None:
        self.real_start, self.sim_start, self.factor = real_start, sim_start, factor

    def now(self) -> datetime:
        return self.sim_start + timedelta(seconds=(time.time() - self.real_start) * self.factor)

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds / self.factor + 0.001)


def main() -> None:
    url, log_path, real_start, sim_start, sim_end, factor = sys.argv[1:7]
    clock = ScaledClock(float(real_start), datetime.fromisoformat(sim_start), float(factor))
    db = JobDatabase(url)

    def execute(claimed: Claimed) -> str:
        line = json.dumps({"task": claimed.task, "at": claimed.scheduled_for.isoformat(),
                           "late": claimed.late, "pid": os.getpid()})
        with open(log_path, "a") as log:
            log.write(line + "\n")
        time.sleep(0.02)  # long enough for the other scheduler to try the same run
        return "succeeded"

    time.sleep(max(float(real_start) - time.time(), 0))
    Scheduler(db, execute, clock, poll_s=3600, grace=timedelta(minutes=30)).run(
        threading.Event(), until=datetime.fromisoformat(sim_end))


if __name__ == "__main__":
    main()
