"""``gridsched validate`` says what ``gridsched run`` would refuse in the site file and
what it reads on this host (the docs walk, session 23: a miner password whose variable is
unset or whose file is missing, and a ``gpu_engines`` id that is no GPU of the site, were
"valid" to validate and refused by run, exit 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.cli import run_main
from tests.test_demand_feed import MINERS, SITE, write_flat_prices


def _validate(tmp_path: Path, text: str) -> tuple[int, str, str]:
    write_flat_prices(tmp_path / "prices.csv", time.time(), 50.0)
    path = tmp_path / "site.toml"
    path.write_text(text)
    res = run_main("validate", str(path))
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, res.stdout, res.stderr


def _site(demand_extra: str = "", adapter: str = "") -> str:
    miners = MINERS.replace(
        'kind = "sim"\nsim_base = "{base}"', 'kind = "pyasic"\nhosts = ["10.9.0.1", "10.9.0.2"]'
    )
    return SITE.format(
        url="http://127.0.0.1:9/metrics",
        objectives="",
        demand_extra=demand_extra,
        miners=miners.replace("timeout_s = 10\n", f"timeout_s = 10\n{adapter}"),
    )


def test_the_site_as_given_is_valid(tmp_path: Path) -> None:
    code, out, err = _validate(tmp_path, _site())
    assert code == 0 and "valid" in out, out + err


def test_an_unset_miner_password_variable_is_named_by_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S19_MINER_PASSWORD", raising=False)
    code, out, err = _validate(tmp_path, _site(adapter='password_env = "S19_MINER_PASSWORD"\n'))
    assert code == 2, out + err
    assert "s19.adapter.password_env" in err and "S19_MINER_PASSWORD is not set" in err, err
    assert str(tmp_path / "site.toml") in err, err


def test_a_missing_miner_password_file_is_named_with_its_path(tmp_path: Path) -> None:
    code, out, err = _validate(tmp_path, _site(adapter='password_file = "s19.password"\n'))
    assert code == 2, out + err
    assert "s19.adapter.password_file" in err and "No such file" in err, err
    assert str(tmp_path / "s19.password") in err, err


def test_a_gpu_engines_id_that_is_no_gpu_of_the_site_is_named_with_the_valid_ones(
    tmp_path: Path,
) -> None:
    extra = 'gpu_engines = { "h100/gpu99" = "http://127.0.0.1:9/metrics" }'
    code, out, err = _validate(tmp_path, _site(demand_extra=extra))
    assert code == 2, out + err
    assert "gpu_engines" in err and "h100/gpu99" in err and "h100/gpu0" in err, err
