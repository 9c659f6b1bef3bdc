"""Firmware build variants chosen where the simulated fleet starts: on its control port
and through ``gridsched fleet simulate --variant``, checked with errors in words."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from adapters.sim.antminer import AntminerSim
from adapters.sim.fleet import SimFleet
from adapters.sim.luxos import LuxosSim
from adapters.sim.variants import parse_option
from tests.support.cli import run_main
from tests.support.daemon import free_loopback_base
from tests.support.wait import readline


def test_parse_option_takes_firmware_name_and_value() -> None:
    assert parse_option("antminer:sleep_applies_on_reboot=true") == (
        "antminer",
        "sleep_applies_on_reboot",
        True,
    )
    assert parse_option("luxos:session_ttl_s=5") == ("luxos", "session_ttl_s", 5.0)
    assert parse_option("antminer:mode_key=bitmain-work-mode")[2] == "bitmain-work-mode"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("antminer", "want FIRMWARE:NAME=VALUE"),
        ("braiins:x=1", "firmware 'braiins' has no build variants here"),
        ("antminer:nope=1", "valid: mode_type, mode_key, sleep_applies_on_reboot"),
        ("antminer:sleep_applies_on_reboot=maybe", "want true or false"),
        ("antminer:mode_key=work", "want one of miner-mode, bitmain-work-mode, any"),
        ("luxos:session_ttl_s=-1", "want seconds"),
    ],
)
def test_a_bad_variant_is_said_in_words(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_option(text)


def test_the_control_port_sets_a_variant_on_the_miners_of_that_firmware() -> None:
    fleet = SimFleet.build(
        4, base=free_loopback_base(4), control_port=None, firmware=("luxos", "antminer")
    )
    answer = fleet.handle(
        {"op": "variant", "firmware": "antminer", "name": "sleep_applies_on_reboot",
         "value": True}
    )  # fmt: skip
    assert answer == {"ok": True, "miners": 2}
    stock = [m for m in fleet.miners if isinstance(m, AntminerSim)]
    lux = [m for m in fleet.miners if isinstance(m, LuxosSim)]
    assert stock and all(m.sleep_applies_on_reboot for m in stock)
    one = lux[0].host
    fleet.handle(
        {"op": "variant", "hosts": [one], "firmware": "luxos", "name": "curtail_survives_reboot",
         "value": "false"}
    )  # fmt: skip
    assert [m.curtail_survives_reboot for m in lux] == [False, True]
    with pytest.raises(ValueError, match="no simulated whatsminer miner among the hosts"):
        fleet.handle({"op": "variant", "firmware": "whatsminer", "name": "write_access",
                      "value": False})  # fmt: skip
    with pytest.raises(ValueError, match="want seconds"):
        fleet.handle({"op": "variant", "firmware": "luxos", "name": "session_ttl_s",
                      "value": True})  # fmt: skip
    with pytest.raises(ValueError, match="luxos has no variant 'write_access'"):
        fleet.handle({"op": "variant", "firmware": "luxos", "name": "write_access", "value": 1})
    listed = fleet.handle({"op": "list"})["miners"]
    assert {m["host"]: m.get("variants") for m in listed}[stock[0].host] == {
        "mode_type": "any",
        "mode_key": "miner-mode",
        "sleep_applies_on_reboot": True,
    }


def _simulate(base: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "fleet", "simulate", "--miners", "4",
         "--base", base, "--control-port", "0", "--duration", "60", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize("per_process", ["4", "2"])  # one process, and forked workers
def test_fleet_simulate_variant_sets_it_on_that_firmwares_miners(per_process: str) -> None:
    proc = _simulate(
        free_loopback_base(4),
        "--firmware", "luxos",
        "--variant", "luxos:curtail_survives_reboot=false",
        "--variant", "luxos:session_ttl_s=5",
        "--per-process", per_process,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = readline(proc.stdout)
        assert "simulating 4 LuxOS miners" in line, line
        control = line.split("control ")[1].split(";")[0].strip()
        host, _, port = control.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            f = s.makefile()
            s.sendall(b'{"op": "list"}\n')
            answer = json.loads(f.readline())
            none = {"op": "variant", "firmware": "antminer", "name": "mode_key", "value": "any"}
            s.sendall(json.dumps(none).encode() + b"\n")
            refused = json.loads(f.readline())
        assert not refused["ok"] and "no simulated antminer miner" in refused["error"], refused
        got = [m["variants"] for m in answer["miners"]]
        want = {
            "curtail_survives_reboot": False,
            "session_ttl_s": 5.0,
            "atm_profileset": "refuse",
            "atm_survives_reboot": True,
        }
        assert got == [want] * 4, got
    finally:
        proc.terminate()
        proc.wait(10)


def test_fleet_simulate_refuses_a_variant_in_words() -> None:
    res = run_main("fleet", "simulate", "--miners", "1", "--variant", "antminer:nope=1")
    assert res.returncode == 2 and "valid: mode_type, mode_key" in res.stderr, res.stderr
    res = run_main(
        "fleet", "simulate", "--miners", "1", "--firmware", "luxos",
        "--variant", "antminer:sleep_applies_on_reboot=true",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "which --firmware does not simulate (luxos)" in res.stderr, res.stderr
