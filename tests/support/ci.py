"""What a test does when something it needs is missing: under CI (which installs all of
it) a failure, elsewhere a skip that says what to install."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
