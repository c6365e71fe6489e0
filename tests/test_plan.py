"""The restore plan is a pure decision over manifests: tested without any server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from journal.errors import RestoreError, RestoreRefused
from journal.positions import Position
from journal.targets import Cutoff, RestoreTarget
from restorer.plan import Reached, make_plan


@dataclass(frozen=True)
class M:
    """The manifest fields the plan reads."""

    package_id: str
    kind: str
    from_position: Position | None
    to_position: Position
    first_commit_ts: int | None
    last_commit_ts: int | None
    marks: tuple = ()
    system_identifier: str = "sys"
    database: str = "edms"
    generation: str = "g1"


def P(lsn: int) -> Position:
    return Position(lsn, 0)


# full@100 ← s1 (100,200] ← s2 (200,300] ← full@300 ← s3 (300,400]
FULL1 = M("full1", "full", None, P(100), None, 1000)
S1 = M("s1", "segment", P(100), P(200), 1100, 2000)
S2 = M("s2", "segment", P(200), P(300), 2100, 3000, marks=(("release", P(250), 2500),))
FULL2 = M("full2", "full", None, P(300), 1000, 3000)
S3 = M("s3", "segment", P(300), P(400), 3100, 4000, marks=(("release-2", P(350), 3500),))
STORE = [FULL1, S1, S2, FULL2, S3]


def test_latest_uses_newest_full_and_following_segments():
    plan = make_plan(STORE, RestoreTarget())
    assert plan.package_ids == ("full2", "s3")
    assert plan.cutoff == Cutoff()
    assert plan.start == P(300)


def test_time_target_picks_full_before_it_and_segments_until_the_first_later_commit():
    plan = make_plan(STORE, RestoreTarget("time", 2050))
    assert plan.package_ids == ("full1", "s1", "s2")
    assert plan.cutoff == Cutoff(max_commit_ts=2050)


def test_time_target_follows_recovery_target_time_rule():
    cutoff = make_plan(STORE, RestoreTarget("time", 2050)).cutoff
    assert cutoff.includes(150, 2050)  # committed at the target: kept
    assert not cutoff.includes(210, 2051)  # committed after it: the replay stops here


def test_lsn_target_is_inclusive_and_needs_no_later_segment():
    plan = make_plan(STORE, RestoreTarget("lsn", 200))
    assert plan.package_ids == ("full1", "s1")
    assert plan.cutoff.includes(200, 0) and not plan.cutoff.includes(201, 0)


def test_mark_target_resolves_to_the_marks_position():
    plan = make_plan(STORE, RestoreTarget("mark", "release-2"))
    assert plan.cutoff == Cutoff(max_lsn=350)
    assert plan.package_ids == ("full2", "s3")


def test_a_mark_name_written_twice_is_refused_naming_both():
    twice = [*STORE, M("s4", "segment", P(400), P(500), 4100, 5000,
                       marks=(("release-2", P(450), 4500),))]
    with pytest.raises(RestoreRefused, match=r"'release-2' was written 2 times.*--to-lsn"):
        make_plan(twice, RestoreTarget("mark", "release-2"))


def test_unknown_mark_is_refused():
    with pytest.raises(RestoreError, match="no mark named 'nope'"):
        make_plan(STORE, RestoreTarget("mark", "nope"))


def test_xid_target_uses_the_commit_lsn_found_for_it():
    plan = make_plan(STORE, RestoreTarget("xid", 777), xid_lsn=260)
    assert plan.package_ids == ("full1", "s1", "s2")
    assert plan.cutoff == Cutoff(max_lsn=260)
    with pytest.raises(RestoreError, match="no committed transaction with xid 777"):
        make_plan(STORE, RestoreTarget("xid", 777))


def test_target_beyond_coverage_is_refused():
    with pytest.raises(RestoreError, match="beyond what the packages cover"):
        make_plan(STORE, RestoreTarget("lsn", 500))
    with pytest.raises(RestoreError, match="beyond what the packages cover"):
        make_plan(STORE, RestoreTarget("time", 4000))  # no commit after it is known


def test_target_before_oldest_full_is_refused():
    with pytest.raises(RestoreError, match="before the oldest full snapshot"):
        make_plan(STORE, RestoreTarget("lsn", 50))


def test_missing_segment_breaks_the_chain():
    with pytest.raises(RestoreError, match="beyond what the packages cover"):
        make_plan([FULL1, S2], RestoreTarget("lsn", 250))


def test_segments_of_another_generation_are_not_chained():
    other = M("o", "segment", P(100), P(200), 1100, 2000, generation="g2")
    with pytest.raises(RestoreError):
        make_plan([FULL1, other], RestoreTarget("lsn", 200))


def test_incremental_continues_from_reached_position():
    reached = Reached(P(200), "sys", "edms", "g1")
    plan = make_plan(STORE, RestoreTarget(), reached=reached)
    assert plan.full is None
    assert plan.package_ids == ("s2", "s3")
    assert plan.start == P(200)


def test_incremental_from_inside_a_segment_starts_with_that_segment():
    reached = Reached(Position(250, 3), "sys", "edms", "g1")
    plan = make_plan(STORE, RestoreTarget("lsn", 300), reached=reached)
    assert plan.package_ids == ("s2",)


def test_incremental_at_the_newest_position_is_a_noop():
    plan = make_plan(STORE, RestoreTarget(), reached=Reached(P(400), "sys", "edms", "g1"))
    assert plan.is_noop


def test_incremental_cannot_go_back():
    with pytest.raises(RestoreError, match="cannot go back"):
        make_plan(STORE, RestoreTarget("lsn", 150), reached=Reached(P(200), "sys", "edms", "g1"))


def test_incremental_from_another_generation_is_refused():
    with pytest.raises(RestoreError, match="another source"):
        make_plan(STORE, RestoreTarget(), reached=Reached(P(200), "sys", "edms", "g9"))


def test_empty_store_is_refused():
    with pytest.raises(RestoreError, match="no packages"):
        make_plan([], RestoreTarget())
