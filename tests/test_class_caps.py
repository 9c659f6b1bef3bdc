"""A cap on part of the site: an event that names device classes caps their power at the
meter (PUE x IT power, ``models.economics.site_load_kw``), not the site's import.

OpenADR 3 sends such a cap as a DISPATCH_SETPOINT for one resource (User Guide 8.9.3-1)
when ``[[openadr.resources]]`` says which device classes the resource covers.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from models.economics import site_load_kw
from models.errors import ConfigError
from models.signals import GridEvent, class_problems
from models.site import OpenADR, OpenADRResource
from scheduler.planner.build import build_model
from scheduler.planner.class_caps import class_caps_at, class_excess_kw, group_power_kw
from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.optimize import Planner
from scheduler.planner.rounding import round_plan
from scheduler.planner.timegrid import uniform_grid
from scheduler.service.openadr import read_notification
from tests.conftest import ASIC, GPU, T0, flat_series, make_site, solve

START = datetime.fromtimestamp(T0, UTC)


def _site(pue: float = 1.2, idle_kw: float = 0.0) -> Any:
    asic = {**ASIC, "idle_power_kw": idle_kw}
    return make_site(
        site={"name": "toy", "interconnect_kw": 1000.0, "pue": pue},
        devices=[asic, dict(GPU)],
        inference={"committed_tokens_s": 10_000.0},  # every GPU serves, all day
    )


def _cap(classes: list[str] | None, limit_kw: float, h0: int = 1, h1: int = 3) -> GridEvent:
    body: dict[str, Any] = {
        "id": "part",
        "type": "curtail",
        "start": (START + timedelta(hours=h0)).isoformat(),
        "end": (START + timedelta(hours=h1)).isoformat(),
        "limit_kw": limit_kw,
    }
    if classes is not None:
        body["classes"] = classes
    return GridEvent.model_validate(body)


def _class_kw(plan: Any, name: str, pue: float) -> np.ndarray:
    (cp,) = [c for c in plan.classes if c.name == name]
    return np.asarray(site_load_kw(np.asarray(cp.power_kw, dtype=np.float64), pue, 0.0))


def test_a_cap_on_the_miners_holds_their_power_at_the_meter_and_leaves_the_gpus_free() -> None:
    site = _site(pue=1.2)
    # cheap power: without the event every ASIC runs (1 USD/h each against 0.036 USD/h)
    inp, plan = solve(site, [10.0] * 4, events=[_cap(["asic"], 10.0)])
    asic = _class_kw(plan, "asic", 1.2)
    gpu = _class_kw(plan, "gpu", 1.2)
    # 3 kW x 1.2 = 3.6 kW at the meter per ASIC: two fit under 10 kW, a third does not
    assert asic[1:3].max() <= 10.0 + 1e-6
    assert np.allclose(asic[1:3], 7.2)
    assert np.allclose(asic[[0, 3]], 36.0)  # outside the event: all ten
    # the GPUs are not in the cap: 10 x 1 kW x 1.2 = 12 kW, above the 10 kW, every step
    assert np.allclose(gpu, 12.0)
    assert np.isinf(inp.dr_cap_kw).all()  # the site's import is not capped
    assert plan.violations == []


def test_the_same_cap_for_the_gpus_leaves_the_miners_free() -> None:
    site = _site(pue=1.0)
    _, plan = solve(site, [10.0] * 4, events=[_cap(["gpu"], 5.0)])
    assert _class_kw(plan, "gpu", 1.0)[1:3].max() <= 5.0 + 1e-6
    assert np.allclose(_class_kw(plan, "asic", 1.0), 30.0)
    # committed inference beyond the cap is short, and said so
    assert any(v.constraint == "inference-sla" for v in plan.violations)


def test_idle_power_of_every_unit_in_service_counts_against_the_class_cap() -> None:
    # 10 ASICs idle at 0.2 kW: 2 kW x 1.5 = 3 kW of the 10 kW is used before any unit wakes;
    # each awake unit adds (3 - 0.2) x 1.5 = 4.2 kW: one fits (7.2), two do not (11.4)
    site = _site(pue=1.5, idle_kw=0.2)
    _, plan = solve(site, [10.0] * 4, events=[_cap(["asic"], 10.0)])
    (cp,) = [c for c in plan.classes if c.name == "asic"]
    assert cp.units_by_mode.sum(axis=0)[1:3].tolist() == [1, 1]
    assert _class_kw(plan, "asic", 1.5)[1:3].max() <= 10.0 + 1e-6


def test_a_class_cap_below_the_idle_power_is_broken_and_reported_not_infeasible() -> None:
    site = _site(pue=1.0, idle_kw=0.5)  # 5 kW idle for the class, cap 1 kW
    _, plan = solve(site, [10.0] * 4, events=[_cap(["asic"], 1.0)])
    (v,) = [v for v in plan.violations if v.constraint == "class-cap"]
    assert "asic" in v.message and "part" in v.message
    (cp,) = [c for c in plan.classes if c.name == "asic"]
    assert cp.units_by_mode.sum(axis=0)[1:3].tolist() == [0, 0]


def test_rounding_never_puts_a_class_above_its_cap() -> None:
    """An LP answer of 2.7 units rounds to 3; the whole-unit plan must shed back to 2."""
    site = _site(pue=1.0)
    grid = uniform_grid(T0, 4 * 3600, 3600)
    inp = assemble_inputs(site, grid, flat_series([10.0] * 4), [_cap(["asic"], 8.1)])
    x = np.zeros((inp.K, inp.T))
    x[0] = [10, 2.7, 2.7, 10]  # the asic class-mode
    x[1] = 10  # the GPUs
    n = round_plan(inp, x, np.full(inp.T, 500.0), inp.tput_tok_s @ x)
    assert n[0].tolist() == [10, 2, 2, 10]
    assert (group_power_kw(inp, n)[0][1:3] <= 8.1).all()


def test_a_cap_on_both_classes_caps_their_sum() -> None:
    site = _site(pue=1.0)
    _, plan = solve(site, [10.0] * 4, events=[_cap(["asic", "gpu"], 20.0)])
    both = _class_kw(plan, "asic", 1.0) + _class_kw(plan, "gpu", 1.0)
    assert both[1:3].max() <= 20.0 + 1e-6
    assert np.allclose(both[[0, 3]], 40.0)


def test_an_unknown_class_is_a_clear_error() -> None:
    site = _site()
    grid = uniform_grid(T0, 4 * 3600, 3600)
    with pytest.raises(ConfigError) as err:
        assemble_inputs(site, grid, flat_series([10.0] * 4), [_cap(["s21"], 10.0)])
    text = str(err.value)
    assert "part" in text and "'s21'" in text and "asic" in text and "gpu" in text
    assert class_problems([_cap(["asic", "x"], 1.0)], ["asic", "gpu"]) == [
        ("event part: classes", "unknown device class 'x' (valid: asic, gpu)")
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"type": "price", "price": 50.0, "classes": ["asic"]}, "curtail"),
        ({"type": "curtail", "level": 2, "classes": ["asic"]}, "limit_kw"),
        ({"type": "curtail", "limit_kw": 5.0, "classes": []}, "empty"),
        ({"type": "curtail", "limit_kw": 5.0, "classes": ["asic", "asic"]}, "twice"),
    ],
)
def test_classes_on_an_event_are_validated(body: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        GridEvent.model_validate({"id": "e", "start": START.isoformat(), **body})
    assert words in str(err.value)


def test_class_caps_at_gives_the_cap_in_force_per_set_of_classes() -> None:
    """What the daemon's fast path reads: the tightest cap per set of classes at t."""
    site = _site()
    a = _cap(["asic"], 10.0)
    b = _cap(["asic"], 6.0, h0=2, h1=4).model_copy(update={"id": "tighter"})
    g = _cap(["gpu"], 4.0).model_copy(update={"id": "gpus"})
    whole = _cap(None, 100.0).model_copy(update={"id": "site"})
    at = [START + timedelta(hours=h, minutes=30) for h in range(5)]
    got = [class_caps_at(site, [a, b, g, whole], t) for t in at]
    assert got == [
        {},
        {("asic",): 10.0, ("gpu",): 4.0},
        {("asic",): 6.0, ("gpu",): 4.0},
        {("asic",): 6.0},
        {},
    ]
    cancel = GridEvent.model_validate({"id": "tighter", "type": "cancel"})
    assert class_caps_at(site, [a, b, cancel], at[2]) == {("asic",): 10.0}
    # the site file's own events count too; an unknown class is the same clear error
    with pytest.raises(ConfigError, match="s21"):
        class_caps_at(site, [_cap(["s21"], 1.0)], at[1])


