from hypothesis import given
from hypothesis import strategies as st

from journal.positions import Position, format_lsn, parse_lsn

lsns = st.integers(min_value=0, max_value=2**64 - 1)


@given(lsns)
def test_lsn_text_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_lsn_text_matches_postgresql_notation() -> None:
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert parse_lsn("0/0") == 0


@given(lsns, st.integers(min_value=0, max_value=2**63 - 1))
def test_position_text_and_bytes_round_trip(lsn: int, seq: int) -> None:
    p = Position(lsn, seq)
    assert Position.parse(str(p)) == p
    assert Position.from_bytes(p.to_bytes()) == p


@given(st.lists(st.tuples(lsns, st.integers(min_value=0, max_value=2**63 - 1)), min_size=2))
def test_bytes_order_is_position_order(pairs: list[tuple[int, int]]) -> None:
    positions = [Position(*p) for p in pairs]
    assert sorted(positions) == sorted(positions, key=Position.to_bytes)


def test_garbage_lsn_is_refused_with_the_expected_form() -> None:
    import pytest

    with pytest.raises(ValueError, match="16/B374D848"):
        parse_lsn("yesterday")
