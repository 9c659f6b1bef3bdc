"""Shared helpers: sites built from dicts, flat price series, the real-data folder."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  - imported before any test starts a thread:
import numpy as np
import pyasic  # noqa: F401  - CPython 3.11.7 can fail compiling while another thread runs
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from models.market import Series
from models.site import SiteConfig, parse_site
from scheduler.planner.inputs import PlanInputs, SiteState, assemble_inputs
from scheduler.planner.invariants import check_plan
from scheduler.planner.optimize import Planner
from scheduler.planner.plan import Plan
from scheduler.planner.timegrid import uniform_grid

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
EXAMPLE = ROOT / "deploy" / "examples" / "west-texas-30mw.toml"
T0 = 1_700_006_400  # 2023-11-15T00:00:00Z, a Wednesday

# Hypothesis keeps its example database and caches in the system's temporary folder, not in
# the checkout: a test run writes nothing into the repository (a failing example still
# replays on the next run on this machine). HYPOTHESIS_STORAGE_DIRECTORY still overrides it.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "gridsched-hypothesis")

ASIC = {
    "name": "asic",
    "kind": "asic",
    "count": 10,
    "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0}],
}
GPU = {
    "name": "gpu",
    "kind": "gpu",
    "count": 10,
    "modes": [{"name": "full", "power_kw": 1.0, "throughput_tokens_s": 1000.0}],
}


def site_dict(**sections: Any) -> dict[str, Any]:
    """A 1-class toy site: 10 ASICs of 3 kW / 100 TH/s, hashprice 0.24 (1 USD/h/unit)."""
    d: dict[str, Any] = {
        "site": {"name": "toy", "interconnect_kw": 1000.0},
        "mining": {"hashprice_usd_per_ths_day": 0.24},
        "devices": [copy.deepcopy(ASIC)],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return d


def make_site(**sections: Any) -> SiteConfig:
    return parse_site(site_dict(**sections), "test")


def flat_series(
    values: list[float] | np.ndarray,
    step_s: int = 3600,
    start_s: int = T0,
    label: str = "test prices",
) -> Series:
    v = np.asarray(values, dtype=np.float64)
    return Series(label, "USD/MWh", start_s, step_s, v, np.arange(len(v)) + 2)


def solve(
    config: SiteConfig,
    prices: list[float] | np.ndarray,
    step_s: int = 3600,
    events: list[Any] | None = None,
    state: SiteState | None = None,
    planner: Planner | None = None,
) -> tuple[PlanInputs, Plan]:
    """Plan ``len(prices)`` steps and assert the plan is sound."""
    grid = uniform_grid(T0, step_s * len(prices), step_s)
    inp = assemble_inputs(config, grid, flat_series(prices, step_s), events, state)
    planner = planner or Planner()
    model, result, build_s = planner.solve(inp)
    from scheduler.planner.extract import extract_plan

    plan = extract_plan(inp, model, result, build_s, config.site.name, config.site.timezone)
    assert plan.ok, plan.notes
    problems = check_plan(inp, model, result.x, plan)
    assert not problems, problems
    return inp, plan


@pytest.fixture
def data_dir() -> Path:
    if not (DATA / "ercot_rtm_spp_15min_hubs_2021_2025.csv").exists():
        pytest.skip(f"real data not present at {DATA}")
    return DATA
