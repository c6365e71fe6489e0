"""A seeded random workload over the tables where a row's net change and the order of
transactions that made it differ most: primary keys that updates change (and swap),
TOASTed text left unchanged by updates of other columns (also while its key moves), a
non-deferrable unique column two rows swap, a foreign-key cycle inserted and deleted
together, keys deleted and inserted again, TRUNCATE, and equal rows in a table without a
primary key.

``Workload`` runs one small transaction per ``transaction()`` call, choosing its changes
with ``random.Random(seed)`` over the keys the source holds (read back, sorted, so the
run is the same for the same seed). ``rows`` is the oracle: each table's rows as SQL
spells them, one entry per row, so equal rows count and TOAST values are compared whole.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from journal.events import MARK_PREFIX

SCHEMA = """
CREATE TABLE account (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL);
CREATE TABLE doc (id int PRIMARY KEY, title text NOT NULL, body text);
-- stored out of line uncompressed: every body is a TOAST pointer that updates of the
-- title leave unchanged (REPLICA IDENTITY DEFAULT: pgoutput does not send it again)
ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE seat (id int PRIMARY KEY, code text NOT NULL UNIQUE);
-- a deferred cycle (ring_a's side may be NULL, as Django's would; a cycle NOT NULL on both
-- sides is tests/test_net_replay.py's own case)
CREATE TABLE ring_a (id int PRIMARY KEY, b_id int, note text);
CREATE TABLE ring_b (id int PRIMARY KEY, a_id int NOT NULL, note text);
ALTER TABLE ring_a ADD CONSTRAINT ring_a_b FOREIGN KEY (b_id) REFERENCES ring_b
    DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ring_b ADD CONSTRAINT ring_b_a FOREIGN KEY (a_id) REFERENCES ring_a
    DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE scratch (id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE bag (a int, b text, c text);
ALTER TABLE bag ALTER COLUMN c SET STORAGE EXTERNAL;
ALTER TABLE bag REPLICA IDENTITY FULL;
"""

TABLES = ("account", "doc", "seat", "ring_a", "ring_b", "scratch", "bag")
_BAG_VALUES = ((1, "x"), (2, "y"), (None, None), (3, None), (None, "z"))
Rows = dict[str, Counter[str]]


def rows(url: str) -> Rows:
    """Each table's rows as their text, as a multiset (the oracle: SQL on the database)."""
    with psycopg.connect(url) as conn:
        return {t: Counter(text for (text,) in conn.execute(
            sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(t))))
            for t in TABLES}


def difference(expected: Rows, got: Rows) -> str:
    """What ``got`` lacks and has too many of, per table, rows cut short (TOAST is long)."""
    lines = []
    for t in TABLES:
        missing, extra = expected[t] - got[t], got[t] - expected[t]
        if missing or extra:
            lines.append(f"{t}: {sum(missing.values())} missing, {sum(extra.values())} extra")
            lines += [f"  - {r[:100]}" for r in sorted(missing)[:5]]
            lines += [f"  + {r[:100]}" for r in sorted(extra)[:5]]
    return "\n".join(lines) or "no difference"


@dataclass
class Point:
    """The source after one committed transaction: the ways to name it, and its rows."""

    index: int
    xid: int
    below_commit: int  # just below the transaction's commit record: excludes it
    lsn: int  # past its commit record, before the next transaction's
    time: datetime  # after its commit, before the next one's
    mark: str | None
    rows: Rows = field(default_factory=dict)


class Workload:
    """One source database, changed one random small transaction at a time."""

    def __init__(self, url: str, seed: int, keyed: bool = False) -> None:
        self.url = url
        self.seed = seed
        self.rng = random.Random(seed)
        self.count = 0
        self._next_id = 1000
        self._gone: dict[str, list[int]] = {"account": [], "doc": [], "scratch": []}
        self._big = self._body()  # equal TOASTed values in rows without a primary key
        self._ops: list[tuple[int, Callable[[psycopg.Connection[Any]], None]]] = [
            (3, self._account_insert), (3, self._account_update), (3, self._account_rekey),
            (2, self._account_swap_keys), (2, self._account_delete),
            (2, self._account_delete_reinsert), (2, self._account_rekey_and_reuse),
            (3, self._doc_title), (2, self._doc_rekey), (1, self._doc_swap_keys),
            (1, self._doc_body), (1, self._doc_insert), (1, self._doc_delete),
            (1, self._doc_delete_reinsert), (2, self._doc_shuffle),
            (3, self._seat_swap), (1, self._seat_rotate), (1, self._seat_insert_delete),
            (2, self._ring_insert), (2, self._ring_delete), (1, self._ring_note),
            (1, self._scratch_truncate), (2, self._scratch_change),
            (3, self._bag_insert), (3, self._bag_update_one), (2, self._bag_delete_one),
            (1, self._bag_truncate),
        ]
        if keyed:  # no change a restore cannot apply key by key to the snapshot's rows
            unkeyed = {self._bag_insert, self._bag_update_one, self._bag_delete_one,
                       self._bag_truncate, self._doc_rekey, self._doc_swap_keys,
                       self._doc_shuffle}
            self._ops = [(w, op) for w, op in self._ops if op not in unkeyed]

    # -- setup ---------------------------------------------------------------------------

    def create(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(SCHEMA)
            with conn.transaction():
                for i in range(1, 21):
                    conn.execute("INSERT INTO account VALUES (%s, %s, %s)",
                                 (i, f"owner{i}", 100 * i))
                for i in range(1, 9):
                    conn.execute("INSERT INTO doc VALUES (%s, %s, %s)",
                                 (i, f"title{i}", self._body()))
                for i in range(1, 7):
                    conn.execute("INSERT INTO seat VALUES (%s, %s)", (i, f"S{i}"))
                for i in range(1, 4):
                    self._pair(conn, i)
                for i in range(1, 6):
                    conn.execute("INSERT INTO scratch VALUES (%s, %s)", (i, f"v{i}"))
                conn.execute("INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (1, 'x'), "
                             "(2, 'y'), (2, 'y'), (NULL, NULL), (NULL, NULL)")
                conn.execute("INSERT INTO bag VALUES (1, 'x', %s), (1, 'x', %s)",
                             (self._big, self._big))

    # -- running -------------------------------------------------------------------------

    def transaction(self, record: bool = False, mark: str | None = None) -> Point | None:
        """One transaction of one to three random changes; with ``record``, the point it
        leaves the source at (its rows read after the commit)."""
        ops = [op for _, op in self._ops]
        weights = [w for w, _ in self._ops]
        chosen = self.rng.choices(ops, weights, k=self.rng.randint(1, 3))
        with psycopg.connect(self.url, autocommit=True) as conn:
            with conn.transaction():
                xid = int(conn.execute("SELECT txid_current()").fetchone()[0])
                for op in chosen:
                    op(conn)
                if mark is not None:
                    conn.execute("SELECT pg_logical_emit_message(true, %s, %s)",
                                 (MARK_PREFIX, mark))
                # the commit record goes where WAL is inserted next, or further on
                below = _lsn(conn) - 1
            self.count += 1
            if not record:
                return None
            lsn, at = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, "
                                   "clock_timestamp()").fetchone()
        return Point(self.count, xid, below, int(lsn), at, mark, rows(self.url))

    def here(self) -> Point:
        """The source as it is, between transactions."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            lsn, at = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, "
                                   "clock_timestamp()").fetchone()
        return Point(self.count, 0, int(lsn), int(lsn), at, None, rows(self.url))

    # -- helpers -------------------------------------------------------------------------

    def _body(self) -> str:
        """A text of more than 8 kB that compression would not shrink below TOAST's."""
        return "".join(self.rng.choices("0123456789abcdef", k=self.rng.randint(8500, 12000)))

    def _ids(self, conn: psycopg.Connection[Any], table: str) -> list[int]:
        return [r[0] for r in conn.execute(
            sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(table)))]

    def _fresh(self) -> int:
        self._next_id += 1
        return self._next_id

    def _new_or_reused(self, conn: psycopg.Connection[Any], table: str) -> int:
        """A key the table does not hold: half the time one it held before (a key
        deleted, or moved away, in an earlier transaction comes back)."""
        present = set(self._ids(conn, table))
        gone = [k for k in self._gone[table] if k not in present]
        if gone and self.rng.random() < 0.5:
            return self.rng.choice(gone)
        return self._fresh()

    def _pick(self, conn: psycopg.Connection[Any], table: str, k: int = 1) -> list[int]:
        ids = self._ids(conn, table)
        return self.rng.sample(ids, k) if len(ids) >= k else []

    @staticmethod
    def _pair(conn: psycopg.Connection[Any], i: int) -> None:
        # the cycle: each row needs the other, checked at commit
        conn.execute("INSERT INTO ring_a VALUES (%s, %s, %s)", (i, i, f"a{i}"))
        conn.execute("INSERT INTO ring_b VALUES (%s, %s, %s)", (i, i, f"b{i}"))

    # -- account: keys that move ---------------------------------------------------------

    def _account_insert(self, conn: psycopg.Connection[Any]) -> None:
        key = self._new_or_reused(conn, "account")
        conn.execute("INSERT INTO account VALUES (%s, %s, %s)",
                     (key, f"owner{self.rng.randint(1, 99)}", self.rng.randint(0, 999)))

    def _account_update(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "account"):
            conn.execute("UPDATE account SET balance = balance + %s WHERE id = %s",
                         (self.rng.randint(-50, 50), key))

    def _account_rekey(self, conn: psycopg.Connection[Any]) -> None:
        for old in self._pick(conn, "account"):
            new = self._new_or_reused(conn, "account")
            conn.execute("UPDATE account SET id = %s, balance = balance + 1 WHERE id = %s",
                         (new, old))
            self._gone["account"].append(old)

    def _account_swap_keys(self, conn: psycopg.Connection[Any]) -> None:
        self._swap_keys(conn, "account")

    def _swap_keys(self, conn: psycopg.Connection[Any], table: str) -> None:
        """Two rows exchange their primary keys, through a key neither holds."""
        pair = self._pick(conn, table, 2)
        if pair:
            a, b = pair
            update = sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(sql.Identifier(table))
            for new, old in ((-1, a), (a, b), (b, -1)):
                conn.execute(update, (new, old))

    def _account_delete(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "account"):
            conn.execute("DELETE FROM account WHERE id = %s", (key,))
            self._gone["account"].append(key)

    def _account_delete_reinsert(self, conn: psycopg.Connection[Any]) -> None:
        """Deleted and inserted again with other values in the same transaction."""
        for key in self._pick(conn, "account"):
            conn.execute("DELETE FROM account WHERE id = %s", (key,))
            conn.execute("INSERT INTO account VALUES (%s, %s, %s)",
                         (key, f"again{self.rng.randint(1, 99)}", self.rng.randint(0, 999)))

    def _account_rekey_and_reuse(self, conn: psycopg.Connection[Any]) -> None:
        """A row moves to a new key and a new row takes its old key, in one transaction."""
        for old in self._pick(conn, "account"):
            conn.execute("UPDATE account SET id = %s WHERE id = %s", (self._fresh(), old))
            conn.execute("INSERT INTO account VALUES (%s, %s, %s)",
                         (old, f"taken{self.rng.randint(1, 99)}", self.rng.randint(0, 999)))

    # -- doc: TOAST left unchanged -------------------------------------------------------

    def _doc_title(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "doc"):
            conn.execute("UPDATE doc SET title = %s WHERE id = %s",
                         (f"t{self.rng.randint(0, 9999)}", key))

    def _doc_rekey(self, conn: psycopg.Connection[Any]) -> None:
        """The key moves, the body stays (unchanged TOAST under another key); sometimes
        the title changes after, in the same transaction."""
        for old in self._pick(conn, "doc"):
            new = self._new_or_reused(conn, "doc")
            conn.execute("UPDATE doc SET id = %s WHERE id = %s", (new, old))
            self._gone["doc"].append(old)
            if self.rng.random() < 0.5:
                conn.execute("UPDATE doc SET title = title || '+' WHERE id = %s", (new,))

    def _doc_swap_keys(self, conn: psycopg.Connection[Any]) -> None:
        # bodies unchanged: each moves to a key that held the other a statement before
        self._swap_keys(conn, "doc")

    def _doc_shuffle(self, conn: psycopg.Connection[Any]) -> None:
        """A key moves where its body was written or taken in this same transaction:
        onto a key just deleted, after a new body, or right after its insert."""
        pair = self._pick(conn, "doc", 2)
        if not pair:
            return
        a, b = pair
        how = self.rng.choice(("onto a deleted key", "after a new body", "after its insert"))
        if how == "onto a deleted key":
            conn.execute("DELETE FROM doc WHERE id = %s", (b,))
            conn.execute("UPDATE doc SET id = %s WHERE id = %s", (b, a))
            self._gone["doc"].append(a)
            return
        if how == "after its insert":
            a = self._fresh()
            conn.execute("INSERT INTO doc VALUES (%s, 'brief', %s)", (a, self._body()))
        else:
            conn.execute("UPDATE doc SET body = %s WHERE id = %s", (self._body(), a))
        new = self._fresh()
        conn.execute("UPDATE doc SET id = %s, title = title || '>' WHERE id = %s", (new, a))

    def _doc_body(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "doc"):
            conn.execute("UPDATE doc SET body = %s WHERE id = %s", (self._body(), key))

    def _doc_insert(self, conn: psycopg.Connection[Any]) -> None:
        key = self._new_or_reused(conn, "doc")
        conn.execute("INSERT INTO doc VALUES (%s, %s, %s)", (key, f"new{key}", self._body()))

    def _doc_delete(self, conn: psycopg.Connection[Any]) -> None:
        ids = self._ids(conn, "doc")
        if len(ids) > 3:
            key = self.rng.choice(ids)
            conn.execute("DELETE FROM doc WHERE id = %s", (key,))
            self._gone["doc"].append(key)

    def _doc_delete_reinsert(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "doc"):
            conn.execute("DELETE FROM doc WHERE id = %s", (key,))
            conn.execute("INSERT INTO doc VALUES (%s, %s, %s)",
                         (key, f"reborn{key}", self._body()))

    # -- seat: a non-deferrable unique column ----------------------------------------------

    def _seat_swap(self, conn: psycopg.Connection[Any]) -> None:
        """Two rows exchange their unique codes, through a temporary one, as an
        application must (the constraint is checked at each statement)."""
        pair = self._pick(conn, "seat", 2)
        if pair:
            a, b = pair
            code_a, code_b = (conn.execute("SELECT code FROM seat WHERE id = %s", (k,))
                              .fetchone()[0] for k in (a, b))
            conn.execute("UPDATE seat SET code = '~swap' WHERE id = %s", (a,))
            conn.execute("UPDATE seat SET code = %s WHERE id = %s", (code_a, b))
            conn.execute("UPDATE seat SET code = %s WHERE id = %s", (code_b, a))

    def _seat_rotate(self, conn: psycopg.Connection[Any]) -> None:
        """Three rows pass their codes round."""
        trio = self._pick(conn, "seat", 3)
        if trio:
            codes = [conn.execute("SELECT code FROM seat WHERE id = %s", (k,)).fetchone()[0]
                     for k in trio]
            conn.execute("UPDATE seat SET code = '~rot' WHERE id = %s", (trio[0],))
            conn.execute("UPDATE seat SET code = %s WHERE id = %s", (codes[0], trio[1]))
            conn.execute("UPDATE seat SET code = %s WHERE id = %s", (codes[1], trio[2]))
            conn.execute("UPDATE seat SET code = %s WHERE id = %s", (codes[2], trio[0]))

    def _seat_insert_delete(self, conn: psycopg.Connection[Any]) -> None:
        """A row gives up its code and a new row takes it in the same transaction."""
        for key in self._pick(conn, "seat"):
            code = conn.execute("SELECT code FROM seat WHERE id = %s", (key,)).fetchone()[0]
            conn.execute("DELETE FROM seat WHERE id = %s", (key,))
            conn.execute("INSERT INTO seat VALUES (%s, %s)", (self._fresh(), code))

    # -- ring: a deferred foreign-key cycle ----------------------------------------------

    def _ring_insert(self, conn: psycopg.Connection[Any]) -> None:
        self._pair(conn, self._fresh())

    def _ring_delete(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "ring_a"):
            conn.execute("DELETE FROM ring_a WHERE id = %s", (key,))
            conn.execute("DELETE FROM ring_b WHERE id = %s", (key,))
            if self.rng.random() < 0.3:  # and the same pair again
                self._pair(conn, key)

    def _ring_note(self, conn: psycopg.Connection[Any]) -> None:
        for key in self._pick(conn, "ring_b"):
            conn.execute("UPDATE ring_b SET note = note || '.' WHERE id = %s", (key,))

    # -- scratch: truncated ----------------------------------------------------------------

    def _scratch_truncate(self, conn: psycopg.Connection[Any]) -> None:
        """Emptied, then (in this transaction or a later one) filled again, old keys
        among the new rows."""
        conn.execute("TRUNCATE scratch")
        if self.rng.random() < 0.6:
            for key in self.rng.sample(range(1, 12), 3):
                conn.execute("INSERT INTO scratch VALUES (%s, %s)", (key, f"after{key}"))

    def _scratch_change(self, conn: psycopg.Connection[Any]) -> None:
        ids = self._ids(conn, "scratch")
        if ids and self.rng.random() < 0.5:
            conn.execute("UPDATE scratch SET v = v || '!' WHERE id = %s",
                         (self.rng.choice(ids),))
        else:
            key = self.rng.choice([k for k in range(1, 15) if k not in ids] or [self._fresh()])
            conn.execute("INSERT INTO scratch VALUES (%s, %s)", (key, f"v{key}"))

    # -- bag: equal rows, no primary key ---------------------------------------------------

    def _bag_insert(self, conn: psycopg.Connection[Any]) -> None:
        big = self._big if self.rng.random() < 0.5 else None
        conn.execute("INSERT INTO bag VALUES (%s, %s, %s)", (*self.rng.choice(_BAG_VALUES), big))

    def _bag_truncate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("TRUNCATE bag")
        conn.execute("INSERT INTO bag VALUES (1, 'x', %s), (1, 'x', %s)", (self._big, self._big))
        for _ in range(self.rng.randint(0, 4)):
            self._bag_insert(conn)

    def _bag_row(self, conn: psycopg.Connection[Any]) -> Any:
        """The ctid of one row of several equal ones (or of any row)."""
        found = conn.execute("SELECT ctid FROM bag ORDER BY a, b, c, ctid").fetchall()
        return self.rng.choice(found)[0] if found else None

    def _bag_update_one(self, conn: psycopg.Connection[Any]) -> None:
        # c is left as it was: unchanged TOAST in the new row, whole in the old one
        ctid = self._bag_row(conn)
        if ctid is not None:
            conn.execute("UPDATE bag SET (a, b) = (%s, %s) WHERE ctid = %s::tid",
                         (*self.rng.choice(_BAG_VALUES), ctid))

    def _bag_delete_one(self, conn: psycopg.Connection[Any]) -> None:
        ctid = self._bag_row(conn)
        if ctid is not None:
            conn.execute("DELETE FROM bag WHERE ctid = %s::tid", (ctid,))


def _lsn(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()[0])


def die_in_worker(*args: object) -> None:
    """Stands in for the restore's change-reading worker: a process killed before it
    answers."""
    import os

    os._exit(3)
