"""The DR-trace report (scheduler/backtest/inference_dr.py): per interval, committed
inference served and the cap followed, and GPU energy with clock modes against caps only,
on a hand-made power trace and hand-made decisions whose figures are worked out below."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models.signals import events_from_power_trace
from models.site import SiteConfig
from scheduler.backtest.engine import BacktestSetup, PolicyRun, prepare
from scheduler.backtest.inference_dr import has_clock_modes, summarise, without_clock_modes
from scheduler.cli.main import main
from tests.conftest import DATA, T0, flat_series, make_site

STEP_S = 900
GPU = {
    "name": "gpu",
    "kind": "gpu",
    "count": 4,
    "idle_power_kw": 0.1,
    "modes": [
        {"name": "cap", "power_kw": 1.0, "throughput_tokens_s": 1000.0},
        {
            "name": "clock",
            "power_kw": 0.6,
            "throughput_tokens_s": 900.0,
            "sm_clock_mhz": [1000, 1400],
        },
    ],
}
ASIC = {
    "name": "asic",
    "kind": "asic",
    "count": 10,
    "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0}],
}


def _site(**inference: float) -> SiteConfig:
    return make_site(
        site={"interconnect_kw": 100.0},
        devices=[ASIC, GPU],
        inference={"committed_tokens_s": 2000.0, "committed_usd_per_mtok": 1.0, **inference},
    )


def _trace(tmp_path: Path) -> Path:
    """60 minutes at 1 min: 100 kW for 15 min (the baseline), 50 kW for 30 min, 100 kW."""
    rows = ["timestamp,total"]
    for minute in range(60):
        kw = 50.0 if 15 <= minute < 45 else 100.0
        ts = datetime.fromtimestamp(T0 + 60 * minute, UTC).isoformat()
        rows.append(f"{ts},{kw * 1000}")
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _setup(config: SiteConfig, tmp_path: Path) -> BacktestSetup:
    # the trace replayed at T0 on a 40 kW scale: caps of 20 kW on steps 1 and 2
    events = events_from_power_trace(_trace(tmp_path), datetime.fromtimestamp(T0, UTC), 40.0)
    prices = flat_series(np.full(300, 30.0), STEP_S, T0 - 86400)
    return prepare(config, prices, T0, T0 + 4 * STEP_S, STEP_S, 4 * STEP_S, events=events)


def _run(n: list[list[int]]) -> PolicyRun:
    return PolicyRun("hand", np.array(n, dtype=np.int64), np.zeros(4), np.zeros(4))


def test_sla_and_cap_columns_per_interval(tmp_path: Path) -> None:
    setup = _setup(_site(), tmp_path)
    assert np.isfinite(setup.inp.dr_cap_kw[setup.k0 : setup.k1]).tolist() == [
        False,
        True,
        True,
        False,
    ]
    # rows: asic/stock, gpu/cap, gpu/clock
    run = _run([[10, 5, 6, 0], [2, 0, 0, 2], [0, 2, 3, 0]])
    rows = summarise(setup, run).intervals
    assert [r.cap_kw for r in rows] == [None, 20.0, 20.0, None]
    # served: 2 x 1000, 2 x 900 (short of 2000), 3 x 900, 2 x 1000
    assert [r.served_tok_s for r in rows] == [2000.0, 1800.0, 2000.0, 2000.0]
    assert [r.sla_met for r in rows] == [True, False, True, True]
    # import: miners 3 kW each + GPUs in their modes + 0.1 kW per sleeping GPU
    assert [r.import_kw for r in rows] == pytest.approx([32.2, 16.4, 19.9, 2.2])
    assert [r.followed for r in rows] == [None, True, True, None]
    assert [r.gpu_kw for r in rows] == pytest.approx([2.2, 1.4, 1.9, 2.2])
    assert rows[1].gpu_modes == {"gpu/clock": 2}
    assert {r.latency for r in rows} == {"none stated"}

    over = _run([[10, 7, 6, 0], [2, 0, 0, 2], [0, 3, 3, 0]])  # 21 + 1.8 + 0.1 kW > 20
    rows = summarise(setup, over).intervals
    assert [r.followed for r in rows] == [None, False, True, None]
    assert [r.sla_met for r in rows] == [True, True, True, True]


def test_energy_against_the_same_site_with_caps_only(tmp_path: Path) -> None:
    config = _site()
    caps = without_clock_modes(config)
    assert has_clock_modes(config) and not has_clock_modes(caps)
    assert [m.name for m in caps.devices[1].modes] == ["cap"]
    clocked = _run([[10, 5, 6, 0], [2, 0, 0, 2], [0, 3, 3, 0]])
    caps_run = _run([[10, 4, 5, 0], [2, 2, 2, 2]])
    summary = summarise(_setup(config, tmp_path), clocked, _setup(caps, tmp_path), caps_run)
    d = summary.to_dict()
    # clock run: (2.2 + 1.9 + 1.9 + 2.2) kW x 0.25 h; caps only: 4 x 2.2 kW x 0.25 h
    assert d["gpu_energy_kwh"] == pytest.approx(2.05)
    assert d["caps_only"]["gpu_energy_kwh"] == pytest.approx(2.2)
    assert d["gpu_energy_saved_by_clock_modes_kwh"] == pytest.approx(0.15)
    assert d["gpu_energy_saved_by_clock_modes_pct"] == pytest.approx(6.82)
    assert (d["dr_intervals"], d["dr_cap_followed"], d["dr_sla_met"]) == (2, 2, 2)
    assert d["caps_only"]["sla_met_intervals"] == 4


def test_latency_objectives_are_unverified_in_a_replay(tmp_path: Path) -> None:
    setup = _setup(_site(itl_p95_s=0.1), tmp_path)
    rows = summarise(setup, _run([[10, 5, 6, 0], [2, 2, 2, 2], [0, 0, 0, 0]])).intervals
    assert {r.latency for r in rows} == {"unverified"}
    assert all(r.sla_met for r in rows)  # tokens/s met; latency is not claimed


def test_a_class_with_only_clock_modes_cannot_be_compared() -> None:
    only = {**GPU, "modes": [GPU["modes"][1]]}  # type: ignore[index]
    config = make_site(devices=[ASIC, only])
    with pytest.raises(ValueError, match="every mode locks the SM clock"):
        without_clock_modes(config)


def test_cli_reports_inference_under_the_real_dr_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command of docs/backtest.md on a short window (the trace's first hours)."""
    trace = DATA / "emerald_srp_dr_event_total_power_1min.csv"
    prices = DATA / "ercot_rtm_spp_15min_hubs_2021_2025.csv"
    if not (trace.exists() and prices.exists()):
        pytest.skip(f"shared data not present in {DATA}")
    out = tmp_path / "bt.json"
    code = main(
        [
            "backtest",
            "--config",
            str(Path(__file__).resolve().parent.parent / "deploy/examples/inference-dr-h100.toml"),
            "--prices",
            str(prices),
            "--price-format",
            "ercot-rtm",
            "--price-column",
            "HB_WEST",
            "--events",
            str(trace),
            "--events-at",
            "2025-05-04T14:40:00-07:00",
            "--from",
            "2025-05-04T18:00:00-05:00",
            "--to",
            "2025-05-04T20:00:00-05:00",
            "--horizon",
            "2h",
            "--policy",
            "scheduler",
            "--inference-dr",
            "--quiet",
            "--json-out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "inference under DR" in text and "with caps only" in text
    import json

    (section,) = json.loads(out.read_text())["inference_dr"]
    assert section["dr_intervals"] == 8
    assert section["sla_met_intervals"] == section["intervals"] == 8
    assert section["caps_only"] is not None
