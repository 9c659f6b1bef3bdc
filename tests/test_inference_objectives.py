"""Latency objectives of committed inference: mapped to the GPU modes and tokens/s that
meet them (models/inference_objectives.py, scheduler/planner/objectives.py), and reported
met / missed / unverified from a vLLM-shaped metrics page over a window."""

from __future__ import annotations

import pytest

from models import catalog
from models import inference_objectives as io
from tests.conftest import DATA, make_site, solve

DECODE_H100 = {
    "name": "h100",
    "kind": "gpu",
    "model": "H100 SXM",
    "workload": "llama-3.1-70b",
    "phase": "decode",
    "power_caps_w": [700, 350, 200],
    "decode_clock_mhz": [1005, 1410],
    "count": 16,
}
ML_ENERGY = DATA / "mlenergy_llm_inference_a100_h100_v2.csv"


@pytest.mark.parametrize("key", sorted(io.ITL_CURVES))
def test_itl_curves_re_derived_from_ml_energy(key: tuple[str, str]) -> None:
    if not ML_ENERGY.exists():
        pytest.skip(f"{ML_ENERGY.name} not present in {DATA}")
    curve = io.ITL_CURVES[key]
    derived = io.derive_itl_curve(ML_ENERGY, curve)
    assert [p.batch_size for p in derived] == [p.batch_size for p in curve.points]
    for mine, theirs in zip(curve.points, derived, strict=True):
        assert mine.mean_itl_s == pytest.approx(theirs.mean_itl_s, abs=1e-6)
        assert mine.tokens_s == pytest.approx(theirs.tokens_s, abs=0.06)
    # the curve's best load is the catalog's full-power throughput per GPU
    best = max(p.tokens_s for p in curve.points) / curve.num_gpus
    gpu = catalog.find_gpu(key[0])
    assert best == pytest.approx(catalog.gpu_full_throughput(gpu, key[1]), rel=1e-3)


def test_tokens_within_an_itl_interpolate_between_measured_loads() -> None:
    curve = io.ITL_CURVES[("H100 SXM", "llama-3.1-70b")]  # 4 GPUs
    a, b = curve.points[0], curve.points[1]  # batch 64 and 128
    mid = (a.mean_itl_s + b.mean_itl_s) / 2
    assert io.tokens_s_within(curve, mid) == pytest.approx((a.tokens_s + b.tokens_s) / 2 / 4)
    assert io.tokens_s_within(curve, a.mean_itl_s) == pytest.approx(a.tokens_s / 4)
    assert io.tokens_s_within(curve, a.mean_itl_s - 1e-6) is None  # below the lowest load
    assert io.tokens_s_within(curve, 10.0) == pytest.approx(1923.3 / 4)


def test_the_h100_8b_curve_takes_the_best_load_not_the_last() -> None:
    """H100 8B peaks at batch 192 (2,475 tokens/s) and gives less at 256-1024: a looser
    objective never counts fewer tokens than a tighter one."""
    curve = io.ITL_CURVES[("H100 SXM", "llama-3.1-8b")]
    got = [io.tokens_s_within(curve, s) or 0.0 for s in (0.07, 0.1, 0.2, 0.3)]
    assert got == sorted(got) and got[-1] == pytest.approx(2474.6)


def test_a_tighter_objective_counts_fewer_tokens_and_drops_slow_modes() -> None:
    site = make_site(devices=[DECODE_H100])
    dc = site.devices[0]
    loose = {o.mode.name: o for o in io.mode_offers(dc, 0.6) or []}
    tight = {o.mode.name: o for o in io.mode_offers(dc, 0.3) or []}
    for name, o in loose.items():
        assert o.tokens_s is not None and o.tokens_s <= o.mode.throughput_tokens_s + 1e-9
        lower = tight[name].tokens_s
        assert lower is not None and lower < o.tokens_s
    # p95 = mean x 2.09: the 350 W mode (decode never reaches it, f = 1) at batch 64
    floor = io.lowest_itl_p95_s(io.ITL_CURVES[("H100 SXM", "llama-3.1-70b")], 1.0)
    assert floor == pytest.approx(0.076770 * 456.39 / 218.36)
    edge = {o.mode.name: o for o in io.mode_offers(dc, floor + 1e-6) or []}
    assert edge["infer@350W"].tokens_s == pytest.approx(811.5 / 4, rel=1e-4)
    assert edge["infer@200W"].tokens_s is None  # a binding cap slows every step
    assert "not offered" in edge["infer@200W"].reason


def test_custom_modes_have_no_latency_figures() -> None:
    site = make_site(
        devices=[
            {
                "name": "gpu",
                "kind": "gpu",
                "count": 2,
                "modes": [{"name": "full", "power_kw": 1.0, "throughput_tokens_s": 1000.0}],
            }
        ]
    )
    assert io.mode_offers(site.devices[0], 0.1) is None


COMMITTED = {"committed_tokens_s": 3000.0, "committed_usd_per_mtok": 1.0}


def test_the_plan_counts_the_tokens_that_meet_the_objective() -> None:
    """Committed 3,000 tokens/s of Llama-70B on H100s: without an objective 7 GPUs serve
    it at the clock lock (452 tokens/s each); with itl_p95_s = 0.3 s each is counted at
    the load that meets it (342 tokens/s), so 9 are woken, and the plan says why."""
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=COMMITTED), [60.0])
    assert sum(plan.classes[0].units_at(0).values()) == 7

    stated = {**COMMITTED, "itl_p95_s": 0.3}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    chosen = {m: n for m, n in plan.classes[0].units_at(0).items() if n}
    assert chosen == {"infer@1410MHz": 9}
    k = inp.mode_names.index("infer@1410MHz")
    assert inp.tput_tok_s[k] == pytest.approx(341.5, abs=0.1)
    assert plan.served_committed_tok_s[0] == pytest.approx(3000.0)
    assert any("itl_p95_s = 0.3 s, class h100" in n for n in plan.notes)


def test_a_mode_that_cannot_meet_the_objective_is_not_offered() -> None:
    stated = {**COMMITTED, "itl_p95_s": 0.165}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert inp.mode_names == ["infer@350W"]  # the cap at 200 W and the clock lock: slower
    assert any("infer@200W not offered" in n for n in plan.notes)
    assert plan.served_committed_tok_s[0] == pytest.approx(3000.0)


def test_no_mode_meets_it_the_fastest_serves_at_its_lowest_load_and_says_so() -> None:
    """Rule 3: sleeping every GPU would harm committed inference more than the latency;
    the fastest mode serves at its lowest measured load, and the note says it misses."""
    stated = {**COMMITTED, "itl_p95_s": 0.05}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert inp.mode_names == ["infer@350W"]
    assert inp.tput_tok_s[0] == pytest.approx(811.5 / 4, rel=1e-4)
    assert any("no mode meets it" in n and "expected missed" in n for n in plan.notes)


def test_ttft_is_reported_not_mapped_and_the_plan_says_so() -> None:
    stated = {**COMMITTED, "ttft_p95_s": 0.5}
    inp, plan = solve(make_site(devices=[DECODE_H100], inference=stated), [60.0])
    assert sum(plan.classes[0].units_at(0).values()) == 7
    assert any(n.startswith("ttft_p95_s: not mapped") for n in plan.notes)
