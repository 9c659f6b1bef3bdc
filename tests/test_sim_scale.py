"""The simulator at site scale: the open-files limit, and a fleet sharded over processes.

Each test runs ``gridsched fleet simulate`` in a child process whose open-files limit (soft and
hard) is lowered to a few hundred, so a fleet of a few hundred miners is "too large for one
process" exactly as 30,000 are under this machine's 20,000 limit, without opening 30,000 sockets.
The fleets that bind take addresses checked free (``free_span``), so two runs on one host do not
collide; the two that are refused before binding name fixed ones.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.sim.fleet import loopback_hosts
from models.device_adapter import expand_hosts
from tests.support.daemon import free_loopback_base

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 256  # open files the child may hold (soft and hard)

# Runs the CLI under a lowered RLIMIT_NOFILE (a process may always lower its own limit).
RUNNER = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))\n"
    "from scheduler.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def free_span(n: int = 300) -> str:
    """A loopback base whose ``n`` simulator addresses (a random /24 and the next) have the
    miners' port 4028 free."""
    for _ in range(50):
        base = free_loopback_base(1)
        try:
            for host in loopback_hosts(n, base):
                with socket.socket() as s:
                    s.bind((host, 4028))
        except (OSError, ValueError):
            continue
        return base
    raise RuntimeError(f"no {n} loopback addresses with port 4028 free")


def simulate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, "fleet", "simulate", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal to the test run does not reach it, and vice versa
    )


