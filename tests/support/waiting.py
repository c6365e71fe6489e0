"""Waiting on a condition, never on the clock: a test that sleeps a fixed time either
waits too long or, on a busy machine, not long enough and fails for the wrong reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something true and return that; fail naming
    ``what`` was awaited once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def eventually(check: Callable[[], object], timeout: float, what: str,
               interval: float = 1.0) -> None:
    """Run ``check`` (which asserts) until it passes; after ``timeout`` seconds its last
    AssertionError propagates, prefixed by ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: "
                                     f"{exc}") from exc
        time.sleep(interval)
