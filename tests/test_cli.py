"""The CLI as a user runs it: real files in, tables, JSON, CSV and PNG out."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.cli.main import main
from tests.conftest import EXAMPLE, ROOT
from tests.support.cli import run_main

EVENTS = ROOT / "deploy" / "examples" / "events-2023-08-10.json"
START = "2023-08-10T05:00:00Z"


def test_plan_demo_prices_writes_all_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p"
    rc = main(
        [
            "plan",
            "--config",
            str(EXAMPLE),
            "--start",
            START,
            "--horizon",
            "24h",
            "--step",
            "15min",
            "--events",
            str(EVENTS),
            "--json-out",
            f"{out}.json",
            "--csv",
            f"{out}.csv",
            "--plot",
            f"{out}.png",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "DEMO synthetic prices (not market data)" in text
    assert "money over the horizon" in text and "profit" in text
    doc = json.loads(Path(f"{out}.json").read_text())
    assert doc["schema"] == "gridsched.plan/1"
    assert doc["prices"]["synthetic"] is True
    assert doc["horizon"]["steps"] == 96
    assert {c["name"] for c in doc["classes"]} == {"s19jpro", "s21", "h100"}
    assert len(doc["steps"]["import_kw"]) == 96
    assert max(doc["steps"]["import_kw"]) <= 30000 + 1e-6
    # the ERS event caps import at 12 MW from 22:00 to 24:00 UTC
    caps = dict(zip(doc["steps"]["start"], doc["steps"]["cap_kw"], strict=True))
    assert caps["2023-08-10T22:00:00Z"] == 12000 and caps["2023-08-10T21:45:00Z"] == 30000
    assert doc["steps"]["import_kw"][68] <= 12000 + 1e-6
    with Path(f"{out}.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 96 and "units:s21:turbo" in rows[0]
    assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"


def test_plan_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "plan",
                "--config",
                str(EXAMPLE),
                "--start",
                START,
                "--horizon",
                "6h",
                "--resolution",
                "5min:1h,15min",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["horizon"]["steps"] == 12 + 20
    assert doc["solver"]["status"] == "optimal"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--horizon", "2 fortnights"], "duration '2 fortnights' is not understood"),
        (["--start", "2023-08-10T05:07:00Z"], "not aligned to the 5-minute step"),
        (["--start", "2023-08-10T05:00:00"], "has no UTC offset"),
        (["--prices", "missing.csv", "--price-column", "HB_WEST"], "file not found"),
        (["--events", "missing.json"], "missing.json: invalid configuration"),
    ],
)
def test_bad_command_lines_exit_2_with_a_message(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["plan", "--config", str(EXAMPLE), "--start", START, "--horizon", "1h"]
    assert main(base + argv) == 2
    assert words in capsys.readouterr().err


def test_validate_shows_breakeven(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "breakeven USD/MWh" in out and "infer@350W" in out


def test_installed_entry_point_runs() -> None:
    exe = Path(sys.executable).parent / "gridsched"
    res = subprocess.run(
        [str(exe), "validate", str(ROOT / "nope.toml")], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2
    assert "nope.toml: invalid configuration" in res.stderr and "not found" in res.stderr


@pytest.mark.parametrize(
    "example", sorted((ROOT / "deploy" / "examples").glob("*.toml")), ids=lambda p: p.name
)
def test_every_shipped_example_validates_and_plans(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(example)]) == 0
    assert "valid" in capsys.readouterr().out
    assert (
        main(
            [
                "plan",
                "--config",
                str(example),
                "--start",
                START,
                "--horizon",
                "12h",
                "--step",
                "15min",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["solver"]["status"] == "optimal"
    steps = doc["steps"]
    assert all(v <= c + 1e-6 for v, c in zip(steps["import_kw"], steps["cap_kw"], strict=True))


def test_backtest_runs_on_the_demo_series_without_shared_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bt"
    rc = main(
        [
            "backtest",
            "--config",
            str(EXAMPLE),
            "--from",
            "2023-08-10",
            "--to",
            "2023-08-11",
            "--decision-step",
            "1h",
            "--horizon",
            "12h",
            "--events",
            str(EVENTS),
            "--json",
            "--json-out",
            f"{out}.json",
            "--plot",
            f"{out}.png",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["schema"] == "gridsched.backtest/2" and doc["currency"] == "USD"
    by = {p["policy"]: p for p in doc["policies"]}
    assert set(by) == {
        "scheduler",
        "threshold",
        "best-mode",
        "best-mode+peaks",
        "always-on",
        "oracle",
    }
    assert by["scheduler"]["plans"] == 24
    oracle = by["oracle"]["money_usd"]["profit"]
    for p in by.values():
        assert p["money_usd"]["profit"] <= oracle + 1e-6 * abs(oracle)
        assert p["sla_breach_steps"] == 0
        # the 2 h curtailment covers 2 hourly steps, the 15-min alert a third
        assert p["dr_steps"] == 3
        assert p["dr_compliance"] == 1.0 or p["policy"] == "best-mode"  # that rule ignores DR
    assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"
    # as `gridsched plan` does: say where the files went (stderr, so --json stays clean)
    assert f"wrote JSON: {out}.json" in captured.err and f"wrote plot: {out}.png" in captured.err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--policy", "scheduler,magic"], "--policy magic: valid are scheduler"),
        (["--from", "someday"], "'someday' is not a date"),
        (["--events", "trace.csv"], "needs --events-at"),
    ],
)
def test_bad_backtest_arguments(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["backtest", "--config", str(EXAMPLE), "--from", "2023-08-10", "--to", "2023-08-11"]
    assert main(base + argv) == 2
    assert words in capsys.readouterr().err


def test_prices_in_another_currency_are_converted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "eur.csv"
    rows = ["ts,eur_per_kwh"] + [f"2023-08-10T{h:02d}:00:00Z,0.05" for h in range(24)]
    prices.write_text("\n".join(rows) + "\n")
    site = EXAMPLE.read_text().replace(
        'format = "demo"',
        (
            'format = "csv"\npath = "eur.csv"\ncolumn = "eur_per_kwh"\ntimestamp_column = "ts"\n'
            'currency = "EUR"\nusd_per_unit = 1.10\nper = "kWh"'
        ),
    )
    cfg = tmp_path / "site.toml"
    cfg.write_text(site)
    assert (
        main(
            [
                "plan",
                "--config",
                str(cfg),
                "--start",
                "2023-08-10T00:00:00Z",
                "--horizon",
                "6h",
                "--step",
                "1h",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    # 0.05 EUR/kWh x 1.10 USD/EUR x 1000 kWh/MWh = 55 USD/MWh
    assert doc["steps"]["price_usd_per_mwh"] == [55.0] * 6
    assert "EUR/kWh -> USD/MWh" in doc["prices"]["label"]


def test_a_command_loads_only_the_module_that_defines_it() -> None:
    """`gridsched signal` or `audit verify` must not pay for pyasic, the simulators and the
    planner at start-up (seconds on a busy host, on every call from a script or a test).

    One fresh interpreter parses both commands in turn, saying after each what heavy module
    it has loaded: what it has after the second is what either loaded, so an empty list for
    both means neither loads one (a second interpreter cost 5 s at load 11)."""
    heavy = ("pyasic", "adapters.sim.fleet", "scheduler.planner.solvers", "scheduler.cli.fleet")
    commands = ("signal", "audit")
    probe = (
        "import contextlib, io, sys\n"
        "from scheduler.cli.main import build_parser\n"
        "for command in sys.argv[1:]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        build_parser(command).parse_args([command, '--help'])\n"
        f"    print(command, [m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *commands],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.splitlines() == [f"{c} []" for c in commands], (out.stdout, out.stderr)
    # and --help still lists every command (its text, which needs no fresh interpreter)
    full = run_main("--help")
    assert full.returncode == 0, full.stderr
    for command in (
        "plan",
        "validate",
        "backtest",
        "fleet",
        "run",
        "signal",
        "audit",
        "docs",
        "solvers",
    ):
        assert command in full.stdout