def test_a_fleet_over_the_open_files_limit_fails_with_one_line() -> None:
    """300 miners in one process need more than 256 open files: a clear line, no traceback."""
    proc = simulate(
        "--miners", "300", "--per-process", "300", "--base", "127.200.0.0",
        "--control-port", "0", "--duration", "1",
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "open files" in lines[0] and str(LIMIT) in lines[0], lines[0]
    assert "--per-process" in lines[0], lines[0]


def test_simfleet_start_checks_the_limit_before_binding() -> None:
    """The library path too: SimFleet.start raises FleetTooLarge, naming need and limit."""
    code = (
        "import asyncio, resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))\n"
        "from adapters.sim.fleet import SimFleet, FleetTooLarge\n"
        "sim = SimFleet.build(300, base='127.200.8.0', control_port=0)\n"
        "try:\n"
        "    asyncio.run(sim.start())\n"
        "except FleetTooLarge as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout + out.stderr
    assert "300 miners" in out.stdout and str(LIMIT) in out.stdout


def read_until(
    proc: subprocess.Popen[str], done: Callable[[list[str]], bool], timeout_s: float = 120.0
) -> list[str]:
    """stdout lines until ``done(lines)`` holds."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout

    def pump() -> None:
        for x in stdout:
            lines.put(x)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0).rstrip("\n")
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if done(seen):
            return seen
    proc.kill()
    raise AssertionError(f"not started: {seen}; {proc.stderr.read() if proc.stderr else ''}")


def ask(port: int, req: dict[str, Any]) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(json.dumps(req).encode() + b"\n")
        out: dict[str, Any] = json.loads(s.makefile().readline())
        return out


def luxos(host: str, command: str) -> dict[str, Any]:
    with socket.create_connection((host, 4028), timeout=10) as s:
        s.sendall(json.dumps({"command": command}).encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out: dict[str, Any] = json.loads(data.rstrip(b"\x00"))
    return out


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # exited; only the reaping is left (to init)


def wait_gone(pids: list[int], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    assert all(gone(p) for p in pids), [p for p in pids if not gone(p)]


def all_up(lines: list[str]) -> bool:
    """The first line says how many workers; each then gets its own line."""
    n = re.search(r"(\d+) worker processes", lines[0]) if lines else None
    workers = sum(x.startswith("worker ") for x in lines)
    return n is not None and workers == int(n.group(1))


def started(
    proc: subprocess.Popen[str], write_site: bool = False
) -> tuple[int, dict[int, int], list[str]]:
    lines = read_until(
        proc, lambda seen: all_up(seen) and (not write_site or seen[-1].startswith("wrote"))
    )
    head = lines[0]
    port = int(re.search(r"control 127\.0\.0\.1:(\d+)", head).group(1))  # type: ignore[union-attr]
    pids = {
        int(m.group(1)): int(m.group(2))
        for x in lines
        if (m := re.match(r"worker (\d+): pid (\d+)", x))
    }
    return port, pids, lines


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:  # a failed assertion still leaves no simulator behind
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)


def test_a_large_fleet_is_sharded_and_one_control_port_reaches_all(
    tmp_path: Path, cleanup: list[subprocess.Popen[str]]
) -> None:
    """300 miners under a 256-file limit: split over workers from one command; the control
    port lists, faults and clears miners in any worker; the site file names all of them;
    SIGINT stops every worker."""
    site = tmp_path / "site.toml"
    proc = simulate(
        "--miners", "300", "--gpus", "2", "--firmware", "luxos,whatsminer",
        "--base", (base := free_span()), "--control-port", "0", "--write-site", str(site),
    )  # fmt: skip
    cleanup.append(proc)
    port, pids, lines = started(proc, write_site=True)
    assert len(pids) >= 2, lines  # one process could not hold them
    listed = ask(port, {"op": "list"})
    assert listed["ok"] and listed["gpus"] == 2
    hosts = [m["host"] for m in listed["miners"]]
    assert hosts == loopback_hosts(300, base), hosts[:3]
    assert {m["firmware"] for m in listed["miners"]} == {"luxos", "whatsminer"}
    first, last = hosts[0], hosts[-1]
    # a fault reaches the one miner named, in whichever worker holds it
    assert ask(port, {"op": "fault", "hosts": [last], "kind": "hang", "delay_s": 0})["ok"]
    faults = {m["host"]: m["faults"] for m in ask(port, {"op": "list"})["miners"]}
    assert faults[last] == ["hang"] and not faults[first] and not faults[hosts[150]]
    assert ask(port, {"op": "clear", "hosts": "all"})["ok"]
    assert not any(m["faults"] for m in ask(port, {"op": "list"})["miners"])
    outside = loopback_hosts(301, base)[-1]  # the next address: no miner there
    bad = ask(port, {"op": "fault", "hosts": [outside], "kind": "hang"})
    assert not bad["ok"] and "no simulated miner" in bad["error"]
    assert ask(port, {"op": "gpu", "index": 1, "call": "limit_w"})["ok"]
    curtails = ask(port, {"op": "curtails"})
    assert curtails["ok"] and curtails["curtails"] == {}  # nothing commanded yet
    # the miners answer their own protocol, in the first worker and the last
    assert luxos(first, "version")["STATUS"][0]["STATUS"] == "S"
    text = site.read_text()
    named = [
        h
        for d in tomllib.loads(text)["devices"]
        if d["kind"] == "asic"
        for h in expand_hosts(tuple(d["adapter"]["hosts"]))
    ]
    assert sorted(named) == sorted(hosts)  # every miner, once (as ranges of addresses)
    assert f'sim_control = "127.0.0.1:{port}"' in text
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    wait_gone(list(pids.values()))


def test_a_worker_that_dies_stops_the_fleet_with_a_message(
    cleanup: list[subprocess.Popen[str]],
) -> None:
    proc = simulate("--miners", "300", "--base", free_span(), "--control-port", "0")
    cleanup.append(proc)
    _port, pids, _lines = started(proc)
    os.kill(pids[1], signal.SIGKILL)
    assert proc.wait(60) == 1
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    assert "simulator worker 1" in err and "SIGKILL" in err and "stopping the fleet" in err, err
    wait_gone(list(pids.values()))


def test_workers_stop_themselves_when_the_parent_is_killed(
    cleanup: list[subprocess.Popen[str]],
) -> None:
    """kill -9 of the parent runs none of its clean-up: the workers notice and exit."""
    proc = simulate("--miners", "300", "--base", free_span(), "--control-port", "0")
    cleanup.append(proc)
    _port, pids, _lines = started(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    wait_gone(list(pids.values()))


def test_a_worker_over_the_limit_fails_with_one_line(
    cleanup: list[subprocess.Popen[str]],
) -> None:
    """An explicit --per-process too large for the limit: each worker refuses; one line."""
    proc = simulate(
        "--miners", "300", "--per-process", "150", "--base", free_span(),
        "--control-port", "0", "--duration", "1",
    )  # fmt: skip
    cleanup.append(proc)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "150 miners" in lines[0] and str(LIMIT) in lines[0] and "--per-process" in lines[0]


def test_stopping_the_fleet_ends_the_control_connections_still_open() -> None:
    """A GPU backend keeps control connections open; stop() must end their handlers, or
    each is still waiting on its read when the loop closes ("Task was destroyed but it
    is pending", "Event loop is closed" as it is collected)."""
    import asyncio

    from adapters.sim.fleet import SimFleet
    from adapters.sim.gpu import SimGpu

    async def body() -> list[str]:
        fleet = SimFleet([], [SimGpu(0)], control_port=0)
        await fleet.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", fleet.control_port)
        writer.write(b'{"op": "list"}\n')
        await writer.drain()
        # the handler is serving this connection (bounded: a silent one fails, not hangs)
        assert json.loads(await asyncio.wait_for(reader.readline(), 30.0))
        await fleet.stop()
        left = [
            repr(t.get_coro())
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and not t.done()
        ]
        writer.close()
        return [c for c in left if "_serve_control" in c]

    assert asyncio.run(body()) == []
