"""The daemon's open-files limit (adapters/fds.py): a connection per device and per call in
flight, so a fleet past a shell's default soft limit of 1,024 files failed its connections
as device faults (EMFILE) unless systemd's LimitNOFILE had raised it."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import fds
from tests.support.memfleet import memory_daemon
from tests.support.sitefile import device_classes, site_text, stock_s19s

SITE = site_text(
    "fds",
    devices=device_classes(stock_s19s(300)),
)


def test_the_daemon_raises_its_open_files_limit_to_what_its_fleet_may_hold(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = fds.fleet_fds_needed(300, 512, 64)  # the defaults: 512 commands, 64 readings
    assert need == 300 + 300 + 64 + 256  # no more commands in flight than devices
    low = 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        d, _ = memory_daemon(SITE, tmp_path)
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        d.store.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert d.config.daemon.command_concurrency == 512
    assert now == (need if hard == resource.RLIM_INFINITY else min(need, hard))
    assert now > low


def test_a_hard_limit_below_the_need_is_said_and_the_soft_one_raised_to_it() -> None:
    """In a child, whose hard limit can be lowered without lowering this process's."""
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (512, 2048))\n"
        "from adapters import fds\n"
        "print(fds.short_of(5000))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(fds.short_of(1500))\n"
        "print(fds.fleet_fds_needed(10, 512, 64))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].startswith("open-files limit 2048 (hard limit, `ulimit -Hn`) is below")
    assert "the 5000 this fleet may hold" in out[0] and "LimitNOFILE" in out[0]
    assert out[1] == "2048"  # raised as far as it goes
    assert out[2] == "None"  # within the hard limit: nothing to say
    assert out[3] == str(10 + 10 + 10 + 256)  # a small site fits a shell's 1,024 files


def test_fleet_status_raises_its_limit_too_and_says_when_the_hard_one_is_short(
    tmp_path: Path,
) -> None:
    """Found by review: ``gridsched fleet status`` reads (and discovers) many devices at once
    and never raised its limit. In a child whose hard limit is 200: two miners that nobody
    answers for, 256 reads in flight allowed, so it may hold 2 + 2 + 2 + 256 files."""
    from adapters.sim.fleet import MinerSpec
    from scheduler.cli.simulate import site_for_simulator
    from tests.support.simfleet import free_base

    base = free_base(2)  # nothing listens there: the miners are unreachable, quickly
    hosts = [base.rsplit(".", 1)[0] + f".{i}" for i in (1, 2)]
    site = tmp_path / "site.toml"
    specs = [MinerSpec(h, "luxos", "Antminer S19j Pro") for h in hosts]
    site.write_text(site_for_simulator(specs, [], None))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))\n"
        "from scheduler.cli.main import main\n"
        f"sys.exit(main(['fleet', 'status', '--config', {str(site)!r}]))\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,  # unreachable miners: status exits non-zero, as it should
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "warning: open-files limit 200 (hard limit, `ulimit -Hn`) is below the 262" in (
        done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_a_short_hard_limit_is_in_status_and_metrics_while_the_daemon_runs(
    tmp_path: Path,
) -> None:
    """The warning at start was a log line only: an operator who missed it had devices
    failing as unreachable under load and nothing in /v1/status or /metrics to say why. In a
    child whose hard limit is 400, a daemon of 300 miners (it may hold 920 files)."""
    code = f"""
import asyncio, json, resource
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))
from scheduler.service.daemon.status import status
from scheduler.service.metrics import metrics_registry
from tests.support.memfleet import memory_daemon
from tests.test_fds import SITE

async def go():
    d, _ = memory_daemon(SITE, Path({str(tmp_path)!r}))
    await d.open()
    try:
        m = metrics_registry(d)
        print(json.dumps([
            status(d)["open_files"],
            m.get_sample_value("gridsched_open_files_limit"),
            m.get_sample_value("gridsched_open_files_needed"),
        ]))
    finally:
        await d.close()

asyncio.run(go())
"""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    state, limit, needed = json.loads(done.stdout.splitlines()[-1])
    need = fds.fleet_fds_needed(300, 512, 64)
    assert state == {"limit": 400, "needed": need, "short": True}
    assert (limit, needed) == (400, need)


def test_a_limit_that_suffices_reads_not_short(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < fds.fleet_fds_needed(300, 512, 64):
        pytest.skip(f"this host's hard open-files limit is {hard}")
    d, _ = memory_daemon(SITE, tmp_path)
    try:
        from scheduler.service.daemon.status import status

        got = status(d)["open_files"]
    finally:
        d.store.close()
    assert got["needed"] == fds.fleet_fds_needed(300, 512, 64)
    assert got["short"] is False and got["limit"] >= got["needed"]