def test_class_excess_is_the_meter_kw_above_each_cap() -> None:
    """The fast path's figure: how much to shed from each capped group now."""
    site = _site(pue=1.2)
    caps = {("asic",): 10.0, ("gpu",): 20.0, ("asic", "gpu"): 30.0}
    got = class_excess_kw(site, caps, {"asic": 15.0, "gpu": 10.0})
    # asic: 15 x 1.2 = 18 > 10; gpu: 12 <= 20; both: 25 x 1.2 = 30, not above 30
    assert got == {("asic",): pytest.approx(8.0)}
    with pytest.raises(ValueError, match="gpu"):  # a class with no figure is not 0 kW
        class_excess_kw(site, caps, {"asic": 15.0})


def test_a_class_cap_event_moving_across_the_horizon_keeps_the_matrix() -> None:
    """The rows exist for every step of a horizon with a class cap; only bounds move."""
    site = _site()
    grid = uniform_grid(T0, 4 * 3600, 3600)
    one = assemble_inputs(site, grid, flat_series([10.0] * 4), [_cap(["asic"], 10.0)])
    two = assemble_inputs(site, grid, flat_series([10.0] * 4), [_cap(["asic"], 5.0, 2, 4)])
    base = build_model(one)
    again = build_model(two, reuse=base)
    assert again.reused and "class-cap" in again.con_blocks
    _, warm, _ = (p := Planner()).solve(one)
    _, warm, _ = p.solve(two)
    _, cold, _ = Planner().solve(two)
    assert warm.ok and cold.ok and np.isclose(warm.objective, cold.objective)
    # and a horizon with no class cap has no such rows
    none = dataclasses.replace(one, class_cap_groups=[], class_cap_kw=np.zeros((0, one.T)))
    assert "class-cap" not in build_model(none).con_blocks


