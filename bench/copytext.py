"""COPY text formatting benchmark: rows/s of psycopg's ``write_row`` formatting and of the
C formatter ``CopyWriter`` uses (``journal/codec/_copytext.pyx``), on the same rows, no
server involved.

    python bench/copytext.py                # 2,000 rows, best of 7 runs of 0.2 s
    python bench/copytext.py --rows 500 --seconds 0.1 --repeat 15

The rows are ``bench/codec.py``'s ``document`` rows (ints, text, an enum, timestamps, a
date, numeric, uuid, jsonb, a text array, bytea, nulls), as the restore's readers hand
them over; "no arrays" is the same rows with the text array null. ``psycopg`` is
``format_row_text``, what ``Copy.write_row`` runs per row before sending; ``C`` is
``RowFormatter.add``, with psycopg's formatter for any row it leaves, as ``CopyWriter``
does.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg._copy_base import format_row_text
from psycopg.adapt import Transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.codec import DOCUMENT, document, rates  # noqa: E402
from journal.codec.copytext import row_formatter  # noqa: E402
from journal.codec.wire import Unhandled  # noqa: E402

COLUMNS = [c.name for c in DOCUMENT.columns]


def psycopg_path(rows: list[dict[str, Any]]) -> Callable[[], None]:
    transformer = Transformer()

    def run() -> None:
        out = bytearray()
        for row in rows:
            format_row_text([row[c] for c in COLUMNS], transformer, out)
    return run


def c_path(rows: list[dict[str, Any]]) -> Callable[[], None] | None:
    if row_formatter(COLUMNS) is None:  # built without a C compiler
        return None
    transformer = Transformer()

    def run() -> None:
        formatter = row_formatter(COLUMNS)
        for row in rows:
            try:
                formatter.add(row)
            except Unhandled:
                out = bytearray()
                format_row_text([row[c] for c in COLUMNS], transformer, out)
                formatter.append(bytes(out))
        formatter.take()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=0.2, help="least time per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = [document(rng, n) for n in range(args.rows)]
    print(f"rows/s, best of {args.repeat} runs of {args.seconds} s, {args.rows} rows")
    print(f"{'':24}{'psycopg':>11} {'C':>11} {'C/psycopg':>10}")
    for kind, batch in (("document rows", rows),
                        ("no arrays", [{**r, "keywords": None} for r in rows])):
        got = rates({"psycopg": psycopg_path(batch), "C": c_path(batch)}, len(batch),
                    args.seconds, args.repeat)
        c = got["C"]
        p = got["psycopg"] or 0.0
        print(f"{kind:<24}{p:>11,.0f} " + (f"{c:>11,.0f} {c / p:>9.2f}x" if c else "-"),
              flush=True)


if __name__ == "__main__":
    main()
