"""``/metrics`` while the daemon's loop is busy (issue 21: <= 100 ms at the example site's
7,500 miners and 2,048 GPUs): the API's route against ``[metrics] listen``.

The daemon runs in this process over devices in memory (``tests/support/memfleet.py``), its
event loop in a thread of its own (after ``freeze_heap``, as ``Daemon.start`` does), the API
served by uvicorn with ``gridsched run``'s settings and the metrics listener started as
``Daemon.start`` starts it. The loop is kept busy with what a large site gives it: polls of
every device back to back and, every ``--curtail-every`` polls, every miner told to sleep and
then to run again (the commands and their read-back). Each read and command answers after a
random wait of up to ``--io-ms`` (2 ms), as a round trip would, so that the loop runs many
short stretches as in a real sweep (0: one long stretch per poll).

A second process scrapes both endpoints in turn over real HTTP on loopback (a new connection
each time, as Prometheus does after an idle interval; a process of its own, as Prometheus
is, so that the scraper shares no GIL with the daemon), ``--interval-s`` apart, and times
each from request to the last byte: per endpoint p50 / p99 / max, and for the listener the
rendering's age it reported and how many scrapes got an earlier rendering. Also the render's
CPU at this size, a probe thread's 10 ms sleeps (what a thread of the daemon's process gets)
and the garbage collections (each holds the GIL throughout).

    .venv/bin/python benchmarks/metrics_scrape.py --miners 7500 --gpus 2048 --scrapes 40
    .venv/bin/python benchmarks/metrics_scrape.py --miners 30000 --gpus 2048 --scrapes 30
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import pct  # light: the scraping child imports only this


def _waiting(fn: Any, rng: random.Random, up_to_s: float) -> Any:
    async def call(*args: Any) -> Any:
        await asyncio.sleep(rng.uniform(0, up_to_s))
        return await fn(*args)

    return call


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def _age(text: str) -> float:
    return _sample(text, "gridsched_metrics_snapshot_age_seconds")


def scrape(api: str, listener: str, scrapes: int, interval_s: float) -> None:
    """The child: scrape both in turn; times, the listener's ages and the unanswered as JSON."""
    times: dict[str, list[float]] = {"api": [], "listener": []}
    ages: list[float] = []
    stale = 0
    unanswered = {"api": 0, "listener": 0}
    for _ in range(scrapes):
        for name, url in (("api", api), ("listener", listener)):
            u = urlsplit(url)
            t0 = time.perf_counter()
            try:  # a new connection each time; http.client: little of the client's own CPU
                conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=60)
                conn.request("GET", u.path)
                r = conn.getresponse()
                text = r.read().decode()
                conn.close()
            except TimeoutError:
                unanswered[name] += 1
                continue
            times[name].append(time.perf_counter() - t0)
            if r.status != 200:
                raise SystemExit(f"{url}: {r.status} {text[:200]}")
            if name == "listener":
                ages.append(_age(text))
                stale = int(_sample(text, "gridsched_metrics_stale_scrapes_total"))
            time.sleep(interval_s)
    print(json.dumps({"times": times, "ages": ages, "unanswered": unanswered, "stale": stale}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scrape", nargs=2, metavar=("API", "LISTENER"), help=argparse.SUPPRESS)
    ap.add_argument("--miners", type=int, default=7500)
    ap.add_argument("--gpus", type=int, default=2048)
    ap.add_argument("--scrapes", type=int, default=100, help="per endpoint")
    ap.add_argument("--interval-s", type=float, default=0.25)
    ap.add_argument("--curtail-every", type=int, default=2, help="polls; 0: never")
    ap.add_argument("--idle", action="store_true", help="no polls or commands: the baseline")
    ap.add_argument("--render-wait-s", type=float, default=0.05)
    ap.add_argument("--switch-interval-s", type=float, default=None)
    ap.add_argument(
        "--no-freeze", action="store_true", help="leave out freeze_heap() (Daemon.start's)"
    )
    ap.add_argument(
        "--io-ms",
        type=float,
        default=2.0,
        help="each read and command waits up to this long (uniform), as a round trip would",
    )
    a = ap.parse_args(argv)
    if a.scrape:
        scrape(a.scrape[0], a.scrape[1], a.scrapes, a.interval_s)
        return {}
    logger, switch_s = logging.getLogger("gridsched"), sys.getswitchinterval()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the commands behind the daemon's back are warned of
    if a.switch_interval_s is not None:
        sys.setswitchinterval(a.switch_interval_s)
    try:
        return _run(a)
    finally:  # as they were (a test runs this in its own process)
        logger.setLevel(level)
        sys.setswitchinterval(switch_s)


def _run(a: argparse.Namespace) -> dict[str, Any]:
    # the daemon's side only: the scraping child starts without them
    import uvicorn

    from adapters.base import ModeRequest
    from adapters.fleet import freeze_heap
    from scheduler.service.api import create_app
    from scheduler.service.http import server_options
    from scheduler.service.metrics import render_metrics
    from tests.support.clock import WallClock
    from tests.support.memfleet import memory_daemon
    from tests.support.sitefile import mixed_devices, site_text

    text = site_text(
        "metrics-scrape",
        interconnect_kw=200000,
        daemon={"horizon": "2h", "step": "5min", "confirm_after_s": 0},
        sections={"metrics": {"listen": "127.0.0.1:0", "render_wait_s": a.render_wait_s}},
        devices=mixed_devices(a.miners // 2, a.miners - a.miners // 2, a.gpus),
    )
    d, devices = memory_daemon(text, Path(tempfile.mkdtemp(prefix="metrics-scrape-")), WallClock())
    if a.io_ms > 0:
        rng = random.Random(1)
        for dev in devices.values():  # the loop gets its many short iterations of a real sweep
            dev.read = _waiting(dev.read, rng, a.io_ms / 1000)  # type: ignore[method-assign]
            dev.apply = _waiting(dev.apply, rng, a.io_ms / 1000)  # type: ignore[method-assign]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(d), log_level="warning", access_log=False, lifespan="off",
            **server_options(d.config.daemon),
        )
    )  # fmt: skip
    stop = threading.Event()
    # what a thread of this process gets while the loop is busy: a 10 ms sleep's overshoot
    # (the wait for the GIL, and for a core at this load average)
    overshoot: list[float] = []

    def probe() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.01)
            overshoot.append(time.perf_counter() - t0 - 0.01)

    busy: dict[str, float] = {"polls": 0, "commands": 0, "loop_cpu_s": 0.0, "render_cpu_s": 0.0}

    async def load() -> None:
        miners = [
            i for i, st in d.fleet.status.items() if d.devices.classes[st.group].kind == "asic"
        ]
        n = 0
        while not stop.is_set():
            if a.idle:
                await asyncio.sleep(0.1)
                continue
            await d.poll(dispatch=False)
            n += 1
            busy["polls"] = n
            if a.curtail_every and n % a.curtail_every == 0:
                await d.fleet.apply({i: ModeRequest("sleep") for i in miners})
                await d.poll(dispatch=False)
                await d.fleet.apply({i: ModeRequest("run") for i in miners})
                busy["commands"] += 2 * len(miners)
            await asyncio.sleep(0)

    async def run() -> None:
        await d.open()
        if not a.no_freeze:
            freeze_heap()
        t0 = time.thread_time()
        for _ in range(5):
            render_metrics(d.metrics_snapshot.registry)
        busy["render_cpu_s"] = (time.thread_time() - t0) / 5
        d.serve_metrics()
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        c0 = time.thread_time()
        try:
            await load()
        finally:
            busy["loop_cpu_s"] = time.thread_time() - c0
            server.should_exit = True
            await serving
            await d.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    threading.Thread(target=probe, daemon=True).start()
    gc_pauses: list[tuple[int, float]] = []  # (generation, seconds): the GIL held throughout
    gc_started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)
    while d.exporter is None or not server.started:
        time.sleep(0.1)
    api = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    listener = f"http://127.0.0.1:{d.exporter.port}/metrics"
    load0 = os.getloadavg()[0]
    t_start = time.monotonic()
    # the scraper in a process of its own, as Prometheus is: not sharing this one's GIL
    try:
        child = subprocess.run(
            [sys.executable, __file__, "--scrape", api, listener, "--scrapes", str(a.scrapes),
             "--interval-s", str(a.interval_s)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        wall_s = time.monotonic() - t_start
    finally:
        stop.set()
        thread.join(600)  # the poll in progress ends first (minutes at 30,000, loaded)
        gc.callbacks.remove(on_gc)
    got = json.loads(child.stdout)
    times: dict[str, list[float]] = got["times"]
    ages: list[float] = got["ages"]
    unanswered: dict[str, int] = got["unanswered"]
    out: dict[str, Any] = {
        "devices": a.miners + a.gpus,
        "load_start": load0,
        "load_end": os.getloadavg()[0],
        "wall_s": wall_s,
        "stale": got["stale"],
        "renders": d.metrics_snapshot.renders,
        **busy,
    }
    print(
        f"{a.miners:,} miners + {a.gpus:,} GPUs in memory; load average "
        f"{out['load_start']:.1f} -> {out['load_end']:.1f}; {wall_s:.0f} s, "
        f"{busy['polls']:.0f} polls and {busy['commands']:,.0f} commands on the loop "
        f"({busy['loop_cpu_s']:.1f} s of its CPU); render {busy['render_cpu_s'] * 1000:.1f} ms CPU"
    )
    for name, xs in times.items():
        out[name] = xs
        if xs:
            print(
                f"  {name:9s} {len(xs):4d} scrapes: p50 {pct(xs, 0.5) * 1000:7.1f}  "
                f"p99 {pct(xs, 0.99) * 1000:7.1f}  max {max(xs) * 1000:7.1f} ms; "
                f"unanswered in 60 s: {unanswered[name]}"
            )
    if overshoot:
        print(
            f"  a thread's 10 ms sleep overshot by p50 {pct(overshoot, 0.5) * 1000:.1f} / p99 "
            f"{pct(overshoot, 0.99) * 1000:.1f} / max {max(overshoot) * 1000:.1f} ms "
            f"({len(overshoot)} sleeps)"
        )
        out["overshoot"] = overshoot
    full = [x for g, x in gc_pauses if g == 2]
    longest = max((x for _, x in gc_pauses), default=0.0)
    print(
        f"  garbage collections: {len(gc_pauses)}, longest {longest * 1000:.0f}"
        f" ms; full ones {len(full)}, longest {max(full, default=0) * 1000:.0f} ms"
    )
    if ages:
        print(
            f"  listener: snapshot age p50 {pct(ages, 0.5) * 1000:.0f} / max "
            f"{max(ages) * 1000:.0f} ms; {out['stale']} of {len(ages)} scrapes answered with an "
            f"earlier rendering; {out['renders']} renders"
        )
    return out


if __name__ == "__main__":
    main()
