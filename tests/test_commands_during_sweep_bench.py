"""benchmarks/commands_during_sweep.py on a handful of miners: it runs to its table. It had
set a semaphore the fleet no longer has (``Fleet._sem``) and died before its first round,
unnoticed until a session ran it, since nothing ran it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.daemon import free_loopback_base

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_to_its_table() -> None:
    done = subprocess.run(
        [
            sys.executable, "benchmarks/commands_during_sweep.py", "--miners", "6",
            "--rounds", "2", "--read-concurrency", "4,2", "--settle-s", "0",
            "--base", free_loopback_base(6),
        ],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "warm-up round 1 done" in out and "round  2:" in out
    table = out[out.index("readings in flight") :].splitlines()[1:]
    assert [row.split()[0] for row in table] == ["4", "2"]
