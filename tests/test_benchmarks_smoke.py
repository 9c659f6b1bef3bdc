"""Every benchmark that no other test runs, at its smallest size: it runs to its figures.

benchmarks/commands_during_sweep.py had set a private attribute the fleet no longer had and
died before its first round, unnoticed because nothing ran it. Each script below runs here
in its own process (``sys.executable``, the repository root as its working directory) on a
handful of devices, a round or two, a day of data, and must exit 0 and print the line its
figures are in. What is measured is not checked: only that the script still runs.

Run elsewhere, so not here: commands_during_sweep (tests/test_commands_during_sweep_bench.py),
fleet_control and its helpers fleet_setup, fleet_tally, fleet_sim and fleet_report
(tests/test_fleet_control_bench.py), site_scale (tests/test_site_scale_bench.py).
benchmarks/measure.py is a helper module, run through the scripts that import it.

Left out of this module: none of the thirteen. Where a script takes ``--base``, its miners
listen on a free loopback /24 (:func:`tests.support.daemon.free_loopback_base`); daemon_sweep
(a random ``127.x.0.0``), signal_to_fleet (``127.30.0.0``) and ven_latency (``127.12.0.0``,
``127.31.0.0``) choose their own and take no ``--base``. forecast_skill needs the real ERCOT
prices at ``../shared/data`` and is skipped without them; backtest_speed falls back to its
synthetic demo series there. ven_latency's MQTT round needs mosquitto; without it the script
says so and goes on, and the webhook line checked here is printed either way.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.daemon import free_loopback_base

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"  # where the scripts read real prices from


def _base(n: int) -> list[str]:
    return ["--base", free_loopback_base(n)]


def _none() -> list[str]:
    return []


# id: (script, its smallest arguments, extra arguments made at run time, a regex one line of
# its output must match, whether it needs ../shared/data)
Case = tuple[str, list[str], Callable[[], list[str]], str, bool]
CASES: dict[str, Case] = {
    "audit_archive": (
        "audit_archive", ["--records", "200", "--archive", "100"], _none,
        r"^archive: 100 records in .*; file ", False,
    ),
    "audit_write": (
        "audit_write", ["--signals", "20", "--in-flight", "5", "--single", "5"], _none,
        r"^20 signals, 5 in flight: .*/s; one at a time: .* ms each$", False,
    ),
    "backtest_speed": (
        "backtest_speed", ["--days", "1"], _none,
        r"^rolling scheduler: 96 plans in .*, 0 failures$", False,
    ),
    "controller_overhead": (
        "controller_overhead", ["--miners", "20", "--gpus", "8", "--rounds", "1", "--polls", "1"],
        _none, r"^round 1: .* for 28 commands .*; all confirmed: True$", False,
    ),
    "daemon_sweep": (
        "daemon_sweep", ["--miners", "4"], _none,
        r"^wake, stale session .*\(4 ok\)$", False,
    ),
    "forecast_skill": (
        "forecast_skill", ["--test-year", "2022", "--stride", "96", "--train-stride", "48"],
        _none, r"^blend 1 h +\d", True,
    ),
    "gpu_agents": (
        "gpu_agents", ["--agents", "2", "--per-agent", "2", "--sweeps", "1"], _none,
        r"^sweep \(median of 1\): .* per reading", False,
    ),
    "gpu_readings": (
        "gpu_readings", ["--gpus", "4", "--sweeps", "1", "--concurrency", "2"],
        lambda: _base(1), r"^simulator CPU s per sweep: median ", False,
    ),
    "gpu_readings-per-call": (
        "gpu_readings", ["--gpus", "4", "--sweeps", "1", "--concurrency", "2", "--per-call"],
        lambda: _base(1), r"^4 GPUs, 1 sweeps, remote, six calls per reading$", False,
    ),
    "gpu_readings-in-process": (
        "gpu_readings", ["--gpus", "4", "--sweeps", "1", "--in-process"], _none,
        r"^controller CPU s per sweep: median .*per reading", False,
    ),
    "miner_clients": (
        "miner_clients", ["--miners", "2", "--rounds", "1", "--firmware", "luxos"],
        lambda: _base(2), r"^firmware=luxos  client=pyasic  identified=2/2 ", False,
    ),
    "miner_clients-adapters": (
        "miner_clients",
        ["--miners", "2", "--rounds", "1", "--firmware", "luxos", "--through", "adapters"],
        lambda: _base(2),
        r"^firmware=luxos  client=pyasic adapter  identified=2/2 .*pause read back=2/2", False,
    ),
    "plan_latency": (
        "plan_latency", ["--sizes", "2x2x24", "--repeat", "1", "--multires", "5min:1h,15min:2h"],
        _none, r"^ +2x2x24 +multires \d+ variables", False,
    ),
    "signal_to_fleet": (
        "signal_to_fleet",
        ["--miners", "4", "--signals", "1", "--burst", "4", "--clients", "2", "--scrapes", "1"],
        _none, r"^webhook throughput: 4 of 4 signed signals accepted .*; lost 0$", False,
    ),
    "ven_latency": (
        "ven_latency", ["--events", "2"], _none,
        r"^webhook: VTN create -> daemon answered 2xx .*: n=2 ", False,
    ),
    "ven_latency-shed": (
        "ven_latency",
        ["--shed", "--events", "2", "--step-miners", "2", "--poll-events", "0",
         "--channels", "webhook"],
        _none, r"^shed by webhook: daemon CPU .* over the round", False,
    ),
    "verdict_burst": (
        "verdict_burst", ["--miners", "10", "--unconfirmed", "2"], _none,
        r"^2,058 devices, 2 unconfirmed at once: the turn of the loop ", False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_benchmark_runs_at_its_smallest_size(case: str) -> None:
    script, args, extra, line, needs_data = CASES[case]
    if needs_data and not DATA.is_dir():
        pytest.skip(f"benchmarks/{script}.py needs the real price data at {DATA}")
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}.py", *args, *extra()],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert re.search(line, done.stdout, re.MULTILINE), done.stdout[-3000:]
