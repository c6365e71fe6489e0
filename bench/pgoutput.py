"""pgoutput decoding benchmark: messages/s of the Python decoder (``decode_python``) and of
``decode`` where the C decoder (``producers/_pgoutput.pyx``) is built, as capture calls it,
on the messages capture's backlog drain reads.

    python bench/pgoutput.py                  # 2,000 messages per kind, best of 7 runs of 0.2 s
    python bench/pgoutput.py --messages 500 --seconds 0.1 --repeat 15

Kinds: inserts of bench/capture.py's ``bench_item`` rows (bigint, integer, numeric, text,
timestamptz as pgoutput's text), updates of them (new tuple only, as under the default
replica identity; and with the whole old row, as under REPLICA IDENTITY FULL, one column
an unchanged TOAST value), key-only deletes, and BEGIN/COMMIT pairs.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from producers import pgoutput  # noqa: E402

RELID = struct.pack(">I", 16_406)


def _tuple(values: Sequence[bytes | None | object]) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is pgoutput.UNCHANGED:
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack(">i", len(v)) + v
    return out


def _row(rng: random.Random, row_id: int) -> list[bytes]:
    return [str(row_id).encode(), str(rng.randrange(100)).encode(),
            f"{rng.randrange(10**6) / 100:.2f}".encode(),
            f"item {row_id} {'x' * rng.randrange(40)}".encode(),
            b"2026-12-01 06:09:52.123456+00"]


def workload(count: int, seed: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    rows = [_row(rng, i) for i in range(count)]
    return {
        "insert": [b"I" + RELID + b"N" + _tuple(r) for r in rows],
        "update": [b"U" + RELID + b"N" + _tuple(r) for r in rows],
        "update (old row)": [b"U" + RELID + b"O" + _tuple(r) + b"N"
                             + _tuple([*r[:3], pgoutput.UNCHANGED, r[4]]) for r in rows],
        "delete (key)": [b"D" + RELID + b"K" + _tuple([r[0], None, None, None, None])
                         for r in rows],
        "begin, commit": [m for i in range(count // 2) for m in (
            b"B" + struct.pack(">qqI", 0x9AE1D48 + i, 8_000_000 + i, 770 + i),
            b"C" + struct.pack(">bqqq", 0, 0x9AE1D48 + i, 0x9AE1D78 + i, 8_000_000 + i))],
    }


def rate(decode: Callable[[bytes], Any], messages: list[bytes], seconds: float,
         repeat: int) -> float:
    """Messages/s: the best of ``repeat`` runs of at least ``seconds`` each."""
    best = 0.0
    for _ in range(repeat):
        done = 0
        start = time.perf_counter()
        while (took := time.perf_counter() - start) < seconds or not done:
            for data in messages:
                decode(data)
            done += len(messages)
        best = max(best, done / took)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    in_c = pgoutput.decode if pgoutput.IN_C else None
    print(f"messages/s, best of {args.repeat} runs of {args.seconds} s, "
          f"{args.messages:,} messages per kind")
    print(f"{'':18}{'Python':>11} {'C':>11} {'C/Python':>9}")
    for kind, messages in workload(args.messages, args.seed).items():
        python = rate(pgoutput.decode_python, messages, args.seconds, args.repeat)
        if in_c is None:
            print(f"{kind:<18}{python:>11,.0f} {'-':>11} {'-':>9}")
            continue
        c = rate(in_c, messages, args.seconds, args.repeat)
        print(f"{kind:<18}{python:>11,.0f} {c:>11,.0f} {c / python:>8.1f}x")
    if in_c is None:
        print("producers._pgoutput is not built: C not measured")


if __name__ == "__main__":
    main()
