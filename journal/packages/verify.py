"""Verifying packages: one package through every stage, a chain of packages, a store.

A package is verified in stages: structure and names, sizes, manifest schema and id,
SHA-256 of every member, every record decodes. ``verify_chain`` then checks that a set of
packages forms continuous chains, one per generation: no gaps, no overlaps, no missing
parents. ``verify_store`` does both for everything a store holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from journal.catalog import Catalog
from journal.errors import ChainBroken, ValidationError
from journal.packages.manifest import Manifest, positions_sort_key
from journal.packages.reader import PackageSource, as_source, open_package, read_layout

if TYPE_CHECKING:
    from journal.packages.store import PackageStore


def verify_package(path: Path | PackageSource, *, decode: bool = True) -> Manifest:
    """Every stage: structure and names, sizes, manifest schema and id, SHA-256 of every
    member, every record decodes (and a segment's records form whole transactions), and
    the manifest's catalog is a well-formed one.

    ``decode=False`` stops after the SHA-256 of every member: the bytes are proven to be
    the ones the manifest (whose id is derived from its content) describes, at the cost of
    reading them once. What only decoding would find -- a record that does not decode, a
    segment that breaks the stream contract -- a reader finds too, as it reads: a restore
    meets it inside its single target transaction, which then rolls back. ``journal
    packages verify`` runs every stage.
    """
    if not decode:
        return read_layout(as_source(path), hash_members=True)[0]
    manifest = open_package(path, verify=True).manifest
    if manifest.catalog:  # what a restore or a fold parses before it writes
        try:
            Catalog.parse(manifest.catalog)
        except ValidationError as exc:
            raise ValidationError(f"package {manifest.package_id}: its manifest's {exc}"
                                  ) from exc
    return manifest


@dataclass(frozen=True)
class Check:
    """One line of a store's verification: a package, or the chain the packages form."""

    subject: str  # a package id, or the chain
    problem: str | None = None  # what failed; None when the check passed
    manifest: Manifest | None = None  # of a package that passed

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_store(store: PackageStore) -> Iterator[Check]:
    """Every package the store holds, through every stage of ``verify_package`` (one
    package failing does not stop the others), then the chain the good ones form.

    Works through the store interface alone, so every kind of store is checked the same
    way; a package whose manifest does not even parse is reported, not skipped.
    """
    good: list[Manifest] = []
    for package_id in store.ids():
        try:
            manifest = store.verify(package_id)
        except ValidationError as exc:
            yield Check(package_id, str(exc))
            continue
        good.append(manifest)
        yield Check(package_id, manifest=manifest)
    try:
        verify_chain(good)
    except ValidationError as exc:
        yield Check("chain", str(exc))
        return
    yield Check(f"chain of {len(good)} packages")


def verify_chain(manifests: Sequence[Manifest]) -> None:
    """Check that packages form continuous chains, one per generation.

    Within a generation the segments must follow each other without gap or overlap, each
    naming the previous one as parent; the first segment must start at a full snapshot of
    the set (or follow its parent, when that is in the set); every full snapshot must sit
    on the chain. Raises ChainBroken naming the packages and positions involved.
    """
    if not manifests:
        return
    sources = {(m.system_identifier, m.database) for m in manifests}
    if len(sources) > 1:
        raise ChainBroken(f"packages of different sources in one chain: {sorted(sources)}")
    by_generation: dict[str, list[Manifest]] = {}
    for m in manifests:
        by_generation.setdefault(m.generation, []).append(m)
    for generation, group in by_generation.items():
        _verify_generation(generation, sorted(group, key=positions_sort_key))


def _verify_generation(generation: str, group: list[Manifest]) -> None:
    ids = {m.package_id for m in group}
    if len(ids) != len(group):
        raise ChainBroken(f"generation {generation}: a package is listed twice")
    fulls = [m for m in group if m.kind == "full"]
    segments = [m for m in group if m.kind == "segment"]
    for prev, seg in zip(segments, segments[1:], strict=False):
        assert seg.from_position is not None
        if seg.from_position > prev.to_position:
            raise ChainBroken(f"gap: {prev.package_id} ends at {prev.to_position} but the "
                              f"next segment {seg.package_id} starts after {seg.from_position}")
        if seg.from_position < prev.to_position:
            raise ChainBroken(f"overlap: {seg.package_id} starts after {seg.from_position}, "
                              f"inside {prev.package_id} which ends at {prev.to_position}")
        if seg.parent_id != prev.package_id:
            raise ChainBroken(f"segment {seg.package_id} names parent {seg.parent_id}, but "
                              f"the package before it is {prev.package_id}")
    if not segments:
        return
    first, last = segments[0], segments[-1]
    bases = [f for f in fulls if f.to_position == first.from_position]
    if not bases:
        raise ChainBroken(f"missing parent: segment {first.package_id} starts after "
                          f"{first.from_position} but no full snapshot in the set is at that "
                          f"position (its parent {first.parent_id} is not there)")
    if first.parent_id not in {b.package_id for b in bases} | {b.parent_id for b in bases}:
        raise ChainBroken(f"segment {first.package_id} names parent {first.parent_id}, which "
                          f"is not the full snapshot at {first.from_position}")
    ends = {s.to_position for s in segments} | {first.from_position}
    for f in fulls:
        if f.to_position < first.from_position:
            continue  # an older base, not needed by these segments
        if f.to_position > last.to_position or f.to_position not in ends:
            raise ChainBroken(f"full snapshot {f.package_id} at {f.to_position} is not on the "
                              f"chain of segments ({first.from_position} .. {last.to_position})")


