"""Retention policies (Barman's): pure decisions over the catalogue of packages.

``REDUNDANCY n`` keeps the newest n full snapshots and everything after the oldest of
them. ``RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`` keeps whatever restoring any point of
the window needs: the newest full snapshot committed at or before the window's start
(its base) and everything after it. Leased packages are always kept. No I/O here: the
command lists the store and deletes what ``decide`` calls obsolete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from journal.errors import ConfigError
from journal.packages import Manifest, positions_sort_key

_UNITS = {"DAY": 1, "DAYS": 1, "WEEK": 7, "WEEKS": 7, "MONTH": 31, "MONTHS": 31}


@dataclass(frozen=True)
class Policy:
    redundancy: int | None = None
    window: timedelta | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text


def parse_policy(text: str) -> Policy:
    """``REDUNDANCY 2`` or ``RECOVERY WINDOW OF 30 DAYS`` (case-insensitive); a month
    counts as 31 days, so a window never ends up shorter than asked for."""
    words = text.strip().upper().split()
    if len(words) == 2 and words[0] == "REDUNDANCY" and words[1].isdigit() and int(words[1]) > 0:
        return Policy(redundancy=int(words[1]), text=" ".join(words))
    m = re.fullmatch(r"RECOVERY WINDOW OF (\d+) (DAYS?|WEEKS?|MONTHS?)", " ".join(words))
    if m and int(m.group(1)) > 0:
        return Policy(window=timedelta(days=int(m.group(1)) * _UNITS[m.group(2)]),
                      text=" ".join(words))
    raise ConfigError(f"retention policy {text!r} is not 'REDUNDANCY n' or "
                      "'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS'")


@dataclass(frozen=True)
class Decision:
    keep: tuple[str, ...]
    obsolete: tuple[str, ...]
    reasons: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"keep": list(self.keep), "obsolete": list(self.obsolete),
                "reasons": dict(self.reasons)}


def decide(policy: Policy, manifests: list[Manifest], *, now_us: int,
           leased: set[str] | frozenset[str] = frozenset()) -> Decision:
    """Which packages the policy keeps and which are obsolete. Applied per source
    (system identifier and database): positions only order packages of one source."""
    reasons: dict[str, str] = {}
    by_source: dict[tuple[str, str], list[Manifest]] = {}
    for m in manifests:
        by_source.setdefault((m.system_identifier, m.database), []).append(m)
    for group in by_source.values():
        group.sort(key=positions_sort_key)
        reasons.update(_decide_source(policy, group, now_us))
    for pid in leased:
        if reasons.get(pid, "").startswith("obsolete"):
            reasons[pid] = "kept: leased by a running restore or export"
    keep = tuple(m.package_id for m in manifests if not reasons[m.package_id].startswith("obs"))
    obsolete = tuple(m.package_id for m in manifests if reasons[m.package_id].startswith("obs"))
    return Decision(keep, obsolete, reasons)


def _decide_source(policy: Policy, group: list[Manifest], now_us: int) -> dict[str, str]:
    fulls = [m for m in group if m.kind == "full"]
    if not fulls:
        return {m.package_id: "kept: no full snapshot yet" for m in group}
    if policy.redundancy is not None:
        kept_fulls = fulls[-policy.redundancy:]
        oldest = kept_fulls[0]
        why = f"REDUNDANCY {policy.redundancy}"
    else:
        assert policy.window is not None
        start = now_us - int(policy.window.total_seconds() * 1_000_000)
        before = [f for f in fulls if f.last_commit_ts is not None and f.last_commit_ts <= start]
        oldest = before[-1] if before else fulls[0]
        why = f"base of the window starting {start} µs"
    # the oldest kept base and everything after it, in the same chain or newer ones
    reasons = {}
    for m in group:
        if m.package_id == oldest.package_id:
            reasons[m.package_id] = f"kept: oldest base ({why})"
        elif _after(m, oldest):
            reasons[m.package_id] = "kept: at or after the oldest kept base"
        else:
            reasons[m.package_id] = f"obsolete: before the oldest kept base {oldest.package_id}"
    return reasons


def _after(m: Manifest, base: Manifest) -> bool:
    if m.kind == "segment":
        assert m.from_position is not None
        return m.from_position >= base.to_position
    return m.to_position >= base.to_position
