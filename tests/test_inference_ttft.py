"""Time to first token mapped to GPU modes from the site's own measured prefill rates.

No public figure gives the prefill rate of these GPUs per power cap or SM clock (the
ML.ENERGY runs publish time per output token only; the A100 cap sweep gives throughput
relative to its 400 W cap, not prompt tokens/s), so without ``prefill_tokens_s`` a
``ttft_p95_s`` is reported from the serving metrics and not mapped. With them, a mode
is offered only where queueing + prompt / prefill rate meets the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.errors import ConfigError
from tests.conftest import make_site, solve
from tests.support.clock import FakeClock
from tests.support.memfleet import memory_daemon, run_open
from tests.support.prices import write_flat_prices
from tests.test_inference_objectives import COMMITTED, DECODE_H100, daemon_site

#: the site's measured prompt tokens/s per mode (test figures, not published ones)
RATES = {"infer@350W": 8000.0, "infer@200W": 4000.0, "infer@1410MHz": 5000.0}
MEASURED = {**DECODE_H100, "prefill_tokens_s": RATES}
#: a 3,000-token prompt after 0.1 s in the queue: 0.475 s at 350 W, 0.70 s at the clock
#: lock, 0.85 s at 200 W
TTFT = {**COMMITTED, "ttft_prompt_tokens": 3000, "ttft_queue_s": 0.1}


def test_without_measured_rates_ttft_is_reported_not_mapped() -> None:
    _inp, plan = solve(
        make_site(devices=[DECODE_H100], inference={**TTFT, "ttft_p95_s": 0.5}), [60.0]
    )
    assert sum(plan.classes[0].units_at(0).values()) == 7  # as without the objective
    assert any(n.startswith("ttft_p95_s: not mapped") and "h100" in n for n in plan.notes)


def test_modes_whose_prefill_misses_the_objective_are_not_offered() -> None:
    inp, plan = solve(make_site(devices=[MEASURED], inference={**TTFT, "ttft_p95_s": 0.5}), [60.0])
    assert inp.mode_names == ["infer@350W"]
    assert plan.served_committed_tok_s[0] == pytest.approx(3000.0)
    note = next(n for n in plan.notes if n.startswith("ttft_p95_s = 0.5 s, class h100"))
    assert "infer@350W offered (modelled TTFT 0.475 s" in note
    assert "infer@1410MHz not offered (modelled TTFT 0.700 s" in note
    assert "infer@200W not offered (modelled TTFT 0.850 s" in note
    assert "the site's measured prefill rates" in note


def test_a_looser_objective_offers_every_mode() -> None:
    inp, _plan = solve(make_site(devices=[MEASURED], inference={**TTFT, "ttft_p95_s": 1.0}), [60.0])
    assert inp.mode_names == ["infer@200W", "infer@350W", "infer@1410MHz"]


def test_no_mode_meets_it_the_quickest_prefill_serves_and_says_so() -> None:
    inp, plan = solve(make_site(devices=[MEASURED], inference={**TTFT, "ttft_p95_s": 0.2}), [60.0])
    assert inp.mode_names == ["infer@350W"]
    assert any("no mode meets it" in n and "expected missed" in n for n in plan.notes)


def test_ttft_and_itl_together_offer_the_modes_that_meet_both() -> None:
    """itl_p95_s = 0.165 s keeps only the 350 W cap; a TTFT every mode meets changes
    nothing; one only the clock lock and 350 W meet still leaves 350 W alone."""
    both = {**TTFT, "itl_p95_s": 0.165, "ttft_p95_s": 0.75}
    inp, _plan = solve(make_site(devices=[MEASURED], inference=both), [60.0])
    assert inp.mode_names == ["infer@350W"]
    loose = {**TTFT, "itl_p95_s": 0.4, "ttft_p95_s": 0.75}
    inp, _plan = solve(make_site(devices=[MEASURED], inference=loose), [60.0])
    assert inp.mode_names == ["infer@350W", "infer@1410MHz"]


def test_the_daemon_commands_only_the_modes_meeting_ttft(tmp_path: Path) -> None:
    """The daemon's fast path and fail-safe posture read ``DeviceModes.offered``, built
    by the plan's rule: with ttft_p95_s = 0.5 s only the 350 W cap is offered, and the
    GPUs woken run it, none clock-locked (without the objective 7 run the clock lock)."""
    clock = FakeClock()
    write_flat_prices(tmp_path / "prices.csv", clock.time(), 60.0)
    objective = {"ttft_p95_s": 0.5, "ttft_prompt_tokens": 3000, "ttft_queue_s": 0.1}
    site = daemon_site(objective, prefill_tokens_s=RATES)
    d, devices = memory_daemon(site, tmp_path, clock, asleep=True)
    assert set(d.devices.offered["h100"]) == {"infer@350W"}

    async def body() -> None:
        await d.feeds.refresh_prices()
        plan = await d.replan("test")
        assert plan is not None
        await d.dispatch()
        running = [v for v in devices.values() if v.state == "running"]
        assert running
        assert {(v.told[-1].power_w, v.told[-1].clocks_mhz) for v in running} == {(350.0, None)}
        assert any("infer@1410MHz not offered" in n for n in plan.notes)

    run_open(d, body)


@pytest.mark.parametrize(
    ("device", "inference", "where", "words"),
    [
        (
            {**DECODE_H100, "prefill_tokens_s": {**RATES, "infer@9W": 1.0}},
            {},
            "devices[0]",
            "prefill_tokens_s: 'infer@9W' is no mode of class h100",
        ),
        (
            {**DECODE_H100, "prefill_tokens_s": {"infer@350W": 8000.0}},
            {},
            "devices[0]",
            "prefill_tokens_s: no rate for modes ['infer@1410MHz', 'infer@200W']",
        ),
        (
            {**DECODE_H100, "prefill_tokens_s": {**RATES, "infer@200W": -1.0}},
            {},
            "devices[0].prefill_tokens_s.infer@200W",
            "greater than 0",
        ),
        (MEASURED, {"ttft_p95_s": 0.5}, "inference.ttft_prompt_tokens", "required"),
        (MEASURED, {"ttft_prompt_tokens": 0}, "inference.ttft_prompt_tokens", "greater than 0"),
        (MEASURED, {"ttft_queue_s": -1}, "inference.ttft_queue_s", "greater than or equal"),
        (
            {
                "name": "miner",
                "kind": "asic",
                "count": 1,
                "modes": [{"name": "stock", "power_kw": 3.0, "hashrate_ths": 100.0}],
                "prefill_tokens_s": {"stock": 1.0},
            },
            {},
            "devices[0]",
            "GPU classes only",
        ),
    ],
)  # fmt: skip
def test_bad_prefill_figures_are_named(
    device: dict[str, Any], inference: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        make_site(devices=[device], inference=inference)
    msg = str(err.value)
    assert where in msg and words in msg, msg