def test_a_dispatch_setpoint_for_a_resource_covering_the_miners_caps_them_in_the_plan() -> None:
    """User Guide example 8.9.3-1, for a resource standing for the ``asic`` class."""
    oadr = OpenADR(ven_name="v", resources=(OpenADRResource(name="miners", classes=("asic",)),))
    site = _site(pue=1.2).model_copy(update={"openadr": oadr})
    body = {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "ev1",
            "programID": "p1",
            "intervalPeriod": {
                "start": (START + timedelta(hours=1)).isoformat(),
                "duration": "PT2H",
            },
            "payloadDescriptors": [{"payloadType": "DISPATCH_SETPOINT", "units": "KW"}],
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [10]}]}],
        },
    }
    reading = read_notification(body, START, oadr)
    assert [(p.payload_type, p.acted) for p in reading.payloads] == [("DISPATCH_SETPOINT", True)]
    events = [GridEvent.model_validate(d) for d in reading.events]
    (cap,) = [e for e in events if e.type == "curtail"]
    assert cap.classes == ("asic",) and cap.limit_kw == 10.0 and cap.id == "oadr:ev1:0/miners"
    _, plan = solve(site, [10.0] * 4, events=events)
    assert _class_kw(plan, "asic", 1.2)[1:3].max() <= 10.0 + 1e-6
    assert np.allclose(_class_kw(plan, "gpu", 1.2), 12.0)


