"""Real public data from ../shared/data: loaders, catalog facts and a real ERCOT plan.
Skipped cleanly when the folder is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models import catalog
from models.market import load_btc_hashprice, load_ercot_dam, load_ercot_rtm
from models.site import load_site
from scheduler.planner.extract import extract_plan
from scheduler.planner.inputs import assemble_inputs
from scheduler.planner.invariants import check_plan
from scheduler.planner.optimize import Planner
from scheduler.planner.timegrid import uniform_grid
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.realdata


def test_ercot_rtm_is_complete_and_dst_correct(data_dir: Path) -> None:
    s = load_ercot_rtm(data_dir / "ercot_rtm_spp_15min_hubs_2021_2025.csv", "HB_WEST")
    assert s.interval_s == 900 and s.gaps() == []
    assert len(s.values) == 175_296
    # Winter Storm Uri: HB_WEST near the 9,000 USD/MWh cap on 2021-02-16 12:00 CST
    t = 1613498400  # 2021-02-16T18:00:00Z
    assert s.value_at(t) > 8900.0


def test_ercot_dam_hourly_and_fall_back_day(data_dir: Path) -> None:
    s = load_ercot_dam(data_dir / "ercot_dam_spp_hourly_hubs_lz_2021_2025.csv", "HB_WEST")
    assert s.interval_s == 3600 and s.gaps() == []
    # 2023-11-05 has 25 local hours: 25 values between its local midnights
    start, end = 1699160400, 1699250400  # 05:00Z Nov 5 -> 06:00Z Nov 6
    assert (end - start) // 3600 == 25
    assert np.isfinite(s.mean_over(np.array([start]), np.array([end]))).all()


def test_btc_hashprice_series(data_dir: Path) -> None:
    hp = load_btc_hashprice(data_dir / "btc_daily_network_2020_2026.csv", pool_fee=0.02)
    assert hp.interval_s == 86400 and hp.gaps() == []
    assert 0.02 < float(np.median(hp.values)) < 0.5


def test_catalog_matches_the_shared_facts(data_dir: Path) -> None:
    rows = {
        r["model"]: r for r in csv.DictReader((data_dir / "asic_miner_specs_nameplate.csv").open())
    }
    for spec in catalog.ASIC_SPECS:
        row = rows[spec.model]
        assert spec.hashrate_ths == pytest.approx(float(row["hashrate_ths"]))
        assert spec.power_w == pytest.approx(float(row["power_w"]), rel=1e-3)
    sweep = [
        r
        for r in csv.DictReader((data_dir / "emerald_a100_dvfs_power_cap_sweep.csv").open())
        if r["Workload"] == "infer_llama_8b"
    ]
    for r in sweep:
        frac = catalog.cap_throughput_fraction(float(r["GPU power cap"]), 400.0)
        assert frac == pytest.approx(float(r["normalized throughput"]), abs=1e-3)
    ml = {
        (r["gpu"], r["model"], r["config_batch_size"]): float(r["token_throughput_tok_per_s"])
        for r in csv.DictReader((data_dir / "mlenergy_llm_inference_a100_h100_v2.csv").open())
        if r["task"] == "chat"
    }
    h100_8b = ml[("NVIDIA H100 80GB HBM3", "meta-llama/Meta-Llama-3.1-8B-Instruct", "192")]
    assert catalog.GPU_WORKLOADS[("H100 SXM", "llama-3.1-8b")] == pytest.approx(h100_8b, rel=1e-3)


@pytest.mark.parametrize(
    "day", ["2021-02-15T06:00:00Z", "2023-08-10T05:00:00Z", "2024-03-10T06:00:00Z"]
)
def test_real_ercot_days_plan_soundly(data_dir: Path, day: str) -> None:
    from datetime import datetime

    cfg = load_site(EXAMPLE)
    prices = load_ercot_rtm(data_dir / "ercot_rtm_spp_15min_hubs_2021_2025.csv", "HB_WEST")
    start = int(datetime.fromisoformat(day.replace("Z", "+00:00")).timestamp())
    grid = uniform_grid(start, 48 * 3600, 900)
    inp = assemble_inputs(cfg, grid, prices)
    model, result, build_s = Planner().solve(inp)
    plan = extract_plan(inp, model, result, build_s, cfg.site.name, cfg.site.timezone)
    assert plan.ok and check_plan(inp, model, result.x, plan) == []
    # committed inference is served even at a loss (Uri); nothing else is broken
    assert plan.violations == []
    assert np.allclose(plan.served_committed_tok_s, plan.committed_tok_s)
    # miners never run when the price is far above every mode's breakeven
    dear = plan.price_usd_per_mwh > 1000
    assert (plan.mining_kw()[dear] == 0).all()
