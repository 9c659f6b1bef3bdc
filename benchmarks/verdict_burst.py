"""How long a burst of read-back verdicts holds the daemon's event loop (issue 21: at 30,000
miners 1,938 sleeps went unconfirmed at their deadline, no poll ended in 452 s, and a
``/metrics`` request went unanswered for 60 s).

The daemon in this process over devices in memory (``tests/support/memfleet.py``): two miner
classes of ``--miners / 2`` each and 2,048 GPUs. ``--unconfirmed`` miners accept a sleep and
keep mining; once their deadline has passed, :meth:`Fleet.check_pending` gives every verdict in
one turn of the loop, as a sweep reaching them past their deadline does one by one. Printed:
the CPU that turn took (the loop answers nothing meanwhile), and the shed order's working out
that follows (``Shedder.refresh``).

    .venv/bin/python benchmarks/verdict_burst.py --miners 30000 --unconfirmed 1938
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.base import ModeRequest  # noqa: E402
from tests.support.clock import FakeClock  # noqa: E402
from tests.support.memfleet import memory_daemon  # noqa: E402
from tests.support.sitefile import mixed_devices, site_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--miners", type=int, default=7500)
    ap.add_argument("--unconfirmed", type=int, default=200)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # one line per device that did not follow
    clock = FakeClock()
    text = site_text(
        "verdict burst",
        interconnect_kw=200000,
        devices=mixed_devices(args.miners // 2, args.miners // 2, 2048),
    )
    d, devices = memory_daemon(text, Path(tempfile.mkdtemp()), clock)

    async def go() -> None:
        await d.open()
        try:
            ids = [i for i in devices if i.startswith("old/")][: args.unconfirmed]
            for i in ids:
                devices[i].follows = False
                # only the deadline gives verdicts here, not the read-back's own reads
                devices[i].readback_after_s = lambda: 3600.0  # type: ignore[method-assign]
            outs = await d.fleet.apply({i: ModeRequest("sleep") for i in ids})
            d.devices.commanded(outs, dict.fromkeys(ids, "sleep"))
            d.shedder.refresh()
            clock.advance(3600)
            t0 = time.process_time()
            d.fleet.check_pending()
            turn_s = time.process_time() - t0
            t1 = time.process_time()
            d.shedder.refresh()
            refresh_s = time.process_time() - t1
            print(
                f"{len(d.fleet.status):,} devices, {len(ids):,} unconfirmed at once: the turn "
                f"of the loop {turn_s:.2f} s of CPU, the shed order after it {refresh_s:.2f} s"
            )
        finally:
            await d.close()

    asyncio.run(go())


if __name__ == "__main__":
    main()
