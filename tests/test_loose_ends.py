"""Command-line values that cannot be meant are refused up front, naming the value, its
unit and what is valid; nothing is solved (or written) first."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.cli.main import main
from tests.conftest import EXAMPLE, ROOT
from tests.support.cli import run_main
from tests.support.daemon import free_loopback_base

START = "2023-08-10T05:00:00Z"
BASE = ["plan", "--config", str(EXAMPLE), "--start", START, "--horizon", "2h"]


@pytest.mark.parametrize("flag", ["--plot", "--csv", "--json-out"])
def test_output_into_a_missing_folder_is_refused_before_solving(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nodir" / "out.x"
    assert main([*BASE, flag, str(target)]) == 2
    out = capsys.readouterr()
    assert f"{flag} {target}" in out.err and "does not exist" in out.err
    assert out.out == ""  # no plan was made, nothing printed


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--hashprice", "-1"], ["--hashprice -1", "USD per TH/s per day", ">= 0"]),
        (["--hashprice", "50"], ["--hashprice 50", "per PH/s", "0.05"]),
        (["--current-load-kw", "-100"], ["--current-load-kw -100", ">= 0"]),
    ],
    ids=["negative-hashprice", "per-PH-hashprice", "negative-load"],
)
def test_implausible_numbers_are_refused_naming_the_unit(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*BASE, *argv]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


def test_hashprice_per_ph_in_the_site_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    lines = EXAMPLE.read_text().splitlines()
    site.write_text(
        "\n".join(
            "hashprice_usd_per_ths_day = 50.0" if ln.startswith("hashprice_usd_per_ths_day") else ln
            for ln in lines
        )
    )
    assert main(["validate", str(site)]) == 2
    err = capsys.readouterr().err
    assert "mining.hashprice_usd_per_ths_day" in err and "per PH/s" in err


def test_a_grid_too_large_to_solve_is_refused_with_its_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan", "--config", str(EXAMPLE), "--start", START, "--horizon", "365d"]
    assert main([*argv, "--step", "1min"]) == 2
    err = capsys.readouterr().err
    assert "525,600 steps" in err and "20,000" in err and "--step" in err


def test_audit_verify_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notdb = tmp_path / "notes.txt"
    notdb.write_text("not a database\n" * 100)
    res = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "audit", "verify", "--db", str(notdb)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    assert str(notdb) in res.stdout + res.stderr


def test_fleet_status_on_taken_simulator_addresses_names_them(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    text = (ROOT / "deploy" / "examples" / "simulated-site.toml").read_text()
    base = free_loopback_base()  # not the example's own: two runs on a host would collide
    first = base.rsplit(".", 1)[0] + ".1"
    assert 'sim_base = "127.5.0.0"' in text
    site.write_text(text.replace('sim_base = "127.5.0.0"', f'sim_base = "{base}"'))
    with socket.socket() as s:
        s.bind((first, 4028))
        s.listen()
        res = run_main("fleet", "status", "--config", str(site))  # in this process
    assert res.returncode == 4, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert first in res.stderr and "sim_base" in res.stderr
