"""GPU modes by cap and by SM clock for prefill- and decode-heavy work (models/gpu_modes.py):
the figures re-derived from ../shared/data, the site options, and the plan's choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.registry import mode_request
from models import catalog, gpu_modes
from models.errors import ConfigError
from tests.conftest import DATA, make_site, solve

DECODE_H100 = {
    "name": "h100",
    "kind": "gpu",
    "model": "H100 SXM",
    "workload": "llama-3.1-70b",
    "phase": "decode",
    "power_caps_w": [700, 500, 350, 200],
    "decode_clock_mhz": [1005, 1410],
    "count": 8,
}


def _needs(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{name} not present in {DATA}")
    return path


@pytest.mark.parametrize("key", sorted(gpu_modes.DECODE_DRAW))
def test_decode_draw_re_derived_from_ml_energy(key: tuple[str, str]) -> None:
    path = _needs("mlenergy_llm_inference_a100_h100_v2.csv")
    point = gpu_modes.DECODE_DRAW[key]
    assert gpu_modes.derive_decode_draw_w(path, point) == pytest.approx(
        point.power_w_per_gpu, abs=0.01
    )


def test_decode_draw_of_the_h100_is_inside_the_published_h200_range() -> None:
    """[P] measured 137-300 W for decode on a 700 W H200; the H100's ML.ENERGY chat draws
    (same die and clocks, other memory) fall inside it: decode never reaches a 350 W cap."""
    for (gpu, _), point in gpu_modes.DECODE_DRAW.items():
        if gpu == "H100 SXM":
            assert 137.0 <= point.power_w_per_gpu <= 300.0


def test_prefill_cap_draw_re_derived_from_the_emerald_sweep() -> None:
    path = _needs("emerald_a100_dvfs_power_cap_sweep.csv")
    derived = gpu_modes.derive_prefill_cap_draw(path)
    assert [x for x, _ in derived] == pytest.approx([x for x, _ in gpu_modes.PREFILL_CAP_DRAW])
    assert [y for _, y in derived] == pytest.approx(
        [y for _, y in gpu_modes.PREFILL_CAP_DRAW], abs=1e-4
    )


def test_decode_caps_above_the_draw_fold_into_one_mode_budgeted_at_the_draw() -> None:
    dc = make_site(devices=[DECODE_H100]).devices[0]
    names = [m.name for m in dc.modes]
    assert names == ["infer@200W", "infer@350W", "infer@1410MHz"]
    full = catalog.GPU_WORKLOADS[("H100 SXM", "llama-3.1-70b")]
    uncapped = dc.mode("infer@350W")
    assert uncapped is not None
    assert uncapped.power_kw == pytest.approx(0.29725)  # the measured draw, not the cap
    assert uncapped.throughput_tokens_s == pytest.approx(full)
    clocked = dc.mode("infer@1410MHz")
    assert clocked is not None and clocked.sm_clock_mhz == (1005, 1410)
    # 32 % less energy per token at 6 % fewer tokens/s
    e_full = uncapped.power_kw / uncapped.throughput_tokens_s
    assert clocked.power_kw / clocked.throughput_tokens_s == pytest.approx(0.68 * e_full, rel=1e-5)
    assert clocked.throughput_tokens_s == pytest.approx(0.94 * full)
    # the adapter sets the cap that bounds the draw, and the clock range
    assert mode_request(dc, "infer@350W").power_w == 350.0
    req = mode_request(dc, "infer@1410MHz")
    assert (req.power_w, req.clocks_mhz) == (350.0, (1005, 1410))


def test_prefill_caps_budget_the_measured_draw_at_each_cap() -> None:
    spec = {**DECODE_H100, "phase": "prefill", "decode_clock_mhz": None}
    dc = make_site(devices=[spec]).devices[0]
    assert [m.name for m in dc.modes] == ["infer@700W", "infer@500W", "infer@350W", "infer@200W"]
    top = dc.mode("infer@700W")
    assert top is not None and top.power_kw == pytest.approx(0.7 * 0.9209)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"phase": None}, "decode_clock_mhz needs phase = 'decode'"),
        ({"phase": "prefill"}, "no published clock figures for prefill"),
        ({"decode_clock_mhz": [1410, 1005]}, "min <= max"),
        ({"workload": "llama-3.1-405b"}, "no throughput for workload"),
    ],
)
def test_bad_clock_options_are_named(change: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        make_site(devices=[{**DECODE_H100, **change}])


def test_the_plan_chooses_the_clock_mode_where_decode_draws_below_the_cap() -> None:
    """Committed decode on 8 H100s: the caps never bind (decode draws 297 W under a
    350 W cap), so the plan serves it with the SM clock locked, and says so by the mode's
    name; with the clock mode removed it falls back to the tightest cap."""
    inference = {"committed_tokens_s": 3000.0, "committed_usd_per_mtok": 1.0}
    site = make_site(devices=[DECODE_H100], inference=inference)
    _, plan = solve(site, [60.0, 60.0])
    chosen = plan.classes[0].units_at(0)
    assert chosen["infer@1410MHz"] == 7 and sum(chosen.values()) == 7
    assert plan.served_committed_tok_s[0] == pytest.approx(3000.0)

    caps_only = {**DECODE_H100, "decode_clock_mhz": None}
    _, plan = solve(make_site(devices=[caps_only], inference=inference), [60.0, 60.0])
    chosen = plan.classes[0].units_at(0)
    assert "infer@1410MHz" not in chosen and chosen["infer@200W"] == 7
