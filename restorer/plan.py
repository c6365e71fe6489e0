"""The restore plan: which packages bring a database to a target, decided from manifests alone.

Pure decisions over data (no I/O): given the manifests of a package store, a target and,
for an incremental restore, the position the target database already reached, choose the
newest full snapshot at or before the target and the continuous chain of segments after
it. Targets follow PostgreSQL's recovery targets: a time stops *before* the first
transaction that committed after it (``recovery_target_time``); an LSN, a transaction id
and a named mark are inclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from journal.errors import RestoreError, RestoreRefused
from journal.events import micros_to_datetime
from journal.positions import Position, format_lsn
from journal.targets import Cutoff, RestoreTarget

TAIL_ID = "journal"  # the journal's tail after the newest package, planned as a segment


@dataclass(frozen=True)
class RestorePlan:
    """The packages to apply, in order, and where to stop inside the last segment.

    ``full`` is None for an incremental restore (the target already holds a state);
    ``start`` is the position the applied state starts from (events at or below it are
    skipped).
    """

    target: RestoreTarget
    full: Any | None  # journal.packages.Manifest
    segments: tuple[Any, ...]
    cutoff: Cutoff
    start: Position | None

    @property
    def package_ids(self) -> tuple[str, ...]:
        head = (self.full.package_id,) if self.full is not None else ()
        return head + tuple(s.package_id for s in self.segments)

    @property
    def manifests(self) -> tuple[Any, ...]:
        return ((self.full,) if self.full is not None else ()) + self.segments

    @property
    def is_noop(self) -> bool:
        return self.full is None and not self.segments


@dataclass(frozen=True)
class Reached:
    """What an incremental restore continues from (read from ``journal_restore_state``)."""

    position: Position
    system_identifier: str
    database: str
    generation: str


def resolve_mark(manifests: Sequence[Any], name: str) -> Position:
    """The position of the mark called ``name`` in the segments' manifests. Two marks of
    that name (written before names were checked, or by two writers at once) are refused:
    which one was meant is not for the restore to guess."""
    found: dict[Position, int] = {}
    for m in manifests:
        for mark_name, position, ts in m.marks:
            if mark_name == name:
                found[position] = ts
    if not found:
        raise RestoreError(f"no mark named {name!r} in the packages "
                           "(journal mark NAME writes one; has it been compacted yet?)")
    if len(found) > 1:
        where = ", ".join(f"{format_lsn(p.commit_lsn)} ({micros_to_datetime(ts).isoformat()})"
                          for p, ts in sorted(found.items()))
        raise RestoreRefused(f"mark {name!r} was written {len(found)} times, at {where}: "
                             "name the one you mean with --to-lsn")
    return next(iter(found))


def make_plan(manifests: Sequence[Any], target: RestoreTarget, *,
              reached: Reached | None = None, xid_lsn: int | None = None) -> RestorePlan:
    """Choose the packages for ``target``.

    ``xid_lsn`` is the commit LSN of the transaction a ``xid`` target names (found by
    scanning segments, which is I/O and so happens outside); ``reached`` makes the plan
    incremental. Raises RestoreError when the packages do not cover the target.
    """
    if not manifests:
        raise RestoreError("the package store holds no packages: run journal compact first")
    cutoff = _cutoff(manifests, target, xid_lsn)
    if reached is not None:
        return _incremental_plan(manifests, target, cutoff, reached)
    full = _choose_full(manifests, target, cutoff)
    segments = _chain(manifests, full, full.to_position, cutoff)
    _check_covered(full, segments, target, cutoff)
    return RestorePlan(target, full, tuple(segments), cutoff, full.to_position)


def _cutoff(manifests: Sequence[Any], target: RestoreTarget, xid_lsn: int | None) -> Cutoff:
    if target.kind == "latest":
        return Cutoff()
    if target.kind == "time":
        assert isinstance(target.value, int)
        return Cutoff(max_commit_ts=target.value)
    if target.kind == "lsn":
        assert isinstance(target.value, int)
        return Cutoff(max_lsn=target.value)
    if target.kind == "mark":
        return Cutoff(max_lsn=resolve_mark(manifests, str(target.value)).commit_lsn)
    if xid_lsn is None:
        raise RestoreError(f"no committed transaction with xid {target.value} in the packages")
    return Cutoff(max_lsn=xid_lsn)


def _same_source(a: Any, b: Any) -> bool:
    return (a.system_identifier, a.database, a.generation) == (
        b.system_identifier, b.database, b.generation)


def _full_fits(full: Any, cutoff: Cutoff) -> bool:
    if cutoff.max_lsn is not None and full.to_position.commit_lsn > cutoff.max_lsn:
        return False
    if cutoff.max_commit_ts is not None and full.last_commit_ts is not None:
        return full.last_commit_ts <= cutoff.max_commit_ts
    return True


def _choose_full(manifests: Sequence[Any], target: RestoreTarget, cutoff: Cutoff) -> Any:
    fulls = [m for m in manifests if m.kind == "full"]
    if not fulls:
        raise RestoreError("no full snapshot package in the store: a restore needs one "
                           "(journal compact writes it)")
    fitting = [m for m in fulls if _full_fits(m, cutoff)]
    if not fitting:
        oldest = min(fulls, key=lambda m: m.to_position)
        raise RestoreError(
            f"target {target} is before the oldest full snapshot "
            f"({oldest.package_id} at {oldest.to_position}"
            f"{_ts_text(oldest.last_commit_ts)}): nothing covers it")
    # newest first; the first whose segment chain reaches the target wins
    return max(fitting, key=lambda m: m.to_position)


def _chain(manifests: Sequence[Any], head: Any, start: Position, cutoff: Cutoff) -> list[Any]:
    """Contiguous segments of ``head``'s source from ``start`` until the cutoff is reached."""
    segments = [m for m in manifests if m.kind == "segment" and _same_source(m, head)]
    chain: list[Any] = []
    position = start
    while True:
        nxt = [s for s in segments
               if s.from_position is not None and s.from_position <= position < s.to_position]
        if not nxt:
            return chain
        seg = max(nxt, key=lambda s: s.to_position)  # longest reach if segments overlap
        chain.append(seg)
        position = seg.to_position
        if _past_cutoff(seg, cutoff):
            return chain


