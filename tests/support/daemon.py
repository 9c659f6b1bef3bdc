"""A daemon run in the test's own process on a simulated site: its decisions tested
without the HTTP server or the job scheduler (the fail-safe, dispatch, power accounting,
meter and demand-feed tests share it).

Simulated miners listen on loopback addresses, each on the port its firmware uses;
``free_loopback_base`` picks a /24 at random and checks that the port is free on the
addresses the test needs, so that two test runs on one host (or two tests) never share
them.
"""

from __future__ import annotations

import contextlib
import random
import socket
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from models.site import parse_site
from scheduler.service.daemon import Daemon


def free_loopback_base(n: int = 6, port: int = 4028) -> str:
    """A loopback /24 (``127.x.y.0``) whose first ``n`` addresses have ``port`` free."""
    rng = random.SystemRandom()
    for _ in range(50):
        base = f"127.{rng.randrange(100, 255)}.{rng.randrange(0, 256)}.0"
        prefix = base.rsplit(".", 1)[0]
        try:
            for i in range(1, n + 1):
                with socket.socket() as s:
                    s.bind((f"{prefix}.{i}", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no loopback /24 with port {port} free on {n} addresses")


def daemon_of(tmp_path: Path, text: str) -> Daemon:
    """A daemon over this site file's text, its state in ``tmp_path``."""
    return Daemon(parse_site(tomllib.loads(text), "test", str(tmp_path)), tmp_path / "gridsched.db")


@contextlib.asynccontextmanager
async def running(
    d: Daemon, before_connect: Callable[[Daemon], None] | None = None
) -> AsyncIterator[Daemon]:
    """The daemon's store, simulators and fleet up, one poll read; no jobs, no HTTP.
    ``before_connect`` runs once the simulators listen (e.g. to inject faults)."""
    try:
        await d.open(before_connect)
        yield d
    finally:
        await d.close()
