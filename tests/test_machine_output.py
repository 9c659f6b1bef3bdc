"""Machine output is machine-readable on a fresh process: no solver or library banner on
stdout, and the install pins the versions the tests passed with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import EXAMPLE, ROOT

START = "2023-08-10T05:00:00Z"


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, as a user's shell runs it: banners printed once per process by
    a solver's C library show up here and not under pytest's capsys."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_plan_json_stdout_is_only_json(solver: str) -> None:
    res = _run_cli(
        "plan",
        "--config",
        str(EXAMPLE),
        "--start",
        START,
        "--horizon",
        "4h",
        "--step",
        "15min",
        "--solver",
        solver,
        "--json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "gridsched.plan/1"
    assert doc["solver"]["status"] == "optimal"


def test_backtest_json_stdout_is_only_json() -> None:
    res = _run_cli(
        "backtest",
        "--config",
        str(EXAMPLE),
        "--from",
        "2023-08-10",
        "--to",
        "2023-08-10T06:00:00Z",
        "--decision-step",
        "1h",
        "--horizon",
        "4h",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["schema"].startswith("gridsched.backtest/")


def _pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a pip requirements/constraints file, names normalised."""
    pins = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line.strip())
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_dependency_pyproject_names() -> None:
    """Each runtime and extra dependency is pinned: a dependency added without `make lock`
    would install at whatever version is newest that day."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    pins = _pins((ROOT / "constraints.txt").read_text())
    for spec in specs:
        m = re.match(r"[A-Za-z0-9_.\-]+", spec)
        assert m is not None, spec
        assert _norm(m.group(0)) in pins, f"{spec}: not in constraints.txt; run make lock"
    assert {"highspy", "pymodbus", "import-linter"} <= set(pins)
    assert "gridsched" not in pins  # the project itself is what is being installed


def test_make_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text().replace("$(LOCK)", "constraints.txt")
    rule = re.search(r"^\$\(VENV\)/\.installed:(.*)$", makefile, re.M)
    assert rule is not None and "constraints.txt" in rule.group(1)  # a new lock reinstalls
    assert "pip install -q -c constraints.txt -e '.[dev]'" in makefile
    assert re.search(r"^lock:", makefile, re.M) and re.search(r"^upgrade-lock:", makefile, re.M)