def test_a_seeded_plan_over_merged_steps_keeps_the_class_cap() -> None:
    """The coarse seed (``scheduler.planner.seed``) takes each class cap at its tightest
    over the merged steps; the fine plan reaches the unseeded optimum under it."""
    site = _site(pue=1.2)
    grid = uniform_grid(T0, 4 * 3600, 300)
    prices = flat_series([10.0, 80.0, 10.0, 40.0])
    inp = assemble_inputs(site, grid, prices, [_cap(["asic"], 10.0)])
    plain, seeded = Planner(), Planner()
    plain.seed_min_vars = None
    seeded.seed_min_vars = 0
    _, r0, _ = plain.solve(inp)
    model, r1, _ = seeded.solve(inp)
    assert r0.ok and r1.ok and "seed" in r1.extras
    assert r1.objective == pytest.approx(r0.objective, rel=1e-9, abs=1e-6)
    x = model.values(r1.x, "x")
    assert (group_power_kw(inp, x)[0][12:36] <= 10.0 + 1e-6).all()


def test_the_backtest_window_slices_the_class_caps_with_the_steps() -> None:
    from scheduler.backtest.engine import slice_inputs

    site = _site()
    grid = uniform_grid(T0, 4 * 3600, 3600)
    inp = assemble_inputs(site, grid, flat_series([10.0] * 4), [_cap(["asic"], 10.0)])
    window = slice_inputs(inp, 1, 4)
    assert window.class_cap_kw.tolist() == [[10.0, 10.0, np.inf]]
    assert Planner().solve(window)[1].ok


