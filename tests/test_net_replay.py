"""A restore that folds each row's net change equals one that replays every transaction in
turn, and both equal the source as it was at the target.

Against the real PostgreSQL 18: ``journal capture`` reads a seeded random workload
(``tests.support.workloads``: keys that updates move and swap, unchanged TOAST, unique
values swapped, a deferred foreign-key cycle, deletes and re-inserts of one key, TRUNCATE,
equal rows without a primary key) into a file journal; ``journal compact`` packages it
into a full snapshot, segments, a second full snapshot folded on demand and a segment
after it, and the newest transactions stay in the journal only. At chosen transactions
the source's rows were read with SQL (the oracle) together with the ways to name that
point: an LSN, a time, a transaction id, a mark. Every target is restored twice, with
``replay="net"`` and ``replay="ordered"``, into databases of their own; then chains of
incremental restores walk the same history.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from journal.cli import main
from journal.config import Config
from journal.errors import RestoreError
from journal.events import ChangeEvent
from producers.capture import run_capture
from restorer import folded, net_apply
from restorer.report import RestoreReport
from restorer.restore import RestoreOptions, restore
from tests.support.capture import capture_config, cli_env, database_of, read_records
from tests.support.databases import scratch_database
from tests.support.workloads import Point, Rows, Workload, die_in_worker, difference, rows

pytestmark = pytest.mark.integration

# a history each, shared by the module's tests: (seed, keyed) -- a keyed workload holds
# only changes a restore applies key by key to the snapshot's rows; the others hold
# keyless tables and key moves with unchanged TOAST too, where the tables are rewritten
HISTORIES = ((10, False), (11, False), (12, True))
# per phase: transactions, then what compact makes of them (None: the journal keeps them)
PHASES: list[tuple[int, tuple[str, ...] | None]] = [
    (70, ("--once",)), (70, ("--once",)), (60, ("--once", "--snapshot")), (60, ("--once",)),
    (40, None)]


@dataclass
class Target:
    """A restore target, the options that name it, and the source's rows there."""

    name: str
    options: dict[str, Any]
    rows: Rows


@dataclass
class History:
    seed: int
    keyed: bool
    cfg: Config
    server: str
    targets: dict[str, Target]

    def restore(self, url: str, target: Target, **kw: Any) -> RestoreReport:
        return restore(RestoreOptions(target_url=url, packages_url=self.cfg.packages_url,
                                      journal_url=self.cfg.journal_location(),
                                      **target.options, **kw))


