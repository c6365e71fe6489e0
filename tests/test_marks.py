"""Mark names and the search for an earlier mark: pure logic, no servers."""

from __future__ import annotations

import pytest

from journal.errors import ConfigError
from journal.marks import MarkSeen, check_mark_name, find_mark, marks_in_packages
from journal.positions import Position


@pytest.mark.parametrize("name", ["before-upgrade", "v2.3.1", "release:2026-11-30", "A_1",
                                  "x" * 100])
def test_mark_names_of_letters_digits_and_punctuation_are_accepted(name: str) -> None:
    check_mark_name(name)


@pytest.mark.parametrize("name", ["", " ", "a b", "-x", ".hidden", "x" * 101, "naïve", "a;b",
                                  "a/b", "a\nb", "a\x00"])
def test_empty_long_or_odd_mark_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="mark name .* is not valid"):
        check_mark_name(name)


class _Manifest:
    def __init__(self, package_id: str, marks: tuple) -> None:
        self.package_id, self.marks = package_id, marks


def test_an_earlier_mark_is_found_with_its_package_position_and_time() -> None:
    manifests = [_Manifest("segment-1", (("a", Position(10, 2), 1_700_000_000_000_000),)),
                 _Manifest("segment-2", (("b", Position(20, 1), 1_700_000_100_000_000),))]
    seen = find_mark("b", marks_in_packages(manifests))  # type: ignore[arg-type]
    assert seen == MarkSeen("b", Position(20, 1), 1_700_000_100_000_000, "package segment-2")
    assert "in package segment-2" in seen.describe() and "2023-11-14" in seen.describe()
    assert find_mark("c", marks_in_packages(manifests)) is None  # type: ignore[arg-type]