def test_a_signal_naming_an_unknown_class_is_refused_at_intake_not_at_plan_time(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored, it would make every plan fail until it ended: refused with 422 instead."""
    import asyncio
    import json
    import tomllib

    import httpx

    from models.site import parse_site
    from scheduler.service.api import create_app
    from scheduler.service.daemon import Daemon
    from tests.test_daemon import SECRET, signed
    from tests.test_openadr_daemon import SITE

    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", SECRET)
    d = Daemon(parse_site(tomllib.loads(SITE), "test", str(tmp_path)), tmp_path / "g.db")
    start = datetime.now(UTC).isoformat()
    bad = {"id": "c1", "type": "curtail", "start": start, "duration": "1h", "limit_kw": 5}

    async def post(event: dict[str, Any]) -> httpx.Response:
        body = json.dumps(event).encode()
        transport = httpx.ASGITransport(app=create_app(d))
        async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
            return await c.post("/v1/signals", content=body, headers=signed(body))

    async def go() -> tuple[httpx.Response, httpx.Response]:
        d.store.start()
        try:
            refused = await post({**bad, "classes": ["s21"]})
            taken = await post({**bad, "id": "c2", "classes": ["s19"]})
            return refused, taken
        finally:
            for t in list(d.tasks.running):
                t.cancel()
            d.store.close()

    refused, taken = asyncio.run(go())
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["detail"]
    assert problem["field"] == "classes" and "'s21'" in problem["problem"]
    assert "s19" in problem["problem"]
    assert taken.status_code == 202, taken.text


def test_a_site_file_event_naming_an_unknown_class_is_refused_at_load() -> None:
    start = START.isoformat()
    event = {"id": "own", "type": "curtail", "start": start, "limit_kw": 5.0, "classes": ["s21"]}
    with pytest.raises(ConfigError) as err:
        make_site(events=[event])
    assert "own" in str(err.value) and "'s21'" in str(err.value) and "asic" in str(err.value)


def test_random_sites_with_a_class_cap_plan_soundly() -> None:
    """The random sites of test_properties with a cap on a random set of their classes:
    the plan is sound (``check_plan``: class power within the cap unless reported, and
    rounding never above the LP's), and the class stays under its cap wherever no
    class-cap violation is reported."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from models.site import parse_site
    from scheduler.planner.extract import extract_plan
    from scheduler.planner.invariants import check_plan, plan_units
    from tests.test_properties import sites

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sites(), st.data())
    def check(case: tuple[dict[str, Any], list[float], list[GridEvent]], data: Any) -> None:
        raw, prices, events = case
        names = [d["name"] for d in raw["devices"]]
        chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        t0 = T0 + 900 * data.draw(st.integers(0, 8))
        cap = GridEvent.model_validate(
            {
                "id": "part",
                "type": "curtail",
                "start": datetime.fromtimestamp(t0, UTC).isoformat(),
                "duration": f"{900 * data.draw(st.integers(1, 6))}s",
                "limit_kw": data.draw(st.floats(0, 60)),
                "classes": chosen,
            }
        )
        cfg = parse_site(raw, "random")
        grid = uniform_grid(T0, 12 * 900, 900)
        inp = assemble_inputs(cfg, grid, flat_series(prices, 900), [*events, cap])
        model, result, build_s = Planner().solve(inp)
        assert result.ok, result.termination
        plan = extract_plan(inp, model, result, build_s, "random", "America/Chicago")
        assert check_plan(inp, model, result.x, plan) == []
        broken = np.zeros(inp.T, dtype=bool)
        for v in plan.violations:
            if v.constraint == "class-cap":
                broken |= (inp.grid.starts_s >= v.start_s) & (inp.grid.starts_s <= v.end_s)
        kw = group_power_kw(inp, plan_units(plan))[0]
        # within the tolerance under which a violation is not worth reporting (TOL_KW)
        assert (kw[~broken] <= inp.class_cap_kw[0][~broken] + 1e-3).all()

    check()


def test_an_lp_shortfall_the_whole_units_cover_is_no_broken_invariant() -> None:
    """Found by the property test above (not a class cap's doing): ramping up from 0 kW, the
    LP serves 9.9 GPUs' worth of committed tokens in a step, rounding runs 10 and the plan
    is not short there, so no violation is reported, and check_plan must not want one."""
    gpu = {
        "name": "c0",
        "kind": "gpu",
        "count": 10,
        "modes": [{"name": "m0", "power_kw": 3.6875, "throughput_tokens_s": 50.0}],
    }
    site = make_site(
        site={"name": "r", "interconnect_kw": 38.0, "base_load_kw": 1.0,
              "ramp_up_kw_per_min": 0.5, "current_load_kw": 0.0},
        devices=[gpu],
        inference={"committed_tokens_s": 500.0, "committed_usd_per_mtok": 0.5},
        mining={"hashprice_usd_per_ths_day": 0.25},
    )  # fmt: skip
    prices = [0.0, 0.0, 0.0, 1861.0, 2465.0] + [0.0] * 7
    _, plan = solve(site, prices, step_s=900)  # asserts check_plan(...) == []
    assert plan.served_committed_tok_s[4] == pytest.approx(500.0)


def test_a_broken_site_cap_names_the_site_events_not_the_class_caps() -> None:
    # 8 kW of base load under a 5 kW cap: the cap is broken whatever runs
    site = make_site(site={"name": "toy", "interconnect_kw": 1000.0, "base_load_kw": 8.0})
    whole = _cap(None, 5.0).model_copy(update={"id": "site-cap"})
    _, plan = solve(site, [10.0] * 4, events=[whole, _cap(["asic"], 3.0)])
    (v,) = [v for v in plan.violations if v.constraint == "dr-cap"]
    assert "site-cap" in v.message and "part" not in v.message