def _compact(env: dict[str, str], args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, ["compact", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


# name, the restore option, the point it names (and which of the point's values), and
# the point whose rows the source had there (the same, but for the LSN just below a commit)
_TARGETS: list[tuple[str, str | None, str, str, str]] = [
    ("after the snapshot", "to_lsn", "snapshot", "lsn", "snapshot"),  # no change yet
    ("first segment, by lsn", "to_lsn", "p1a", "lsn", "p1a"),
    ("first segment, by time", "to_time", "p1b", "time", "p1b"),
    ("second segment, by xid", "to_xid", "p2a", "xid", "p2a"),
    ("second segment, by mark", "to_mark", "p2b", "mark", "p2b"),
    ("just before a commit", "to_lsn", "boundary+1", "below_commit", "boundary"),
    ("exactly at a commit (xid)", "to_xid", "boundary+1", "xid", "boundary+1"),
    ("third segment, by lsn", "to_lsn", "p3a", "lsn", "p3a"),
    ("end of the folded snapshot", "to_lsn", "p3end", "lsn", "p3end"),
    ("after the folded snapshot, by time", "to_time", "p4a", "time", "p4a"),
    ("after the folded snapshot, by xid", "to_xid", "p4b", "xid", "p4b"),
    ("in the journal's tail", "to_lsn", "p5a", "lsn", "p5a"),
    ("in the journal's tail, by mark", "to_mark", "p5b", "mark", "p5b"),
    ("latest", None, "latest", "", "latest"),
]
TARGET_NAMES = [spec[0] for spec in _TARGETS]


def _targets(points: dict[str, Point]) -> dict[str, Target]:
    return {name: Target(name, {option: getattr(points[at], value)} if option else {},
                         points[rows_at].rows)
            for name, option, at, value, rows_at in _TARGETS}


def _run_history(server: str, tmp: Path, seed: int, keyed: bool) -> Iterator[History]:
    with scratch_database(server, "src") as source:
        workload = Workload(source, seed, keyed)
        workload.create()
        cfg = capture_config(source, tmp, packages_url=f"file://{tmp}/packages")
        env = cli_env(cfg, cfg.packages_url, tmp)
        run_capture(cfg, once_until_idle=1.0)  # the snapshot
        points = {"snapshot": workload.here()}
        # which transactions of each phase are recorded, and under what name
        rng = workload.rng
        boundary = 70 + 35  # inside the second segment
        chosen = {boundary: "boundary", boundary + 1: "boundary+1", 200: "p3end"}
        start = 0
        for phase, (count, _) in enumerate(PHASES, 1):
            free = [i for i in range(start + 1, start + count) if i not in chosen]
            picks = sorted(rng.sample(free, 2))
            chosen.update({picks[0]: f"p{phase}a", picks[1]: f"p{phase}b"})
            start += count
        for count, compact in PHASES:
            for _ in range(count):
                name = chosen.get(workload.count + 1)
                point = workload.transaction(record=name is not None,
                                             mark=name if name in ("p2b", "p5b") else None)
                if point is not None and name is not None:
                    points[name] = point
            run_capture(cfg, once_until_idle=1.0)
            if compact is not None:
                _compact(env, compact)
        points["latest"] = workload.here()
        yield History(seed, keyed, cfg, server, _targets(points))


@pytest.fixture(scope="module", params=HISTORIES,
                ids=lambda h: f"seed{h[0]}{'-keyed' if h[1] else ''}")
def history(pg18_server: str, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[History]:
    yield from _run_history(pg18_server, tmp_path_factory.mktemp("net-replay"),
                            *request.param)




def _says(history: History, target: Target, how: str) -> str:
    return f"seed {history.seed}, target {target.name!r} ({target.options}), {how}"


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_net_change_restore_equals_ordered_replay_and_the_source_at_the_target(
        history: History, name: str) -> None:
    target = history.targets[name]
    with (scratch_database(history.server, "net") as net_url,
          scratch_database(history.server, "ord") as ordered_url):
        net_report = history.restore(net_url, target, replay="net")
        ordered_report = history.restore(ordered_url, target, replay="ordered")
        net, ordered = rows(net_url), rows(ordered_url)
    assert net == target.rows, _says(history, target, "net restore != source:\n"
                                     + difference(target.rows, net))
    assert ordered == target.rows, _says(history, target, "ordered replay != source:\n"
                                         + difference(target.rows, ordered))
    assert net == ordered
    assert ordered_report.transactions_replayed == net_report.transactions_replayed, \
        _says(history, target, "the two restores replayed different transactions")
    if net_report.transactions_replayed:
        assert net_report.replay == "net changes", _says(history, target, net_report.summary())
        assert ordered_report.replay == "ordered", _says(history, target, ordered_report.summary())
        # both ways of applying net changes are exercised: set-wise on the snapshot's
        # rows where that is exact, tables rewritten merged with them where it is not
        if history.keyed:
            assert net_report.net_rewrite == "", _says(history, target, net_report.summary())
        elif name == "latest":
            assert net_report.net_rewrite, _says(history, target, net_report.summary())


def _hard_cases(events: list[ChangeEvent]) -> Counter[str]:
    """How often the journal holds each change the net fold must get right."""
    seen: Counter[str] = Counter()
    deleted: set[tuple[str, Any]] = set()
    by_xid: dict[int, list[ChangeEvent]] = {}
    for e in events:
        by_xid.setdefault(e.xid, []).append(e)
        t = e.table.name
        if e.op == "t":
            seen["truncate"] += 1
        elif e.op == "u" and t != "bag" and e.before and e.before["id"] != e.after["id"]:
            seen[f"{t}: key moved" + (", TOAST unchanged" if e.unchanged_toast else "")] += 1
        elif e.op == "u" and e.unchanged_toast:
            seen[f"{t}: TOAST unchanged"] += 1
        elif e.op == "c" and t != "bag" and (t, e.after["id"]) in deleted:
            seen["a deleted key inserted again"] += 1
        if e.op == "d" and t != "bag":
            deleted.add((t, e.before["id"]))
    for changes in by_xid.values():
        ops = [(e.op, e.table.name) for e in changes]
        if ops.count(("u", "seat")) >= 3:
            seen["unique values passed round"] += 1
        if ("c", "ring_a") in ops and ("c", "ring_b") in ops:
            seen["a cycle inserted"] += 1
        if ("d", "ring_a") in ops and ("d", "ring_b") in ops:
            seen["a cycle deleted"] += 1
        if ("d", "bag") in ops or ("u", "bag") in ops:
            seen["a keyless row changed"] += 1
    return seen


def test_the_history_holds_every_hard_case(history: History) -> None:
    """The equivalence above is only worth what the journal holds: each case is there."""
    records = read_records(history.cfg, database_of(history.cfg.source_url))
    seen = _hard_cases([r for r in records if isinstance(r, ChangeEvent) and not r.snapshot])
    wanted = ["truncate", "account: key moved", "doc: TOAST unchanged",
              "a deleted key inserted again", "unique values passed round",
              "a cycle inserted", "a cycle deleted"]
    if not history.keyed:
        wanted += ["doc: key moved, TOAST unchanged", "bag: TOAST unchanged",
                   "a keyless row changed"]
    assert all(seen[case] >= 3 for case in wanted), (history.seed, seen)


@pytest.mark.parametrize(("steps", "replay"), [
    (("first segment, by lsn", "after the folded snapshot, by time", "latest"), "net"),
    (("after the snapshot", "just before a commit", "exactly at a commit (xid)",
      "in the journal's tail", "latest"), "net"),
    (("first segment, by time", "third segment, by lsn", "latest"), "ordered"),
])
def test_incremental_restores_reach_the_source_at_each_step(
        history: History, steps: tuple[str, ...], replay: str) -> None:
    net_reasons: list[str] = []
    with scratch_database(history.server, "inc") as url:
        for i, name in enumerate(steps):
            target = history.targets[name]
            report = history.restore(url, target, incremental=i > 0, replay=replay)
            got = rows(url)
            net_reasons.append(report.net_rewrite)
            assert got == target.rows, _says(
                history, target, f"step {i + 1} of {steps} ({replay}) != source:\n"
                + difference(target.rows, got))
            if history.keyed and replay == "net" and i > 0 and report.transactions_replayed:
                # set-wise: rows that swapped unique values are replayed in order alone
                assert report.replay == "net changes", _says(history, target,
                                                             report.summary())
    print(history.seed, steps, net_reasons)


@pytest.mark.parametrize("replay", ["net", "ordered"])
def test_the_cli_restores_to_a_mark_with_either_replay(history: History, replay: str) -> None:
    target = history.targets["second segment, by mark"]
    env = cli_env(history.cfg, history.cfg.packages_url, Path(history.cfg.state_dir).parent)
    with scratch_database(history.server, "cli") as url:
        result = CliRunner().invoke(main, ["restore", "--target", url, "--to-mark",
                                           target.options["to_mark"], "--replay", replay],
                                    env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert f"replayed ({'net changes' if replay == 'net' else 'ordered'})" in result.output
        got = rows(url)
    assert got == target.rows, _says(history, target, f"CLI, {replay}:\n"
                                     + difference(target.rows, got))


def _ring_ids(url: str) -> dict[str, list[Any]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(sql.SQL("SELECT id, {} FROM {} ORDER BY id").format(
            sql.Identifier(ref), sql.Identifier(t))).fetchall()
            for t, ref in (("ring_a", "b_id"), ("ring_b", "a_id"))}


def test_a_deferred_foreign_key_cycle_not_null_on_both_sides_restores_into_an_empty_database(
        pg18_server: str, tmp_path: Path) -> None:
    """Rows of a DEFERRABLE INITIALLY DEFERRED cycle load in any order inside the one
    restore transaction (and an empty target gets its foreign keys after the rows), so
    no column of the cycle needs to be nullable."""
    with scratch_database(pg18_server, "src") as source:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE ring_a (id int PRIMARY KEY, b_id int NOT NULL);"
                "CREATE TABLE ring_b (id int PRIMARY KEY, a_id int NOT NULL);"
                "ALTER TABLE ring_a ADD FOREIGN KEY (b_id) REFERENCES ring_b "
                "DEFERRABLE INITIALLY DEFERRED;"
                "ALTER TABLE ring_b ADD FOREIGN KEY (a_id) REFERENCES ring_a "
                "DEFERRABLE INITIALLY DEFERRED;"
                "BEGIN; INSERT INTO ring_a VALUES (1, 1), (2, 2); "
                "INSERT INTO ring_b VALUES (1, 1), (2, 2); COMMIT")
        cfg = capture_config(source, tmp_path, packages_url=f"file://{tmp_path}/packages")
        run_capture(cfg, once_until_idle=1.0)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("BEGIN; DELETE FROM ring_a WHERE id = 1; DELETE FROM ring_b WHERE id = 1;"
                         "INSERT INTO ring_a VALUES (3, 3); INSERT INTO ring_b VALUES (3, 3); "
                         "COMMIT")
        expected = _ring_ids(source)
        run_capture(cfg, once_until_idle=1.0)
        _compact(cli_env(cfg, cfg.packages_url, tmp_path), ("--once",))
        for replay in ("net", "ordered"):
            with scratch_database(pg18_server, "dst") as target:
                restore(RestoreOptions(target_url=target, packages_url=cfg.packages_url,
                                       replay=replay))
                assert _ring_ids(target) == expected, replay


@pytest.mark.parametrize("name", ["third segment, by lsn", "latest"])
def test_changes_read_in_a_worker_process_restore_the_source(
        history: History, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a history this small is read in the restore's own process unless told otherwise
    monkeypatch.setattr("restorer.folded.WORKER_RECORDS", 0)
    sent: list[Any] = []  # the stages the worker wrote as COPY text, sent as they are
    init = net_apply.Staged.__init__

    def spy(self: Any, conn: Any, table: Any, changes: Any, number: int = 0) -> None:
        if isinstance(changes, net_apply.StageText):
            sent.append(changes)
        init(self, conn, table, changes, number)

    monkeypatch.setattr(net_apply.Staged, "__init__", spy)
    target = history.targets[name]
    with scratch_database(history.server, "worker") as url:
        report = history.restore(url, target)
        got = rows(url)
    assert got == target.rows, _says(history, target, "worker:\n"
                                     + difference(target.rows, got))
    assert report.replay == "net changes" and report.transactions_replayed > 0
    # inside the packages, changes applied to the snapshot come staged by the worker (the
    # journal's tail, read by the restore, and rewritten tables need none)
    assert bool(sent) == (name != "latest" and not report.net_rewrite), report.net_rewrite


def test_a_worker_that_dies_is_replaced_by_reading_the_changes_in_the_restore(
        history: History, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("restorer.folded.WORKER_RECORDS", 0)
    monkeypatch.setattr("restorer.folded._collect_in_worker", die_in_worker)
    target = history.targets["latest"]
    with scratch_database(history.server, "died") as url:
        report = history.restore(url, target)
        got = rows(url)
    assert got == target.rows, _says(history, target, "after the worker died:\n"
                                     + difference(target.rows, got))
    assert report.transactions_replayed > 0
    assert "ended without an answer (exit code 3)" in caplog.text


def _incremental_after(server: str, tmp_path: Path, schema: str, changes: list[str],
                       table: str, order: str, on_target: str | None = None,
                       after: str = "SELECT 1") -> tuple[Any, list[Any], list[Any], list[Any]]:
    """``schema`` captured and restored into an empty database, then ``changes`` (each a
    statement, or a transaction) captured and restored incrementally (after ``on_target``
    ran on the target): the report (or the restore's error), the target's rows of
    ``table`` and the source's (ordered by ``order``), and the rows of the query ``after``
    on the target."""
    query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(table),
                                                             sql.SQL(order))
    with scratch_database(server, "src") as source:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(schema)
        cfg = capture_config(source, tmp_path, packages_url=f"file://{tmp_path}/packages")
        env = cli_env(cfg, cfg.packages_url, tmp_path)
        run_capture(cfg, once_until_idle=1.0)
        _compact(env, ("--once",))
        with scratch_database(server, "dst") as target:
            restore(RestoreOptions(target_url=target, packages_url=cfg.packages_url))
            with psycopg.connect(source, autocommit=True) as conn:
                for change in changes:
                    conn.execute(change)
                expected = conn.execute(query).fetchall()
            run_capture(cfg, once_until_idle=1.0)
            _compact(env, ("--once",))
            with psycopg.connect(target, autocommit=True) as conn:
                if on_target is not None:
                    conn.execute(on_target)
                try:
                    report: Any = restore(RestoreOptions(
                        target_url=target, packages_url=cfg.packages_url, incremental=True))
                except RestoreError as exc:
                    report = exc
                return (report, conn.execute(query).fetchall(), expected,
                        conn.execute(after).fetchall())


SEATS = ("CREATE TABLE seat (id int PRIMARY KEY, code text NOT NULL UNIQUE, note text);"
         "INSERT INTO seat SELECT g, 'c' || g, 'n' FROM generate_series(1, {}) g")


def test_rows_that_exchange_unique_values_are_replayed_in_order_the_others_set_wise(
        pg18_server: str, tmp_path: Path) -> None:
    """An incremental restore into a target whose unique index is not deferrable: the
    rows that pass their codes round are replayed event by event (set-wise, each would
    meet another's old code), every other row is written set-wise, and the report counts
    the rows replayed in order."""
    # 1, 2 and 3 pass their codes round through a spare one; 4 takes a code 5 gives up in
    # an earlier transaction; 10..19 change as nothing else
    report, got, expected, _ = _incremental_after(pg18_server, tmp_path, SEATS.format(50), [
        "BEGIN; UPDATE seat SET code = 'spare' WHERE id = 1;"
        " UPDATE seat SET code = 'c1' WHERE id = 2; UPDATE seat SET code = 'c2' WHERE id = 3;"
        " UPDATE seat SET code = 'c3', note = 'moved' WHERE id = 1; COMMIT",
        "UPDATE seat SET code = 'c5-old' WHERE id = 5",
        "UPDATE seat SET code = 'c5', note = 'took 5' WHERE id = 4",
        "UPDATE seat SET note = 'plain ' || id WHERE id BETWEEN 10 AND 19",
        "DELETE FROM seat WHERE id = 20",
        "INSERT INTO seat VALUES (51, 'c51', 'new')"], "seat", "id")
    assert got == expected
    assert report.replay == "net changes", report.summary()
    assert report.ordered_rows == 5, report.summary()  # 1, 2, 3, 4 and 5
    assert report.ordered_events == 6, report.summary()
    counts = report.tables["public.seat"]
    # ten rows set-wise, and the six updates of the rows replayed in order
    assert (counts.inserted, counts.updated, counts.deleted) == (1, 16, 1), report.summary()
    assert "5 row(s) that exchanged unique values replayed in order" in report.summary()


@pytest.mark.parametrize("grow", [16, 0], ids=["grown", "limit"])
def test_a_row_in_the_way_of_an_exchange_is_replayed_in_order_with_it(
        pg18_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grow: int) -> None:
    """1 and 2 exchange codes through 'spare', which 3 takes afterwards: replayed alone
    after 3 is written set-wise, 1's way through 'spare' meets 3's final code, so 3 is
    set aside too and the three rows' events replayed in the source's order (3 takes
    'spare' after 1 gave it up). With no room to grow the rows set aside, the range is
    replayed in order, and the report says why; never written otherwise than the source."""
    monkeypatch.setattr(folded, "GROW_ASIDE", grow)
    report, got, expected, _ = _incremental_after(pg18_server, tmp_path, SEATS.format(5), [
        "BEGIN; UPDATE seat SET code = 'spare' WHERE id = 1;"
        " UPDATE seat SET code = 'c1' WHERE id = 2;"
        " UPDATE seat SET code = 'c2' WHERE id = 1; COMMIT",
        "UPDATE seat SET code = 'spare' WHERE id = 3",
        "UPDATE seat SET note = 'plain' WHERE id = 4"], "seat", "id")
    assert got == expected
    counts = report.tables["public.seat"]
    if grow:
        assert report.replay == "net changes", report.summary()
        assert (report.ordered_rows, report.ordered_events) == (3, 4), report.summary()
        # 4 set-wise, and the four updates of the rows replayed in order
        assert (counts.inserted, counts.updated, counts.deleted) == (0, 5, 0), report.summary()
    else:
        assert report.replay == "ordered", report.summary()
        assert "met a value another row holds now" in report.net_rewrite, report.summary()
        assert report.ordered_rows == 0, report.summary()
        assert (counts.inserted, counts.updated, counts.deleted) == (0, 5, 0), report.summary()


def test_an_exchange_by_a_row_that_also_moves_its_key_is_replayed_whole_in_order(
        pg18_server: str, tmp_path: Path) -> None:
    """1 and 2 exchange codes, and 1 moves to id 0 on the way (written before 2, set-wise
    it meets 2's old code): its events cannot be replayed alone under one key, so the
    range is replayed in order, saying why."""
    report, got, expected, _ = _incremental_after(pg18_server, tmp_path, SEATS.format(5), [
        "BEGIN; UPDATE seat SET code = 'spare' WHERE id = 1;"
        " UPDATE seat SET code = 'c1' WHERE id = 2;"
        " UPDATE seat SET code = 'c2', id = 0 WHERE id = 1; COMMIT"], "seat", "id")
    assert got == expected
    assert report.replay == "ordered", report.summary()
    assert "also changed its primary key" in report.net_rewrite, report.summary()


def test_an_exchange_between_rows_of_a_composite_key_is_replayed_in_order(
        pg18_server: str, tmp_path: Path) -> None:
    report, got, expected, _ = _incremental_after(pg18_server, tmp_path, (
        "CREATE TABLE slot (a int, b text, code text NOT NULL UNIQUE, PRIMARY KEY (a, b));"
        "INSERT INTO slot SELECT g % 3, 'b' || g, 'c' || g FROM generate_series(1, 9) g"), [
        "BEGIN; UPDATE slot SET code = 'x' WHERE b = 'b1';"
        " UPDATE slot SET code = 'c1' WHERE b = 'b2';"
        " UPDATE slot SET code = 'c2' WHERE b = 'b1'; COMMIT",
        "UPDATE slot SET code = code || '!' WHERE b = 'b5'"], "slot", "a, b")
    assert got == expected
    assert report.replay == "net changes", report.summary()
    assert (report.ordered_rows, report.ordered_events) == (2, 3), report.summary()


# a body stored out of line, which updates of the other columns leave unchanged (TOAST)
DOCS = ("CREATE TABLE doc (id int PRIMARY KEY, parent int REFERENCES doc, title text, body text);"
        "INSERT INTO doc SELECT g, NULL, 't' || g, (SELECT string_agg(md5(g::text || i::text),"
        " '') FROM generate_series(1, 400) i) FROM generate_series(1, 5) g")


def test_rows_that_keep_unchanged_toast_are_updated_in_place_after_the_other_rows(
        pg18_server: str, tmp_path: Path) -> None:
    """Net changes where updates leave a TOASTed body unchanged: those rows are updated in
    the target where they are, after the table's other rows are written (1 comes to
    reference 6, inserted in the same range), and their bodies are not written again:
    the target's value keeps its TOAST chunk."""
    report, got, expected, kept = _incremental_after(pg18_server, tmp_path, DOCS, [
        "INSERT INTO doc VALUES (6, NULL, 'new', 'short')",
        "UPDATE doc SET title = 'moved', parent = 6 WHERE id = 1",
        "UPDATE doc SET body = 'replaced' WHERE id = 2",
        "UPDATE doc SET title = 'again' WHERE id = 4",
        "UPDATE doc SET title = 'twice' WHERE id = 4",
        "DELETE FROM doc WHERE id = 3"], "doc", "id",
        on_target="CREATE TABLE chunk AS SELECT id, pg_column_toast_chunk_id(body) FROM doc",
        after="SELECT id, c.pg_column_toast_chunk_id = pg_column_toast_chunk_id(d.body)"
              " FROM chunk c JOIN doc d USING (id) ORDER BY id")
    assert got == expected
    assert kept == [(1, True), (2, None), (4, True), (5, True)]  # 2: short now
    assert isinstance(report, RestoreReport), report
    assert report.replay == "net changes", report.summary()
    counts = report.tables["public.doc"]
    assert (counts.inserted, counts.updated, counts.deleted) == (1, 3, 1), report.summary()


def test_a_row_that_keeps_unchanged_toast_from_a_row_the_target_lacks_is_refused(
        pg18_server: str, tmp_path: Path) -> None:
    """The target lost the row an update left a TOASTed body unchanged in: there is no
    value to keep, so the restore is refused, naming the table and the column, and writes
    nothing (the other changes included)."""
    outcome, got, expected, _ = _incremental_after(pg18_server, tmp_path, DOCS, [
        "UPDATE doc SET body = 'replaced' WHERE id = 2",
        "UPDATE doc SET title = 'moved' WHERE id = 1"], "doc", "id",
        on_target="DELETE FROM doc WHERE id = 1")
    assert isinstance(outcome, RestoreError), outcome
    assert "an update of public.doc leaves column(s) body unchanged" in str(outcome)
    assert [r[0] for r in got] == [2, 3, 4, 5]
    assert got[0][3] != "replaced" and got != expected[1:]