def _past_cutoff(segment: Any, cutoff: Cutoff) -> bool:
    """Whether the segment holds or passes the cutoff, so later segments are not needed."""
    if cutoff.max_lsn is not None and segment.to_position.commit_lsn >= cutoff.max_lsn:
        return True
    return (cutoff.max_commit_ts is not None and segment.last_commit_ts is not None
            and segment.last_commit_ts > cutoff.max_commit_ts)


def _check_covered(head: Any, segments: list[Any], target: RestoreTarget,
                   cutoff: Cutoff) -> None:
    last = segments[-1] if segments else head
    if cutoff.max_lsn is not None and last.to_position.commit_lsn < cutoff.max_lsn:
        raise RestoreError(
            f"target {target} is beyond what the packages cover (up to {last.to_position}): "
            "run journal compact, or restore to an earlier target")
    if cutoff.max_commit_ts is not None:
        newest = max((m.last_commit_ts for m in (head, *segments)
                      if m.last_commit_ts is not None), default=None)
        if newest is None or newest <= cutoff.max_commit_ts:
            # like recovery_target_time: without a later commit we cannot know the
            # packages hold every transaction committed up to the target
            raise RestoreError(
                f"target {target} is beyond what the packages cover (last commit "
                f"{_ts_text(newest) or 'unknown'}, position {last.to_position}): "
                "run journal compact, or restore to an earlier target")


def _incremental_plan(manifests: Sequence[Any], target: RestoreTarget, cutoff: Cutoff,
                      reached: Reached) -> RestorePlan:
    same = [m for m in manifests
            if (m.system_identifier, m.database, m.generation)
            == (reached.system_identifier, reached.database, reached.generation)]
    if not same:
        raise RestoreError(
            "the target was restored from another source or snapshot generation "
            f"({reached.database}, generation {reached.generation}) than any package: "
            "restore into a new database instead")
    if cutoff.max_lsn is not None and cutoff.max_lsn < reached.position.commit_lsn:
        raise RestoreError(f"the target is already at {reached.position}, past {target}: "
                           "a restore cannot go back; restore into a new database")
    newest = max(same, key=lambda m: m.to_position)
    if newest.to_position <= reached.position:
        return RestorePlan(target, None, (), cutoff, reached.position)
    segments = _chain(manifests, same[0], reached.position, cutoff)
    if not segments:
        raise RestoreError(
            f"no segment continues from the target's position {reached.position} "
            "(pruned, or a new snapshot generation started): restore into a new database")
    if cutoff.max_lsn is not None and segments[-1].to_position.commit_lsn < cutoff.max_lsn:
        raise RestoreError(f"target {target} is beyond what the packages cover "
                           f"(up to {segments[-1].to_position})")
    return RestorePlan(target, None, tuple(segments), cutoff, reached.position)


def _ts_text(micros: int | None) -> str:
    return f", committed {micros_to_datetime(micros).isoformat()}" if micros is not None else ""


def find_xid(store: Any, manifests: list[Any], xid: int) -> int | None:
    """Commit LSN of the newest transaction with ``xid`` in the segments (reads them: the
    one planning step that needs the packages' contents)."""
    for m in sorted((m for m in manifests if m.kind == "segment"),
                    key=lambda m: m.to_position, reverse=True):
        if m.package_id == TAIL_ID:  # the journal's tail: its xids were read by the scan
            if xid in m.xids:
                return int(m.xids[xid])
            continue
        with store.open(m.package_id, verify=False) as reader:
            found = [tx.commit_lsn for tx in reader.transactions() if tx.begin.xid == xid]
        if found:
            return max(found)
    return None
