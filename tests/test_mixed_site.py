"""The daemon end to end on the mixed example site (issue 16, deliverables 3 and 7):
``deploy/examples/mixed-firmware-site.toml``, its LuxOS, stock Antminer, Braiins OS+,
Whatsminer and VNish miners simulated by the daemon itself on free loopback addresses and
reached through pyasic as real ones. A curtail to 0 kW puts every miner of every family
to sleep, each command confirmed by a read-back and the simulators' own state agreeing;
the cancel wakes each family's miners at a mode its firmware can reach (a stock Antminer
without a power target).

The stock Antminer and VNish simulators serve their web API on port 80: skipped where this
process may not bind it.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from adapters.base import Health
from models.signals import EventType, GridEvent
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.devices import SLEEP
from tests.support.daemon import daemon_of, free_loopback_base, running
from tests.support.simfleet import skip_without_port_80
from tests.support.wait import until
from tests.test_dispatch import curtail

pytestmark = skip_without_port_80()

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "mixed-firmware-site.toml"
FAMILIES = {
    "s19jpro-luxos": "luxos",
    "s19jpro-stock": "antminer",
    "s21-braiins": "braiins",
    "m50-whatsminer": "whatsminer",
    "s19jpro-vnish": "vnish",
}


def _site_text() -> str:
    """The example, each class on a free loopback /24 (two runs on one host never share
    addresses), its miners asleep in 0.2 s and awake in 0.4 s, polled by the test."""
    text = EXAMPLE.read_text()
    taken: set[str] = set()
    for old in sorted(set(re.findall(r'sim_base = "([0-9.]+)"', text))):
        new = free_loopback_base(12, port=80)
        while new in taken:
            new = free_loopback_base(12, port=80)
        taken.add(new)
        text = text.replace(
            f'sim_base = "{old}"', f'sim_base = "{new}"\nsim_sleep_s = 0.2\nsim_wake_s = 0.4'
        )
    daemon = '[daemon]\nhorizon = "2h"\nstep = "5min"\npoll_s = 3600\nconfirm_after_s = 0\n'
    # the cancel comes seconds after the curtail: the example's 300 s min-off would keep
    # every miner asleep (as it should since session 25: tests/test_failsafe.py); off here
    text = text.replace("min_off_s = 300", "min_off_s = 0")
    return text.replace("[[devices]]", daemon + "\n[[devices]]", 1)


def _phases(d: Daemon) -> dict[str, set[str]]:
    """Each class's miners' own phase, as the simulators hold it (not as read)."""
    by_host = {i.rsplit("/", 1)[1]: st.group for i, st in d.fleet.status.items()}
    out: dict[str, set[str]] = {}
    for sim in d.built.simulators:
        for m in getattr(sim, "miners", []):
            out.setdefault(by_host[m.host], set()).add(m.state.phase)
    return out


def _confirmed(d: Daemon, since: float, action: str) -> set[str]:
    """Devices whose ``action`` command (``sleep``, ``run``) a read-back confirmed, from
    the audit log."""
    done: set[str] = set()
    for *_, body, _h in d.store.records(since, time.time() + 1, ("commands",)):
        for row in body["outcomes"]:
            if row["kind"] == "confirmed" and row["request"].split("@")[0] == action:
                done.add(row["device"])
    return done


def test_every_family_sleeps_on_a_curtail_and_wakes_on_its_cancel(tmp_path: Path) -> None:
    d = daemon_of(tmp_path, _site_text())

    async def go() -> None:
        async with running(d):
            assert all(st.health is Health.OK for st in d.fleet.status.values())
            families: dict[str, set[str | None]] = {}
            for i, st in d.fleet.status.items():
                info = d.fleet.by_id[i].info
                families.setdefault(st.group, set()).add(None if info is None else info.family)
            # one family per class, as discovery found it, and five different ones
            found = {c: f.pop() for c, f in families.items() if c in FAMILIES and len(f) == 1}
            assert len(set(found.values()) - {None}) == len(FAMILIES), families
            assert all(_phases(d)[c] == {"mining"} for c in FAMILIES)

            t0 = time.time() - 1
            await curtail(d, 0.0)
            miners = [i for i, st in d.fleet.status.items() if st.group in FAMILIES]
            assert all(d.devices.modes[i] == SLEEP for i in miners)

            async def all_asleep() -> bool:
                await d.poll(dispatch=False)
                return set(miners) <= _confirmed(d, t0, "sleep")

            await until(all_asleep, 60.0, step_s=0.3, what="every sleep read back")
            phases = _phases(d)
            assert all(phases[c] == {"sleeping"} for c in FAMILIES), phases

            t1 = time.time() - 1
            await d.accept([GridEvent(id="dr", type=EventType.CANCEL)], "test", None, "{}")
            d.dispatcher.last_dispatch = time.monotonic() - 3600  # the ramp has refilled
            await d.replan("event over")
            awake = [i for i in miners if d.devices.modes[i] != SLEEP]
            assert awake, "the release woke nobody"

            async def woken() -> bool:
                await d.poll(dispatch=False)
                return set(awake) <= _confirmed(d, t1, "run")

            await until(woken, 60.0, step_s=0.3, what="every wake read back")
            phases = _phases(d)
            for c in {d.fleet.status[i].group for i in awake}:
                assert phases[c] <= {"mining", "waking"}, (c, phases[c])
            # every family's woken miners run at a mode its firmware can reach
            for i in awake:
                st = d.fleet.status[i]
                assert st.health is Health.OK, (i, st.health)
            stock = [i for i in awake if d.fleet.status[i].group == "s19jpro-stock"]
            for i in stock:
                assert d.devices.modes[i] == "stock", (i, d.devices.modes[i])

    asyncio.run(go())
