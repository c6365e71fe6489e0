"""One meaning of a row change, whoever holds the rows: the reference state and the
in-memory state verify and subset restores use are the same function, and neither guesses.
No server needed."""

from __future__ import annotations

import pytest

from journal.catalog import Column, TableSchema
from journal.errors import ValidationError
from journal.events import ChangeEvent
from journal.positions import Position
from journal.stream_state import apply_change
from restorer.journal_state import JournalState

DOC = TableSchema("public", "doc", (Column("id", "integer", 23, True),
                                    Column("body", "text", 25)), ("id",))
BAG = TableSchema("public", "bag", (Column("v", "integer", 23),
                                    Column("body", "text", 25)), ())


def _event(op: str, table: TableSchema, before=None, after=None, toast=()) -> ChangeEvent:
    return ChangeEvent(op, "db", table, Position(100, 1), 7, 0, before, after, tuple(toast))


def test_an_unchanged_toast_value_is_taken_from_the_row_it_updates() -> None:
    state = JournalState({"public.doc": ("id",)})
    state.load("public.doc", [{"id": 1, "body": "long text"}])
    state.apply(_event("u", DOC, {"id": 1}, {"id": 2, "body": None}, ["body"]))
    assert state.tables["public.doc"] == {(2,): {"id": 2, "body": "long text"}}


@pytest.mark.parametrize("holder", ["reference", "journal_state"])
def test_an_unchanged_toast_value_of_an_unknown_row_is_an_error_not_a_null(holder: str) -> None:
    event = _event("u", DOC, None, {"id": 5, "body": None}, ["body"])
    with pytest.raises(ValidationError, match="leaves column 'body' unchanged"):
        if holder == "reference":
            apply_change({}, event)
        else:
            JournalState({"public.doc": ("id",)}).apply(event)


def test_a_keyless_change_to_a_row_the_table_does_not_hold_is_an_error() -> None:
    state = JournalState({"public.bag": ()})
    state.load("public.bag", [{"v": 1, "body": "a"}, {"v": 1, "body": "a"}])
    state.apply(_event("d", BAG, before={"v": 1, "body": "a"}))
    assert state.rows("public.bag") == [{"v": 1, "body": "a"}]  # one of the two equal rows
    with pytest.raises(ValidationError, match="changes a row the table does not hold"):
        state.apply(_event("u", BAG, {"v": 9, "body": "x"}, {"v": 10, "body": "x"}))
