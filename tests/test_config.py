from pathlib import Path

import pytest

from journal.config import load_config, redact
from journal.errors import ConfigError


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "journal.toml"
    cfg.write_text('[source]\nurl = "postgresql://a@h/db"\nslot = "s1"\n'
                   '[journal]\nurl = "file:///x"\n'
                   '[natural_keys]\n"public.auth_user" = ["username"]\n')
    monkeypatch.setenv("JOURNAL_SLOT", "s2")
    c = load_config(cfg, journal_url="kafka://k:9092")
    assert c.source_url == "postgresql://a@h/db"
    assert c.slot == "s2"
    assert c.journal_url == "kafka://k:9092"
    assert c.natural_keys == {"public.auth_user": ("username",)}


def test_unknown_section_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "journal.toml"
    cfg.write_text("[sorce]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match="sorce"):
        load_config(cfg)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_password_never_appears_in_redacted_url() -> None:
    assert "s3cret" not in redact("postgresql://u:s3cret@h:5432/db")
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_password_comes_from_the_environment_not_the_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_SOURCE_PASSWORD", "pw")
    c = load_config(None, source_url="postgresql://u@h/db")
    assert c.source_conninfo() == {"conninfo": "postgresql://u@h/db", "password": "pw"}


def test_wrong_url_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    c = load_config(None, source_url="mysql://u@h/db")
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        c.source_conninfo()


def test_passwords_are_hidden_in_every_form_a_source_can_be_given() -> None:
    for secret_bearing in ("postgresql://u:p%40ss@h:5432/db",
                           "postgresql://u@h/db?password=p@ss",
                           "host=h password=p@ss dbname=x",
                           "host=h password='p@ss word' dbname=x",
                           "postgresql://u:p@ss@h:notaport/db"):
        shown = redact(secret_bearing)
        assert "p@ss" not in shown and "p%40ss" not in shown, shown
