"""Every job leaves one line in the audit trail, and no password ever lands there."""

from pathlib import Path

from click.testing import CliRunner

from journal import audit
from journal.cli import main


def test_each_job_is_recorded_with_its_outcome_and_without_secrets(tmp_path: Path) -> None:
    env = {"JOURNAL_CONFIG": str(tmp_path / "absent.toml"),
           "JOURNAL_STATE_DIR": str(tmp_path / "state"),
           "JOURNAL_PACKAGES_URL": f"file://{tmp_path}/packages"}
    runner = CliRunner()
    listed = runner.invoke(main, ["packages", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    refused = runner.invoke(main, ["restore", "--target", "postgresql://u:hunter2@127.0.0.1:1/x",
                                   "--to", "yesterday"], env=env)
    assert refused.exit_code == 2
    runner.invoke(main, ["restore", "--help"], env=env)

    entries = audit.entries(tmp_path / "state")
    assert [(e["command"], e["outcome"]) for e in entries] == [
        ("packages", "ok"), ("restore", "exit 2")]
    text = (tmp_path / "state" / audit.FILE).read_text()
    assert "hunter2" not in text and "postgresql://u:***@127.0.0.1:1/x" in text
    assert "yesterday" in entries[1]["detail"]
