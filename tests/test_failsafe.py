"""The daemon when its own parts fail: a solve that fails, a cap that cannot be computed, a
state file that takes no writes, a background task that raises. Each keeps the last good
state or goes to the fail-safe posture (committed inference serving, miners within the
fail-safe cap) and says so in /v1/status, /healthz and the metrics.

A mixed site (simulated miners over loopback TCP, simulated H100s in process), a real
solver fed an absurd price, a real SQLite file that runs out of pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import sqlite3
import time
import tomllib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from adapters.base import ModeRequest
from adapters.fleet import Outcome, OutcomeKind
from models.errors import ConfigError
from models.signals import EventType, GridEvent
from models.site import parse_site
from scheduler.planner.solvers import SolverError
from scheduler.service.api import create_app
from scheduler.service.daemon import SLEEP, Daemon
from scheduler.service.daemon.fastpath import shed_order
from scheduler.service.metrics import metrics_registry
from tests.support.daemon import free_loopback_base, running
from tests.support.wait import until

SITE = """
[site]
name = "failsafe test"
interconnect_kw = 500
pue = 1.0
base_load_kw = 0

[prices]
format = "demo"

[mining]
hashprice_usd_per_ths_day = 0.08

[inference]
committed_tokens_s = {committed}
committed_usd_per_mtok = 0.6

[daemon]
horizon = "2h"
step = "5min"
stage_ahead_s = 0
confirm_after_s = 0
failsafe_cap_kw = {failsafe}

[[devices]]
name = "s19"
kind = "asic"
model = "S19j Pro"
count = 6
[devices.adapter]
kind = "sim"
sim_base = "{base}"
sim_sleep_s = 0.2
sim_wake_s = 0.4
timeout_s = 10

