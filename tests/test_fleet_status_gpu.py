"""``gridsched fleet status`` shows each GPU's power limit and SM clock lock as read back:
a lock as its range, "none" for the driver's own clocks, and "unknown" where a reader
cannot tell (NVML cannot read a lock back, and ``fleet status`` sets none); in its table
and in ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import run_main
from tests.test_gpu_mode_truth import SITE


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    return site


def test_fleet_status_shows_each_gpus_power_limit_and_clock_lock(tmp_path: Path) -> None:
    res = run_main("fleet", "status", "--config", str(_site(tmp_path)), "--all")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    (head,) = [line for line in lines if line.lstrip().startswith("device")]
    assert "limit W" in head and "SM lock" in head
    rows = [line for line in lines if line.lstrip().startswith("h100/gpu")]
    assert len(rows) == 2
    # the simulator starts at its 700 W limit; a reader cannot tell the lock
    assert all("700" in r and "unknown" in r for r in rows), rows


def test_fleet_status_json_names_the_limit_and_the_lock(tmp_path: Path) -> None:
    res = run_main("fleet", "status", "--config", str(_site(tmp_path)), "--json")
    assert res.returncode == 0, res.stderr
    gpus = [d for d in json.loads(res.stdout)["devices"] if d["class"] == "h100"]
    assert len(gpus) == 2
    for g in gpus:
        assert g["power_limit_w"] == 700.0
        assert g["sm_clock_lock"] == "unknown"


def test_the_class_row_says_unknown_throughput_and_each_failure_kind(tmp_path: Path) -> None:
    """The docs walk (session 25, N2 and N3): running GPUs whose throughput no reading has
    given were summed as "tokens/s 0", and rejected and unconfirmed devices shared one
    column, where the README names them apart."""
    res = run_main("fleet", "status", "--config", str(_site(tmp_path)))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    (head,) = [line for line in lines if line.lstrip().startswith("class")]
    cells = head.split()
    assert "rejected" in cells and "unconfirmed" in cells, head
    (row,) = [line for line in lines if line.lstrip().startswith("h100")]
    assert "+2 unknown" in row, row
