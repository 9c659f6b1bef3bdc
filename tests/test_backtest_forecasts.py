"""The rolling scheduler's selectable price forecasts see only what was knowable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.markets import MARKETS
from scheduler.backtest import policies, price_forecasts
from scheduler.backtest.engine import BacktestSetup, prepare
from scheduler.backtest.forecast import blend
from scheduler.backtest.information import Known, known_at, settled_history
from scheduler.backtest.price_forecasts import RT_FORECASTS, DecisionForecast, make_forecast
from tests.conftest import T0, flat_series, make_site
from tests.test_backtest import LEAK_SITE

DAY = 86400
HIST_DAYS = 40
HOURS = 6
HORIZON_H = 6


def _prices(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly real-time and day-ahead prices: a daily shape, noise, and on some days an
    night spike lasting four hours that the day-ahead price does not show (so the last
    settled price is what tells a forecast that a spike is on)."""
    rng = np.random.default_rng(seed)
    n = (HIST_DAYS + 1) * 24 + HOURS + HORIZON_H
    hour = np.arange(n) % 24
    dam = 250 + 150 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 20, n)
    rt = dam + rng.normal(0, 40, n)
    spike_day = np.repeat(rng.uniform(size=n // 24 + 1) < 0.3, 24)[:n]
    spikes = spike_day & (hour < 4)
    rt[spikes] += rng.uniform(1000, 3000, int(spikes.sum()))
    return rt, dam


def dam_setup(rt: np.ndarray, dam: np.ndarray) -> BacktestSetup:
    start = T0 - (HIST_DAYS + 1) * DAY
    return prepare(
        make_site(**LEAK_SITE),
        flat_series(rt, 3600, start, "toy RT"),
        T0,
        T0 + HOURS * 3600,
        3600,
        HORIZON_H * 3600,
        flat_series(dam, 3600, start, "toy DAM"),
        market=MARKETS["ERCOT"],
    )


@pytest.mark.parametrize(
    "name", ["learned", "learned+blend", "blend", "blend-debiased", "blend-recent"]
)
def test_no_forecast_sees_the_price_of_the_step_being_decided(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing the realised price of step t alone changes neither the forecast the
    rolling scheduler plans with nor its decision, at t or before, with each selectable
    forecast; the learned ones really run (trained before --from) and the perturbed price
    does reach the forecasts of later decisions once settled."""
    monkeypatch.setattr(price_forecasts, "LEARNED_MAX_ITER", 40)  # a small model is enough
    real_make = price_forecasts.make_forecast
    rt, dam = _prices(7)
    first = (HIST_DAYS + 1) * 24  # index of the first decision's hour in the price files

    def run(prices: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        seen: list[np.ndarray] = []  # the forecast of each decision, as planned with

        def recording(*args: Any, **kw: Any) -> tuple[DecisionForecast, str]:
            f, label = real_make(*args, **kw)

            def wrapped(known: Known) -> np.ndarray:
                out = f(known)
                seen.append(out.copy())
                return out

            return wrapped, label

        monkeypatch.setattr(policies, "make_forecast", recording)
        out = policies.rolling_scheduler(dam_setup(prices, dam), progress=False, rt_forecast=name)
        if name.startswith("learned"):
            assert any("gradient-boosted" in n for n in out.notes), out.notes
        return out.n, seen

    ref, ref_seen = run(rt)
    for t in (0, 2, 4):
        for spike in (0.0, 5000.0):
            other = rt.copy()
            other[first + t] = spike
            n, seen = run(other)
            assert (n[:, : t + 1] == ref[:, : t + 1]).all(), (name, t, spike)
            for i in range(t + 1):
                assert np.array_equal(seen[i], ref_seen[i]), (name, t, spike, i)
            assert not np.array_equal(seen[t + 1], ref_seen[t + 1])  # once settled, it counts


def test_learned_forecast_falls_back_to_the_blend_and_says_why() -> None:
    rt, _ = _prices(1)
    start = T0 - (HIST_DAYS + 1) * DAY
    setup = prepare(
        make_site(**LEAK_SITE),
        flat_series(rt, 3600, start, "toy RT"),
        T0,
        T0 + HOURS * 3600,
        3600,
        HORIZON_H * 3600,
    )
    _, label = make_forecast(setup, "learned")
    assert "learned unavailable: no day-ahead file" in label
    with pytest.raises(ValueError, match="valid are blend, learned"):
        make_forecast(setup, "crystal-ball")
    assert RT_FORECASTS[0] == "blend"


def test_known_at_is_cut_at_what_was_settled_and_read_only() -> None:
    realised = np.arange(100.0)
    dam = realised + 1000
    known = known_at(realised, 40, 39.0, 40, 8, dam, dam[40:48])
    assert len(known.rt_settled) == 40 and known.rt_settled[-1] == 39.0
    assert known.dam_settled is not None and len(known.dam_settled) == 40
    assert known.age_steps == 1
    with pytest.raises(ValueError):
        known.rt_settled[0] = 1.0  # read-only: a forecast cannot write into the replay
    live = known_at(realised, 41, 40.0, 40, 8, None, None)
    assert live.age_steps == 0 and live.dam_settled is None
    with pytest.raises(ValueError, match="in the future"):
        known_at(realised, 42, 41.0, 40, 8, None, None)


def test_blend_counts_the_age_of_the_last_settled_price() -> None:
    ahead = np.zeros(3)
    fresh = blend(100.0, ahead, 1.0, 1.0)
    assert fresh[0] == 100.0
    aged = blend(100.0, ahead, 1.0, 1.0, age_steps=1)
    assert aged.tolist() == pytest.approx([100 * math.exp(-k) for k in (1, 2, 3)])


def test_the_blend_fades_over_two_hours_by_default_and_one_hour_is_still_an_option() -> None:
    """The default time constant is 2 h (docs/backtest.md, "The two missed stress
    months": it earned more in every stress month and in every year 2021-2024 and kept
    every goal); ``tau_h=1`` still gives the 1 h blend of the earlier figures, into the
    day-ahead curve and, where none is published, into the last settled day's shape."""
    rt, dam = _prices(3)
    n = 30 * 24  # the decision's step: 30 days settled
    with_dam = known_at(rt, n, float(rt[n - 1]), n, 6, dam, dam[n : n + 6])
    without = known_at(rt, n, float(rt[n - 1]), n, 6, None, None)
    setup = dam_setup(rt, dam)
    default, label = make_forecast(setup)
    assert price_forecasts.DAM_BLEND_TAU_H == 2.0 and "tau 2 h" in label
    one, label_one = make_forecast(setup, "blend", 1.0)
    assert "tau 1 h" in label_one
    # the last settled price is one step (1 h) old at the step being decided
    for f, tau in ((default, 2.0), (one, 1.0)):
        w = math.exp(-1.0 / tau)
        assert f(with_dam)[0] == pytest.approx(w * rt[n - 1] + (1 - w) * dam[n])
        assert f(without)[0] == pytest.approx(w * rt[n - 1] + (1 - w) * rt[n - 24])


def test_the_debiased_blend_corrects_the_day_ahead_curve_by_its_settled_median_error() -> None:
    """``blend-debiased``: the day-ahead curve moved, per time of day, by the median
    real-time minus day-ahead price of the last settled days; one scarcity day among
    them does not move it, and with too few settled days there is no correction."""
    per_day, days = 4, 3
    dam = np.tile([10.0, 20.0, 30.0, 40.0], 5)
    rt = dam - np.tile([1.0, 2.0, 3.0, 4.0], 5)  # the day-ahead price is high by 1..4
    rt[per_day + 2] += 5000.0  # a scarcity interval on one settled day
    n = 4 * per_day  # 4 days settled; the decision is at step n (after-interval)
    ahead = dam[n : n + 4]
    known = known_at(rt, n, float(rt[n - 1]), n, 4, dam, ahead)
    bias = price_forecasts.dam_bias(known, per_day, days)
    assert bias.tolist() == [-1.0, -2.0, -3.0, -4.0]
    # a decision mid-day: the horizon's first step is the day's third quarter
    mid = known_at(rt, n - 2, float(rt[n - 3]), n - 2, 3, dam, dam[n - 2 : n + 1])
    assert price_forecasts.dam_bias(mid, per_day, days).tolist() == [-3.0, -4.0, -1.0]
    early = known_at(rt, 2 * per_day, float(rt[7]), 2 * per_day, 4, dam, ahead)
    assert price_forecasts.dam_bias(early, per_day, days).tolist() == [0.0] * 4


def test_the_recent_blend_shifts_the_day_ahead_curve_by_todays_settled_error() -> None:
    """``blend-recent``: the day-ahead curve moved by the mean real-time minus day-ahead
    price of the last settled steps (the day-ahead market priced scarcity that has not
    come), the shift fading from the last settled step; none with too few settled."""
    steps = price_forecasts.RECENT_STEPS
    dam = np.full(24, 300.0)
    rt = np.full(24, 100.0)
    rt[: 10 - steps] = 5000.0  # older than the window: not counted
    n = 10  # settled; the decision is at step n (after-interval: one step old)
    known = known_at(rt, n, float(rt[n - 1]), n, 4, dam, dam[n : n + 4])
    dt_h = 0.25
    shift = price_forecasts.recent_shift(known, dt_h)
    fade = np.exp(-(np.arange(4) + 1) * dt_h / price_forecasts.RECENT_TAU_H)
    assert shift == pytest.approx(-200.0 * fade)
    few = known_at(rt, steps - 1, float(rt[steps - 2]), steps - 1, 4, dam, dam[:4])
    assert price_forecasts.recent_shift(few, dt_h).tolist() == [0.0] * 4
    without = known_at(rt, n, float(rt[n - 1]), n, 4, None, None)
    assert price_forecasts.recent_shift(without, dt_h).tolist() == [0.0] * 4


def test_training_history_ends_where_the_first_decision_starts() -> None:
    values = np.arange(48.0)
    series = flat_series(values, 3600, T0 - 48 * 3600)
    until = T0 - 5 * 3600 - 900  # inside an hour: that hour has not ended yet
    first, hist = settled_history(series, until, 900)
    assert first + 900 * len(hist) <= until
    poisoned = values.copy()
    poisoned[-6:] = np.nan  # the hour holding ``until`` and every later one
    _, again = settled_history(flat_series(poisoned, 3600, T0 - 48 * 3600), until, 900)
    assert np.array_equal(hist, again)


def test_the_cli_selects_the_forecast_and_the_report_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import build_parser, main
    from tests.test_backtest_honest import _argv, _gappy

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    bt = sub.choices["backtest"]  # type: ignore[index]
    option = next(a for a in bt._actions if a.dest == "rt_forecast")
    assert tuple(option.choices) == RT_FORECASTS and option.default == "blend"
    prices = _gappy(tmp_path, [])
    argv = _argv(prices, "--policy", "scheduler", "--rt-forecast", "learned")
    argv.remove("threshold,best-mode,oracle")
    argv.remove("--policy")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "note (scheduler): forecast: blend" in out
    assert "learned unavailable: no day-ahead file" in out
    with pytest.raises(SystemExit) as exc:
        main(_argv(prices, "--rt-forecast", "crystal-ball"))
    assert exc.value.code == 2
    assert "--rt-forecast" in capsys.readouterr().err


def test_the_blend_time_constant_is_an_option_and_a_bad_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main
    from tests.test_backtest_honest import _argv, _gappy

    prices = _gappy(tmp_path, [])
    for extra, tau in (((), "2"), (("--blend-tau-h", "1"), "1")):  # default 2 h
        argv = _argv(prices, *extra)
        argv[argv.index("--policy") + 1] = "scheduler"
        assert main(argv) == 0
        assert f"forecast: blend (last settled price fading, tau {tau} h" in (
            capsys.readouterr().out
        )
    assert main(_argv(prices, "--blend-tau-h", "-1")) == 2
    err = capsys.readouterr().err
    assert "--blend-tau-h -1.0" in err and "0 (the day-ahead curve alone) or more" in err