[[devices]]
name = "h100"
kind = "gpu"
model = "H100 SXM"
power_caps_w = {caps}
count = 4
[devices.adapter]
kind = "sim"
"""


_free_base = free_loopback_base


def _daemon(
    tmp_path: Path,
    base: str,
    committed: float = 1000.0,
    failsafe_kw: float = 10.0,
    caps: str = "[700, 350]",
    posture: str = "hold",
) -> Daemon:
    text = SITE.format(committed=committed, failsafe=failsafe_kw, base=base, caps=caps)
    text = text.replace(
        "confirm_after_s = 0", f"confirm_after_s = 0\nfailsafe_posture = {posture!r}"
    )
    config = parse_site(tomllib.loads(text), "test", str(tmp_path))
    return Daemon(config, tmp_path / "gridsched.db")


def _group(d: Daemon, device_id: str) -> str:
    return d.fleet.status[device_id].group


def _awake(d: Daemon, group: str) -> int:
    return sum(1 for i, m in d.devices.modes.items() if m != SLEEP and _group(d, i) == group)


def _gpu_tokens(d: Daemon) -> float:
    """Tokens/s the GPUs serve in the modes they were last commanded to."""
    dc = d.devices.classes["h100"]
    return sum(
        m.throughput_tokens_s
        for i, name in d.devices.modes.items()
        if _group(d, i) == "h100" and (m := dc.mode(name)) is not None
    )


def _event(kind: EventType, **kw: Any) -> GridEvent:
    return GridEvent(id=kw.pop("id", kind.value), type=kind, start=datetime.now(UTC), **kw)


async def _absurd_price(d: Daemon) -> None:
    """A price signal of 1e300 USD/MWh in force. The API refuses it since session 23 (a
    price beyond any market's); made here past that check, it is still what these tests
    need: a solve that fails (HiGHS on 1e300), as any other solver failure would."""
    ok = _event(EventType.PRICE, id="absurd", duration="1h", price=100.0)
    ev = GridEvent.model_construct(**{**dict(ok), "price": 1e300})
    await d.accept([ev], "test", None, "{}")
    for t in list(d.tasks.running):  # the re-plan it asks for: run it here instead
        t.cancel()
    d.planning.pending = False


async def _shed_done(d: Daemon) -> None:
    await until(lambda: not d.shedder.running, what="the fast path done")


async def _get(d: Daemon, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(d))
    async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
        return await c.get(path)


def _sample(d: Daemon, name: str, labels: dict[str, str] | None = None) -> float | None:
    value = metrics_registry(d).get_sample_value(name, labels or {})
    return None if value is None else float(value)


# -- a solve that does not end optimal ------------------------------------------------------


def test_a_failed_solve_keeps_the_last_good_plan_and_says_so(tmp_path: Path) -> None:
    d = _daemon(tmp_path, _free_base())

    async def go() -> None:
        async with running(d):
            good = await d.replan("start")
            assert good is not None and good.ok and d.plan is good
            gpus, miners = _awake(d, "h100"), _awake(d, "s19")
            assert gpus > 0
            assert (await _get(d, "/healthz")).status_code == 200

            await _absurd_price(d)
            failed = await d.replan("signal")  # HiGHS ends with an error
            # never the zero-unit plan of the failed solve (every device asleep)
            assert _awake(d, "h100") == gpus and _awake(d, "s19") == miners
            assert failed is None and d.plan is good
            status = d.status()
            assert status["plan"]["status"] == "error"
            assert "error" in (status["plan"]["error"] or "")
            assert status["failsafe"] is None  # the last good plan still covers now
            r = await _get(d, "/healthz")
            assert r.status_code == 503 and "re-plan failed" in r.json()["error"], r.text
            assert _sample(d, "gridsched_plan_ok") == 0.0
            assert _sample(d, "gridsched_plan_failures_total") == 1.0
            kinds = [k for _s, _at, k, *_ in d.store.records(0, time.time() + 1, ("plan-failed",))]
            assert kinds == ["plan-failed"]

            # the price is withdrawn: the next plan is good and everything says so again
            await d.accept([GridEvent(id="absurd", type=EventType.CANCEL)], "test", None, "{}")
            again = await d.replan("cancel")
            assert again is not None and d.plan is again
            assert d.status()["plan"]["error"] is None
            assert (await _get(d, "/healthz")).status_code == 200
            assert _sample(d, "gridsched_plan_ok") == 1.0

    asyncio.run(go())


def test_with_no_good_plan_covering_now_the_site_goes_to_the_fail_safe_posture(
    tmp_path: Path,
) -> None:
    committed = 1000.0
    d = _daemon(tmp_path, _free_base(), committed=committed, failsafe_kw=5.0)

    async def go() -> None:
        async with running(d):
            await _absurd_price(d)
            assert await d.replan("start") is None and d.plan is None
            await d.poll()  # the next poll sees no plan and holds the fail-safe posture
            await _shed_done(d)
            # committed inference keeps serving; miners shed to the fail-safe cap
            assert _gpu_tokens(d) >= committed
            assert _awake(d, "s19") == 0  # 5 kW leaves no room for a 3 kW miner beside GPUs
            status = d.status()
            assert "no good plan" in (status["failsafe"] or "")
            assert status["cap_kw"] == 5.0
            r = await _get(d, "/healthz")
            assert r.status_code == 503 and "no good plan" in r.text, r.text
            assert _sample(d, "gridsched_failsafe_active") == 1.0
            # the SRE's walk (session 24, D2): the fail-safe cap was exported as an event
            # in force, gridsched_signals_active{type="curtail"} 1 with no signal at all, so
            # GridschedDREventNotMet paged about a DR event no grid operator sent, and the
            # dashboard drew "DR curtail in force"; it is the fail-safe's own gauge's alone
            assert _sample(d, "gridsched_signals_active", {"type": "curtail"}) is None

    asyncio.run(go())


def test_the_sleep_miners_posture_puts_every_miner_to_sleep_and_keeps_inference(
    tmp_path: Path,
) -> None:
    committed = 1000.0  # a fail-safe cap of 100 kW would leave room for every miner
    d = _daemon(tmp_path, _free_base(), committed, failsafe_kw=100.0, posture="sleep_miners")

    async def go() -> None:
        async with running(d):
            assert _awake(d, "s19") == 6
            await _absurd_price(d)
            assert await d.replan("start") is None and d.plan is None
            await _shed_done(d)
            assert _awake(d, "s19") == 0 and _gpu_tokens(d) >= committed
            assert d.status()["failsafe_posture"] == "sleep_miners"

    asyncio.run(go())


def test_a_fail_safe_posture_that_would_stop_committed_inference_is_refused() -> None:
    text = SITE.format(committed=1000.0, failsafe=10.0, base="127.1.0.0", caps="[700]")
    data = tomllib.loads(text)
    data["daemon"]["failsafe_posture"] = "sleep_all"
    with pytest.raises(ConfigError) as err:
        parse_site(data, "site.toml")
    assert "daemon.failsafe_posture" in str(err.value)
    assert "valid: hold, sleep_miners" in str(err.value)


def test_a_last_good_plan_that_no_longer_covers_now_gives_way_to_the_fail_safe(
    tmp_path: Path,
) -> None:
    committed = 1000.0
    d = _daemon(tmp_path, _free_base(), committed=committed, failsafe_kw=5.0)

    async def go() -> None:
        async with running(d):
            good = await d.replan("start")
            assert good is not None and good.ok
            await _absurd_price(d)
            assert await d.replan("signal") is None and d.plan is good
            assert d.failsafe_reason(time.time()) is None
            # The horizon runs out with no new plan: shift the plan wholly into the past.
            span = int(good.ends_s[-1] - good.starts_s[0])
            good.starts_s -= span + 60
            good.ends_s -= span + 60
            assert d.plans.index(time.time()) is None
            await d.poll()
            await _shed_done(d)
            assert "no good plan" in (d.failsafe_reason(time.time()) or "")
            # committed inference served, and the site shed to the fail-safe cap, miners
            # first: six S19j Pro (18.4 kW) cannot all stay, one may (3.1 kW plus the GPUs
            # serving the commitment sits within 5 kW or just above it, by the readings)
            load = d.power.measured(time.time(), expect=True)["import_kw"]
            assert _gpu_tokens(d) >= committed and load <= 5.0 + 1e-6, load
            assert _awake(d, "s19") <= 1

    asyncio.run(go())


# -- the cap cannot be computed -------------------------------------------------------------


def test_a_cap_that_cannot_be_computed_is_the_most_restrictive_not_infinite(
    tmp_path: Path,
) -> None:
    d = _daemon(tmp_path, _free_base(), failsafe_kw=40.0)

    async def go() -> None:
        async with running(d):
            # level 2 has no cap in [tariff.dr_levels_kw]: the cap computation raises
            bad = _event(EventType.CURTAIL, id="lvl2", duration="1h", level=2)
            d.signals.book().put(bad)
            cap, events = d.cap_now()
            assert math.isfinite(cap) and cap == 40.0  # the fail-safe cap, never +inf
            assert "lvl2" in {e.id for e in events}
            # with a lower cap also in force, that one still holds
            d.signals.book().put(_event(EventType.CURTAIL, id="low", duration="1h", limit_kw=12.0))
            assert d.cap_now()[0] == 12.0
            status = d.status()
            assert status["cap_kw"] == 12.0
            assert "lvl2" in (status["cap_error"] or "")
            assert "ConfigError" not in status["cap_error"], status["cap_error"]  # in words
            # said once, not "event 'lvl2': events: invalid configuration events: event
            # 'lvl2': ..." (the SRE's walk, session 24, N5)
            assert status["cap_error"].count("lvl2") == 1, status["cap_error"]
            assert "invalid configuration" not in status["cap_error"], status["cap_error"]
            assert _sample(d, "gridsched_cap_fallback") == 1.0
            # a last good cap of 0 kW (a full curtail) is the most restrictive: it holds
            d.signals.book().drop("low")
            d.signals.book().drop("lvl2")
            d.signals.book().put(_event(EventType.CURTAIL, id="zero", duration="1h", limit_kw=0.0))
            assert d.cap_now()[0] == 0.0 and d.signals.cap_error is None
            d.signals.book().drop("zero")
            d.signals.book().put(bad)
            assert d.cap_now()[0] == 0.0 and d.signals.cap_error is not None

    asyncio.run(go())


def test_a_polled_level_without_a_cap_is_planned_at_the_fail_safe_cap(tmp_path: Path) -> None:
    """A SIMPLE level the site has no cap for, polled from a VTN (no answer can refuse it):
    every re-plan failed while it was in force (session 24's note: /healthz 503, the plan
    left to run out, then the fail-safe posture). The fast path already counts such an
    event at the fail-safe cap; the plan now does the same, says so in its notes, and the
    site goes on being planned (prices, other events) under that cap."""
    d = _daemon(tmp_path, _free_base(), failsafe_kw=40.0)

    async def go() -> None:
        async with running(d):
            assert await d.replan("start") is not None
            d.signals.book().put(_event(EventType.CURTAIL, id="lvl2", duration="1h", level=2))
            plan = await d.replan("signal")
            assert plan is not None, d.status()["plan"]
            assert d.status()["plan"]["ok"], d.status()["plan"]
            first = float(plan.dr_cap_kw[0])
            assert first == 40.0, plan.dr_cap_kw[:3]
            assert any("lvl2" in n and "fail-safe" in n for n in plan.notes), plan.notes
            # the fast path and the status say the same
            assert d.cap_now()[0] == 40.0
            assert "lvl2" in (d.status()["cap_error"] or "")
            # after the event's hour, no DR cap: only the event was replaced
            after = plan.starts_s >= time.time() + 3600 + 60
            assert after.any() and not np.isfinite(plan.dr_cap_kw[after]).any()

    asyncio.run(go())


# -- the committed floor and the shed order in the fast path --------------------------------


@pytest.mark.parametrize(
    ("caps", "committed", "want"),
    [
        # 4 x 375 tok/s at 350 W: 3 GPUs at 350 W serve 1126 >= 1000; 2 would serve 751.
        ("[700, 350]", 1000.0, {"infer@350W": 3}),
        # 200 W serves 146 tok/s: no GPU may cap down (-334) or sleep (-481) without going
        # under 1723, so all four stay at 700 W.
        ("[700, 200]", 1723.0, {"infer@700W": 4}),
    ],
)
def test_a_curtail_to_zero_keeps_exactly_the_gpus_committed_inference_needs(
    tmp_path: Path, caps: str, committed: float, want: dict[str, int]
) -> None:
    d = _daemon(tmp_path, _free_base(), committed=committed, caps=caps)

    async def go() -> None:
        async with running(d):
            assert _awake(d, "s19") == 6 and _awake(d, "h100") == 4
            ev = _event(EventType.CURTAIL, id="dr", duration="1h", limit_kw=0.0)
            await d.accept([ev], "test", None, "{}")
            await _shed_done(d)
            assert _awake(d, "s19") == 0  # every miner shed
            gpu_modes: dict[str, int] = {}
            for i, m in d.devices.modes.items():
                if _group(d, i) == "h100" and m != SLEEP:
                    gpu_modes[m] = gpu_modes.get(m, 0) + 1
            assert gpu_modes == want
            assert _gpu_tokens(d) >= committed

    asyncio.run(go())


def test_the_fast_path_sheds_miners_before_any_gpu(tmp_path: Path) -> None:
    d = _daemon(tmp_path, _free_base(), committed=0.0)

    async def go() -> None:
        async with running(d):
            order = [_group(d, s.device_id) for s in shed_order(d.devices)]
            assert order[:6] == ["s19"] * 6 and set(order[6:]) == {"h100"}
            # A curtail that miners alone can meet leaves every GPU as it is.
            load = d.measured(expect=True)["import_kw"]
            ev = _event(EventType.CURTAIL, id="dr", duration="1h", limit_kw=load - 10.0)
            await d.accept([ev], "test", None, "{}")
            await _shed_done(d)
            assert 0 < 6 - _awake(d, "s19") <= 4
            assert {m for i, m in d.devices.modes.items() if _group(d, i) == "h100"} == {
                "infer@700W"
            }

    asyncio.run(go())


# -- background tasks -----------------------------------------------------------------------


def test_a_failing_background_task_is_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _daemon(tmp_path, _free_base())

    async def broken() -> None:
        raise ConnectionResetError("device went away")

    async def bug() -> None:
        raise KeyError("no such class")

    async def go() -> None:
        caplog.set_level(logging.INFO, "gridsched")
        d.tasks.spawn(broken(), "fast-path")
        d.tasks.spawn(bug(), "replan")
        await until(lambda: not d.tasks.running, what="both tasks ended")

    asyncio.run(go())
    lines = [r for r in caplog.records if "task" in r.getMessage()]
    fault = next(r for r in lines if "fast-path" in r.getMessage())
    assert "device went away" in fault.getMessage() and fault.exc_info is None  # one line
    bug_line = next(r for r in lines if "replan" in r.getMessage())
    assert bug_line.exc_info is not None  # a bug keeps its traceback
    assert _sample(d, "gridsched_task_failures_total", {"task": "fast-path"}) == 1.0
    assert _sample(d, "gridsched_task_failures_total", {"task": "replan"}) == 1.0


# -- a state file that takes no writes ------------------------------------------------------


async def _fill_the_disk(d: Daemon) -> None:
    """Cap the SQLite file at its size (as a full disk does) and fill what is left, so
    that the next record really fails with SQLITE_FULL."""
    await d.store.write(lambda con: con.execute("PRAGMA max_page_count = 1"))
    for size in (4000, 1000, 200, 20, 1):
        while True:
            try:
                await d.store.record("filler", "x" * size)
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc), exc  # SQLITE_FULL, as on a full disk
                break


def test_a_full_disk_skips_neither_the_fail_safe_nor_dispatch_nor_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = str(tmp_path / "notify.sock")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(sock_path)
    systemd.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    d = _daemon(tmp_path, _free_base(), failsafe_kw=5.0)

    async def go() -> None:
        async with running(d):
            good = await d.replan("start")
            assert good is not None
            await _fill_the_disk(d)
            with pytest.raises(sqlite3.OperationalError):
                await d.store.record("probe", {})
            # a silent price feed puts the site in the fail-safe while nothing can be written
            d.feeds.prices_ok_at = time.time() - 10 * d.config.daemon.price_feed.silent_after_s
            await d.poll()
            assert d.failsafe.state is not None and "price feed silent" in d.failsafe.state
            await _shed_done(d)
            assert _awake(d, "s19") < 6  # shed to the 5 kW fail-safe cap
            assert d.measured(expect=True)["import_kw"] <= 5.0 + 1e-6
            status = d.status()
            assert "disk is full" in (status["store"]["error"] or "")
            assert status["store"]["write_failures"] >= 1
            assert (_sample(d, "gridsched_store_write_failures_total") or 0) >= 1
            # a re-plan on the full disk still applies its plan
            d.plans.hold = True
            assert await d.replan("disk full") is not None
            assert not d.plans.hold

    asyncio.run(go())
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(systemd.recv(4096).decode())
            systemd.settimeout(0.5)
    systemd.close()
    assert sum("WATCHDOG=1" in g for g in got) >= 2  # both polls fed it


def test_a_failing_scheduled_job_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _daemon(tmp_path, _free_base())
    failed = asyncio.Event()

    async def broken_poll(dispatch: bool = True) -> None:
        failed.set()
        raise OSError("fleet unreachable")

    async def go() -> None:
        monkeypatch.setattr(d, "poll", broken_poll)
        d._start_jobs()  # the poll job runs every poll_s (15 s here): run it now
        try:
            d.scheduler.get_job("poll").modify(next_run_time=datetime.now(UTC))
            await asyncio.wait_for(failed.wait(), 30)
            # the listener runs right after the job
            await until(lambda: d.counters.task_failures.get("poll"), what="the failure counted")
        finally:
            d.scheduler.shutdown(wait=False)
        assert {k: n for k, n in d.counters.task_failures.items() if n} == {"poll": 1}
        assert _sample(d, "gridsched_task_failures_total", {"task": "poll"}) == 1.0

    asyncio.run(go())


def test_solver_failures_at_random_moments_never_harm_committed_inference_or_a_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 moments, each a good re-plan, a failed one (an error status or a raise), a
    curtail, a cancel, the horizon running out or a poll, in a seeded random order: after
    each, committed inference is served and no miner runs while import is over the cap."""
    committed = 1000.0
    d = _daemon(tmp_path, _free_base(), committed=committed, failsafe_kw=8.0)
    rng = random.Random(17)
    real_plan = d.planning.planner.plan
    outcome = {"next": "good"}

    def planned(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan(*args, **kwargs)
        if outcome["next"] == "status":
            plan.status = "error"  # as extract_plan leaves a failed solve: never applied
            for cp in plan.classes:
                cp.units_by_mode[:] = 0
        elif outcome["next"] == "raise":
            raise SolverError("HiGHS failed to run")
        return plan

    monkeypatch.setattr(d.planning.planner, "plan", planned)

    async def go() -> None:
        async with running(d):
            for moment in range(100):
                what = rng.choice(["good", "status", "raise", "curtail", "cancel", "gap", "poll"])
                if what in ("good", "status", "raise"):
                    outcome["next"] = what
                    await d.replan(f"moment {moment}")
                elif what == "curtail":
                    limit = rng.choice([0.0, 2.0, 5.0, 10.0, 20.0])
                    ev = _event(EventType.CURTAIL, id="dr", duration="1h", limit_kw=limit)
                    await d.accept([ev], "test", None, "{}")
                elif what == "cancel":
                    await d.accept([GridEvent(id="dr", type=EventType.CANCEL)], "test", None, "{}")
                elif what == "gap" and d.plan is not None:
                    span = int(d.plan.ends_s[-1] - d.plan.starts_s[0]) + 60
                    d.plan.starts_s -= span
                    d.plan.ends_s -= span
                    await d.poll()
                else:
                    await d.poll()
                for t in [t for t in d.tasks.running if t.get_name() == "replan"]:
                    t.cancel()  # re-plans happen only where this test says
                d.planning.pending = False
                await _shed_done(d)
                assert _gpu_tokens(d) >= committed, (moment, what)
                cap, _ = d.cap_now()
                assert math.isfinite(cap)
                if d.measured(expect=True)["import_kw"] > cap + 1e-6:
                    assert _awake(d, "s19") == 0, (moment, what, cap)

    asyncio.run(go())


def test_a_second_cap_arriving_during_a_fast_path_is_enforced_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path is busy commanding the fleet for a first curtail when a lower one
    arrives: it runs once more right after (coalesced), to the lower cap."""
    d = _daemon(tmp_path, _free_base(), committed=0.0)
    release = asyncio.Event()
    inside = asyncio.Event()

    async def go() -> None:
        async with running(d):
            real_apply = d.fleet.apply

            async def slow_apply(requests: Any) -> Any:
                if not release.is_set():
                    inside.set()
                    await release.wait()  # the first sweep is still going out
                return await real_apply(requests)

            monkeypatch.setattr(d.fleet, "apply", slow_apply)
            load = d.measured(expect=True)["import_kw"]
            first = _event(EventType.CURTAIL, id="first", duration="1h", limit_kw=load - 4.0)
            await d.accept([first], "test", None, "{}")
            await asyncio.wait_for(inside.wait(), 10)
            second = _event(EventType.CURTAIL, id="second", duration="1h", limit_kw=6.0)
            await d.accept([second], "test", None, "{}")
            assert d.shedder.again is not None  # queued behind the running one
            release.set()
            await _shed_done(d)
            assert d.cap_now()[0] == 6.0
            assert d.measured(expect=True)["import_kw"] <= 6.0 + 1e-6

    asyncio.run(go())


def test_the_plan_keeps_a_margin_under_a_dr_cap(tmp_path: Path) -> None:
    """A plan that fills a cap to the last nameplate watt measures over it (units draw a
    little over nameplate): the daemon plans cap_margin_pct under DR and fail-safe caps,
    and says so in the plan's notes. The fast path still enforces the cap itself."""
    d = _daemon(tmp_path, _free_base(), committed=0.0, failsafe_kw=100.0)

    async def go() -> None:
        async with running(d):
            ev = _event(EventType.CURTAIL, id="dr", duration="1h", limit_kw=9.0)
            await d.accept([ev], "test", None, "{}")
            for t in list(d.tasks.running):
                t.cancel()
            plan = await d.replan("signal")
            assert plan is not None
            k = d.plans.index(time.time())
            assert k is not None
            assert plan.cap_kw[k] == pytest.approx(9.0 * 0.98)
            assert plan.import_kw[k] <= 9.0 * 0.98 + 1e-6
            assert any("cap_margin_pct" in n for n in plan.notes)
            assert d.cap_now()[0] == pytest.approx(9.0)  # what is enforced is the cap

    asyncio.run(go())


async def _started(d: Daemon) -> None:
    """The daemon's store and simulators started, its fleet connected and read once."""
    d.store.start()
    for sim in d.built.simulators:
        await sim.start()
    await d.fleet.connect_all()
    await d.poll(dispatch=False)


def _shutdown_site(tmp_path: Path, ignore: bool) -> tuple[Daemon, Callable[[], Awaitable[None]]]:
    """A site of six simulated miners and its shutdown (one ignoring its command)."""
    text = SITE.format(committed=0.0, failsafe=10.0, base=_free_base(), caps="[700, 350]")
    text = text.replace("confirm_after_s = 0", "confirm_after_s = 0\nshutdown_confirm_s = 2")
    d = Daemon(parse_site(tomllib.loads(text), "test", str(tmp_path)), tmp_path / "g.db")

    async def go() -> None:
        await _started(d)
        miners = [m for sim in d.built.simulators for m in getattr(sim, "miners", [])]
        if ignore:
            miners[0].inject("ignore")
        await d.stop()  # sleep_miners: the six miners are told to sleep

    return d, go


@pytest.mark.parametrize("ignore", [True, False], ids=["one ignores", "all obey"])
def test_the_shutdown_posture_is_reported_as_read_back_not_as_sent(
    tmp_path: Path, ignore: bool
) -> None:
    """A miner that answers success and stays awake is not "put in the safe posture": the
    shutdown reads the miners back and counts it as not confirmed. ``waited_s`` is the
    time the read-back took, ``limit_s`` the most it would wait (field25: ``waited_s`` was
    the limit, 40 s, where 5.1 s were waited)."""
    d, go = _shutdown_site(tmp_path, ignore)
    asyncio.run(go())
    r = d.shutdown_report
    want = (6, 5, 1, 0) if ignore else (6, 6, 0, 0)
    assert (r["told"], r["confirmed"], r["unconfirmed"], r["failed"]) == want, r
    assert r["limit_s"] == 2.0, r
    assert r["waited_s"] >= 2.0 if ignore else r["waited_s"] < 2.0, r


def test_a_plan_refused_for_its_inputs_is_not_called_a_solver_error(tmp_path: Path) -> None:
    """The SRE's walk (session 24, N3): with an input the plan refuses before any solve
    (then an OpenADR SIMPLE level the site has no cap for; now a device class it has not
    got, which only a bug past the intake could store), gridsched_solver_last_status said
    status="error", so GridschedSolverFailing read "the optimiser's last status is error".
    A plan refused for what it was given says invalid_input; a solver's failure stays error."""
    d = _daemon(tmp_path, _free_base())

    async def go() -> None:
        async with running(d):
            assert await d.replan("start") is not None
            bad = _event(EventType.CURTAIL, id="cls", duration="1h", limit_kw=5.0)
            d.signals.book().put(bad.model_copy(update={"classes": ("nope",)}))
            assert await d.replan("signal") is None
            assert d.status()["plan"]["status"] == "invalid_input"
            assert _sample(d, "gridsched_solver_last_status", {"status": "invalid_input"}) == 1.0

    asyncio.run(go())


def test_a_re_plan_that_succeeds_after_failures_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The SRE's walk (session 24): after 19 're-plan failed' ERROR lines, the plan that
    succeeded again logged nothing, so the log an on-call reads ended on the failure."""
    d = _daemon(tmp_path, _free_base())

    async def go() -> None:
        async with running(d):
            assert await d.replan("start") is not None
            await _absurd_price(d)
            assert await d.replan("signal") is None
            assert await d.replan("schedule") is None
            await d.accept([GridEvent(id="absurd", type=EventType.CANCEL)], "test", None, "{}")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="gridsched.daemon"):
                assert await d.replan("cancel") is not None
                assert await d.replan("schedule") is not None  # said once, not every plan

    asyncio.run(go())
    said = [r.getMessage() for r in caplog.records if "succeeded again" in r.getMessage()]
    assert said == ["re-plan (cancel) succeeded again after 2 failed"], said


def test_the_shutdown_is_not_undone_by_a_dispatch_its_read_backs_start(tmp_path: Path) -> None:
    """The mixed-fleet walk (session 25, D1): SIGTERM 1-2 s after a cancel, while the
    cancel's wakes waited for room, gave "60 devices told, 15 confirmed"; 56 of 60 miners
    were hashing as the daemon exited. The shutdown's own read-backs confirmed sleeps, and
    each confirmed verdict armed a dispatch 0.5 s later (``Dispatcher.heard``) that ran
    after the stop had cancelled the tasks and woke the miners it had put to sleep. Once
    the daemon stops, no verdict arms a dispatch, one armed before is disarmed, and a task
    spawned late never runs."""
    d, _ = _shutdown_site(tmp_path, ignore=False)
    ran: list[str] = []

    async def late() -> None:
        ran.append("late task")

    async def go() -> None:
        await _started(d)
        d.dispatcher.waiting_for_room = True  # wakes put off for room, as after a cancel
        (dev,) = list(d.fleet.status)[:1]
        confirmed = Outcome(dev, ModeRequest("sleep"), True, 1, 0.0, kind=OutcomeKind.CONFIRMED)
        d.dispatcher.heard(confirmed)
        assert d.dispatcher._again is not None  # armed before the stop
        await d.stop()
        assert d.dispatcher._again is None, "the armed dispatch is disarmed by the stop"
        d.dispatcher.heard(confirmed)  # a verdict the shutdown's read-back delivers
        assert d.dispatcher._again is None
        d.tasks.spawn(late(), "late")
        await asyncio.sleep(0.8)  # past REDISPATCH_AFTER_S

    asyncio.run(go())
    assert ran == [], ran


def test_miners_a_curtail_put_to_sleep_keep_their_min_off_after_the_cancel(
    tmp_path: Path,
) -> None:
    """The mixed-fleet walk (session 25, D2): with ``min_off_s = 300`` a cancel woke every
    miner 95 s (and 10 s) after the curtail had put it to sleep; the plan counted only the
    stops inside its own horizon. The daemon now notes when it put each miner to sleep,
    and the plan after the cancel keeps them asleep until their min-off has passed."""
    text = SITE.format(committed=0.0, failsafe=10.0, base=_free_base(), caps="[700, 350]")
    text = text.replace(
        'model = "S19j Pro"\ncount = 6', 'model = "S19j Pro"\ncount = 6\nmin_off_s = 900'
    )
    d = Daemon(parse_site(tomllib.loads(text), "test", str(tmp_path)), tmp_path / "g.db")

    async def go() -> None:
        async with running(d):
            assert await d.replan("start") is not None
            await d.dispatch()
            awake = [i for i, m in d.devices.modes.items() if m != SLEEP and _group(d, i) == "s19"]
            assert awake, "the plan runs miners at these prices"
            ev = GridEvent(id="dr", type=EventType.CURTAIL, start=datetime.now(UTC),
                           duration="1h", limit_kw=0.5)  # fmt: skip
            await d.accept([ev], "test", None, "{}")
            await _shed_done(d)
            asleep = [i for i in awake if d.devices.modes[i] == SLEEP]
            assert asleep, d.devices.modes
            since = d.planning.state(time.time()).asleep_since or {}
            assert len(since.get("s19", [])) >= len(asleep), since
            await d.accept([GridEvent(id="dr", type=EventType.CANCEL)], "test", None, "{}")
            plan = await d.replan("cancel")
            assert plan is not None
            await d.dispatch()
            woken = [i for i in asleep if d.devices.modes[i] != SLEEP]
            assert woken == [], f"woken within min_off_s: {woken}"
            assert any("min_off_s" in n for n in plan.notes), plan.notes

    asyncio.run(go())
