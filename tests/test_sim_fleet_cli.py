"""The simulated fleet from the command line: loopback address ranges, `gridsched fleet
simulate` serving a site that `fleet status` reads, and `fleet fault` taking a miner off."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from adapters.sim.fleet import loopback_hosts
from tests.support.cli import run_main
from tests.support.daemon import free_loopback_base
from tests.support.wait import readline


def test_loopback_addresses() -> None:
    hosts = loopback_hosts(300, "127.9.0.0")
    assert hosts[0] == "127.9.0.1" and "127.9.0.255" not in hosts and len(set(hosts)) == 300
    with pytest.raises(ValueError, match="loopback"):
        loopback_hosts(1, "10.0.0.0")


def test_fleet_simulate_and_status_cli(tmp_path: Any) -> None:
    base = free_loopback_base(12)
    victim = base.rsplit(".", 1)[0] + ".3"
    site = tmp_path / "sim.toml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "fleet",
            "simulate",
            "--miners",
            "12",
            "--gpus",
            "3",
            "--base",
            base,
            "--control-port",
            "0",
            "--duration",
            "60",
            "--write-site",
            str(site),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "simulating 12 LuxOS miners" in readline(proc.stdout)
        assert "wrote" in readline(proc.stdout)
        # the commands in this process (tests/support/cli.py): no interpreter to start each
        res = run_main("fleet", "status", "--config", str(site), "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert len(doc["devices"]) == 15
        assert all(d["health"] == "ok" and d["power_w"] > 0 for d in doc["devices"])
        res = run_main("fleet", "status", "--config", str(site))
        assert res.returncode == 0 and "s19jpro" in res.stdout and "h100" in res.stdout
        control = next(
            line.split('"')[1] for line in site.read_text().splitlines() if "sim_control" in line
        )
        res = run_main("fleet", "fault", "refuse", victim, "--control", control)
        assert res.returncode == 0, res.stderr
        res = run_main("fleet", "status", "--config", str(site))
        assert res.returncode == 1  # a device is unreachable
        assert victim in res.stdout and "unreachable" in res.stdout
        # the port alone is the simulator on this host (docs walk, session 23: it was read
        # as a host name, "Name or service not known"); a value that is no port is said
        port = control.rpartition(":")[2]
        res = run_main("fleet", "fault", "clear", "--control", port)
        assert res.returncode == 0, res.stderr
        res = run_main("fleet", "fault", "clear", "--control", "localhost")
        assert res.returncode == 2 and "expected HOST:PORT" in res.stderr, res.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_control_port_out_of_range_is_refused() -> None:
    """The bad-input walk (session 23): --control-port 99999 bound another port (the OS
    takes it modulo 65536) without a word."""
    res = run_main("fleet", "simulate", "--miners", "1", "--control-port", "99999")
    assert res.returncode == 2 and "a port is 0-65535" in res.stderr, res.stderr
