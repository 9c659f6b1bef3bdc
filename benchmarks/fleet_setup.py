"""Bringing up ``benchmarks/fleet_control.py``'s fleet before its rounds: connecting and
identifying every simulated miner, the read-back deadlines, and the ``ignore`` fault on a
share of each family's miners (through the simulator's control port)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from adapters.asic import PyasicMiner
from adapters.fds import raise_fd_limit
from adapters.fleet import Fleet, freeze_heap
from adapters.sim.fleet import ask_control

if TYPE_CHECKING:
    from benchmarks.fleet_control import Bench

#: What discovery must find behind each simulated firmware (``models.firmware.Family``).
EXPECTED_FAMILY = {
    "luxos": "luxos",
    "antminer": "antminer-stock",
    "braiins": "braiins-os",
    "whatsminer": "whatsminer",
    "vnish": "vnish",
}


async def connect(b: Bench) -> None:
    """Connect every miner (twice more for those a loaded host timed out, as the daemon
    would try again), check that discovery found each simulated firmware's family, note
    each miner's read-back deadline (scaled by ``--deadline-scale``) and give
    ``--ignore-share`` of each family the ``ignore`` fault."""
    raise_fd_limit(4 * len(b.family) + 1024)
    t0 = time.perf_counter()
    errors = await b.fleet.connect_all()
    bad = {i: e for i, e in errors.items() if e}
    for _ in range(2):  # a loaded host times discovery out; the daemon would try again
        if bad:
            again = Fleet([b.fleet.by_id[i] for i in bad], concurrency=64)
            bad = {i: e for i, e in (await again.connect_all()).items() if e}
    for i in errors:
        b.fleet.status[i].connected = i not in bad
    freeze_heap()
    print(f"connected {len(errors) - len(bad)}/{len(errors)} in {time.perf_counter() - t0:.1f} s")
    if bad:
        raise SystemExit(f"{len(bad)} miners failed to connect, e.g. {next(iter(bad.values()))}")
    for i, dev in b.fleet.by_id.items():
        got = dev.info.family if dev.info else "?"
        if got != EXPECTED_FAMILY.get(b.family[i], got):
            raise SystemExit(f"{i}: discovered as {got}, not {EXPECTED_FAMILY[b.family[i]]}")
        if b.args.deadline_scale != 1.0:
            assert isinstance(dev, PyasicMiner)
            dev.confirm_within_s = dev.confirm_deadline_s() * b.args.deadline_scale
        b.deadline_s[i] = dev.confirm_deadline_s()
    for fw in dict.fromkeys(b.family.values()):
        one = next(i for i, f in b.family.items() if f == fw)
        print(f"  {fw}: read-back deadline {b.deadline_s[one]:g} s")
    if b.args.ignore_share > 0:
        await ignore(b)


async def ignore(b: Bench) -> None:
    """The ``ignore`` fault on an evenly spread share of each family's miners."""
    hosts: list[str] = []
    for fw in dict.fromkeys(b.family.values()):
        ids = [i for i, f in b.family.items() if f == fw]
        k = round(len(ids) * b.args.ignore_share)
        hosts += [b.host[ids[j * len(ids) // k]] for j in range(k)] if k else []
    raw = await ask_control("127.0.0.1", b.port, {"op": "fault", "hosts": hosts, "kind": "ignore"})
    assert json.loads(raw)["ok"], raw
    print(f"  'ignore' fault on {len(hosts)} miners ({b.args.ignore_share:.0%} of each)")
