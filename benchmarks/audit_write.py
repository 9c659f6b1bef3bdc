"""The decision log's write path: what a signal's 202 waits for.

A temporary database takes ``--signals`` signals through ``Store.add_signals`` with
``--in-flight`` of them waiting at once (concurrent webhooks: the writer groups them into
one commit), then ``--single`` more one at a time (one commit each: SQLite's WAL fsync, and
since schema 1 the head file's checkpoint fsync). Prints both.

    .venv/bin/python benchmarks/audit_write.py --signals 2000 --in-flight 50 --single 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.audit.store import Store  # noqa: E402


async def run(db: Path, signals: int, in_flight: int, single: int) -> tuple[float, float]:
    store = Store(db)
    store.start()

    async def one(i: int) -> None:
        ev = {"id": f"s{i}", "type": "price", "price": 50.0, "_ends_at": 4e11}
        stored, _ = await store.add_signals([ev], "simple", f"w{i}", '{"price":50}', 9e9)
        assert stored

    try:
        t = time.perf_counter()
        for k in range(0, signals, in_flight):
            await asyncio.gather(*(one(i) for i in range(k, min(signals, k + in_flight))))
        grouped = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(signals, signals + single):
            await one(i)
        alone = (time.perf_counter() - t) / max(single, 1)
    finally:
        store.close()
    return signals / grouped, alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signals", type=int, default=2000)
    ap.add_argument("--in-flight", type=int, default=50)
    ap.add_argument("--single", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        per_s, alone_s = asyncio.run(
            run(Path(d) / "s.db", args.signals, args.in_flight, args.single)
        )
    print(
        f"{args.signals} signals, {args.in_flight} in flight: {per_s:,.0f}/s; "
        f"one at a time: {alone_s * 1000:.2f} ms each"
    )


if __name__ == "__main__":
    main()
