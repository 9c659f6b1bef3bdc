"""Issue 21: the site's power is updated per device as readings arrive, not summed again
from every device after each one (``Power.site`` in scheduler/service/daemon/measure.py).
A figure that is cheaper but stale is worse than a slow one, so a seeded random sequence of
what changes a device's figure (readings heard, older readings crossing newer ones, reads
through the fleet that settle read-backs, read-backs settled by a reading older than the
one held, commands followed or not, verdicts past the deadline, sheds, dispatch, polls,
drifts behind the daemon's back, devices that stop answering, ``invalidate()``) is checked
step by step: the cached figure must equal the full walk over every device
(``Power._site_power``) field for field, in each view (as read, expected, cautious).
Devices in memory (tests/support/memfleet.py), in process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adapters.base import AdapterError, ModeRequest, Telemetry
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.devices import SLEEP
from scheduler.service.daemon.measure import VIEWS
from tests.support.clock import FakeClock
from tests.support.memfleet import MemoryDevice, memory_daemon, run_open
from tests.support.sitefile import site_text

SITE = site_text("power incremental", pue=1.25, site={"base_load_kw": 2})

STEPS = 160


def _check(d: Daemon, step: int, what: str) -> None:
    now = d.clock.time()
    for view in VIEWS:
        got = d.power.site(view, now)
        want = d.power._site_power(view, now)
        assert got == want, f"step {step} ({what}), view={view}"


class Refused(AdapterError):
    retryable = False  # not tried again within the read: no real-time wait in the test


def _silence(dev: MemoryDevice) -> None:
    if "read" in vars(dev):
        del dev.read  # answers again
        return

    async def read() -> Telemetry:
        raise Refused(dev.device_id, "connection refused")

    dev.read = read  # type: ignore[method-assign]


async def _step(d: Daemon, devs: dict[str, MemoryDevice], rng: random.Random) -> str:
    ids = list(d.fleet.status)
    i = rng.choice(ids)
    dc = d.devices.class_of(i)
    op = rng.choice(
        ["hear", "hear", "hear_old", "hear_ahead", "read", "read", "command", "command", "verdict",
         "shed", "dispatch", "poll", "poll", "drift", "silence", "invalidate"]
    )  # fmt: skip
    assert isinstance(d.clock, FakeClock)
    d.clock.advance(rng.choice([0.0, 0.5, 2.0]))
    now = d.clock.time()
    if op.startswith("hear"):
        # a reading as the fleet hands it over (a sweep's or a read-back's); "hear_old": one
        # that crossed a newer one, which must not be taken; "hear_ahead": stamped ahead of
        # the clock, so that the fleet's next read of the device is older than it, is not
        # heard, and yet settles the device's read-back (its pending command ends unheard)
        at = {"hear_old": now - 30.0, "hear_ahead": now + 5.0}.get(op, now)
        power_w = None if rng.random() < 0.2 else rng.uniform(0.0, 4000.0)
        t = Telemetry(i, at, rng.choice(["running", "sleeping"]), power_w=power_w)
        held = d.fleet.status[i].telemetry
        if held is None or at >= held.at:
            d.fleet.status[i].telemetry = t
        assert d.fleet.on_reading is not None
        d.fleet.on_reading(t)
    elif op == "read":  # through the fleet: heard, and settles the read-back it answers
        await d.fleet.read_all(rng.sample(ids, rng.randint(1, 3)))
    elif op == "command":
        mode = rng.choice([m.name for m in dc.modes] + [SLEEP])
        devs[i].follows = rng.random() < 0.5
        req = (
            ModeRequest("sleep")
            if mode == SLEEP
            else ModeRequest("run", power_w=dc.device_target_w(mode))
        )
        out = await d.fleet.apply({i: req})
        d.devices.commanded(out, {i: mode})
    elif op == "verdict":  # past every deadline: the commands not seen go unconfirmed
        d.clock.advance(600.0)
        d.fleet.check_pending()
    elif op == "shed":
        await d.shedder.shed("test")
    elif op == "dispatch":
        await d.dispatch()
    elif op == "poll":
        await d.poller.poll(dispatch=rng.random() < 0.5)
    elif op == "silence":  # it stops answering (or answers again): unread, then unreachable
        _silence(devs[i])
    elif op == "drift":  # behind the daemon's back; a poll adopts what it reads
        devs[i].state = "sleeping" if devs[i].state == "running" else "running"
    else:
        d.power.invalidate()
    return f"{op} {i}"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_site_figure_equals_the_full_walk_after_every_change(tmp_path: Path, seed: int) -> None:
    d, devs = memory_daemon(SITE, tmp_path, FakeClock())
    rng = random.Random(seed)

    async def body() -> None:
        _check(d, 0, "opened")
        for step in range(1, STEPS + 1):
            what = await _step(d, devs, rng)
            _check(d, step, what)
            if rng.random() < 0.3:  # asked twice in a row: the cache itself
                _check(d, step, what + ", again")

    run_open(d, body)


def test_a_read_back_settled_by_a_reading_not_heard_is_counted_again(tmp_path: Path) -> None:
    """The fleet settles a command with a read that is older than the reading held (two
    reads crossing): the read is not heard, yet the device no longer awaits its read-back,
    so with ``expect`` it counts at its reading, not at its command's mode."""
    clock = FakeClock()
    d, _ = memory_daemon(SITE, tmp_path, clock)
    i = "gpu/0"

    async def body() -> None:
        dc = d.devices.class_of(i)
        out = await d.fleet.apply({i: ModeRequest("run", power_w=dc.device_target_w("low"))})
        d.devices.commanded(out, {i: "low"})
        assert i in d.fleet.pending
        ahead = Telemetry(i, clock.time() + 5.0, "running", power_w=123.0)
        d.fleet.status[i].telemetry = ahead
        assert d.fleet.on_reading is not None
        d.fleet.on_reading(ahead)
        before = d.power.site(True, clock.time())
        assert before == d.power._site_power(True, clock.time())
        await d.fleet.read_all([i])  # stamped now: older than the one held, not heard
        assert i not in d.fleet.pending and d.power.readings[i] is ahead
        after = d.power.site(True, clock.time())
        assert after == d.power._site_power(True, clock.time())
        assert after.gpu_kw == pytest.approx(before.gpu_kw - 0.35 + 0.123)

    run_open(d, body)
