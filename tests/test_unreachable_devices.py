"""A site whose devices do not answer (addresses typed wrong, a network down) says so: at
start-up one log line per class with devices that do not answer (how many of how many, the
first few with the error in words) and a summary, whatever the fleet's size; ``/healthz``
answers 503 with the reason while no device of the site can be read (nothing is under
control) and 200 while some can; ``/v1/status`` ``not_answering`` counts them, per class,
with the first few and their errors.

Real adapters at addresses where nothing listens: pyasic miners on loopback addresses
with no listener, GPUs behind a GPU agent on a closed port, beside simulated miners that
answer. The scale case has devices in memory that refuse every connection."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.service.api import create_app
from scheduler.service.daemon import Daemon
from tests.support.daemon import daemon_of, free_loopback_base
from tests.support.memfleet import memory_daemon, run_open
from tests.support.sitefile import device_classes, sim_s19s, site_text, stock_s19s

REFUSED = "connection refused"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dead_gpus(port: int) -> dict[str, Any]:
    """Two GPUs behind a GPU agent that is not there (its port closed)."""
    return {
        "name": "h100", "kind": "gpu", "model": "H100 SXM", "count": 2,
        "power_caps_w": [700, 350],
        "adapter": {"kind": "nvml", "agents": [f"127.0.0.1:{port}"], "timeout_s": 2},
    }  # fmt: skip


def _dead_miners(n: int) -> dict[str, Any]:
    """``n`` pyasic miners on loopback addresses where nothing listens on 4028."""
    prefix = free_loopback_base(n).rsplit(".", 1)[0]
    hosts = [f"{prefix}.{i}" for i in range(1, n + 1)]
    return {
        "name": "s19", "kind": "asic", "model": "S19j Pro", "count": n,
        "adapter": {"kind": "pyasic", "hosts": hosts, "timeout_s": 2},
    }  # fmt: skip


async def _healthz(d: Daemon) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(d))
    async with httpx.AsyncClient(transport=transport, base_url="http://gridsched") as c:
        return await c.get("/healthz")


def _started(d: Daemon, body: Any) -> None:
    run_open(d, body, start=True)


def _startup_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gridsched.daemon" and "answer" in r.getMessage()
    ]


def test_a_site_where_nothing_answers_says_so_and_healthz_is_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    d = daemon_of(tmp_path, site_text("dark", devices=device_classes(
        _dead_miners(3), _dead_gpus(port)
    )))  # fmt: skip
    caplog.set_level(logging.INFO, logger="gridsched")

    async def body() -> None:
        lines = _startup_lines(caplog)
        # one line per class that does not answer, and the summary: not a line per device
        assert len(lines) == 3, lines
        summary = [ln for ln in lines if "0 of 5 devices answer" in ln]
        assert len(summary) == 1, lines
        gpu = [ln for ln in lines if ln.startswith("h100:")]
        assert len(gpu) == 1 and "2 of 2 devices do not answer" in gpu[0], lines
        assert REFUSED in gpu[0] and f"127.0.0.1:{port}" in gpu[0], gpu[0]
        miners = [ln for ln in lines if ln.startswith("s19:")]
        assert len(miners) == 1 and "3 of 3 devices do not answer" in miners[0], lines
        levels = {r.levelno for r in caplog.records if r.getMessage() in lines}
        assert levels and min(levels) >= logging.WARNING, levels

        r = await _healthz(d)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert "no device answers" in error and "0 of 5" in error, error

        s = d.status()["not_answering"]
        assert (s["devices"], s["of"]) == (5, 5), s
        h100 = s["classes"]["h100"]
        assert (h100["devices"], h100["of"]) == (2, 2), h100
        assert len(h100["first"]) == 2
        for device_id, row in h100["first"].items():
            assert row["health"] == "unreachable", row
            assert REFUSED in row["error"] and f"127.0.0.1:{port}" in row["error"], row
            assert not row["error"].startswith(device_id), row  # the id is the key
        s19 = s["classes"]["s19"]
        assert (s19["devices"], s19["of"]) == (3, 3) and len(s19["first"]) == 3, s19
        assert all(row["error"] for row in s19["first"].values()), s19

    _started(d, body)


def test_a_site_where_some_answer_stays_healthy_and_names_those_that_do_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    d = daemon_of(tmp_path, site_text("half dark", devices=device_classes(
        sim_s19s(3, free_loopback_base(3)), _dead_gpus(port)
    )))  # fmt: skip
    caplog.set_level(logging.INFO, logger="gridsched")

    async def body() -> None:
        lines = _startup_lines(caplog)
        assert len(lines) == 2, lines  # the GPUs' class and the summary
        assert any("3 of 5 devices answer" in ln for ln in lines), lines
        gpu = [ln for ln in lines if ln.startswith("h100:")]
        assert len(gpu) == 1 and REFUSED in gpu[0], lines
        assert not any(ln.startswith("s19:") for ln in lines), lines

        r = await _healthz(d)
        assert r.status_code == 200, r.text

        s = d.status()["not_answering"]
        assert (s["devices"], s["of"]) == (2, 5), s
        assert set(s["classes"]) == {"h100"}, s
        assert all(REFUSED in row["error"] for row in s["classes"]["h100"]["first"].values())

    _started(d, body)


def test_a_site_that_answers_says_so_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d, _devices = memory_daemon(site_text("lit"), tmp_path)
    caplog.set_level(logging.INFO, logger="gridsched")

    async def body() -> None:
        lines = _startup_lines(caplog)
        assert lines == ["all 10 devices answer"], lines
        assert d.status()["not_answering"] == {"devices": 0, "of": 10, "classes": {}}
        assert "answer" not in (d.health_problem() or "")

    run_open(d, body)


def test_thousands_of_devices_that_do_not_answer_take_a_few_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 3000
    d, devices = memory_daemon(
        site_text("big dark", devices=device_classes(stock_s19s(n))), tmp_path
    )
    for dev in devices.values():

        async def refuse() -> Any:
            raise ConnectionRefusedError(111, "Connection refused")

        dev.connect = refuse  # type: ignore[method-assign]
        dev.read = refuse  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="gridsched")

    async def body() -> None:
        lines = _startup_lines(caplog)
        assert len(lines) == 2, lines
        s19 = next(ln for ln in lines if ln.startswith("s19:"))
        assert f"{n} of {n} devices do not answer" in s19 and REFUSED in s19, s19
        assert f"and {n - 3} more" in s19 and len(s19) < 1000, s19
        assert sum(1 for r in caplog.records if "s19/" in r.getMessage()) <= 1
        problem = d.health_problem() or ""
        assert "no device answers" in problem and len(problem) < 500, problem
        s = d.status()["not_answering"]
        assert s["devices"] == n and len(s["classes"]["s19"]["first"]) <= 10, s

    run_open(d, body)
