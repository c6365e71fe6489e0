"""Reading what the CLI printed: a failure is exactly one ``error:`` line, no traceback."""

from __future__ import annotations


def one_error(output: str) -> str:
    """The single ``error:`` line of ``output`` (fails on a traceback or on several)."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]
