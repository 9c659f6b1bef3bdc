"""The example site's fleet under the daemon: ``/metrics``, telemetry sweeps, a curtail to
every miner, read-back, memory. Three processes on loopback, real HTTP.

1. ``gridsched fleet simulate --miners N --gpus G`` (its own process, forked workers above
   4,000 miners) writes the site file; the benchmark raises the hashprice so that the plan
   runs every miner, and adds ``[daemon]`` with ``poll_s``, ``fleet_workers`` and
   ``shutdown_posture = "hold"`` (so that stopping the daemon commands nothing).
2. ``gridsched run`` on that file; the benchmark waits until ``/v1/status`` shows every
   device read ``ok`` and the simulator shows the miners mining.
3. sweeps and ``/metrics``: ``--scrapes`` scrapes 1.05 s apart (each a fresh render: the
   daemon reuses one only within a second), timed, their size and series counted; meanwhile
   the daemon's own ``gridsched_fleet_sweep_duration_seconds`` histogram gives each sweep
   (a scrape that finds its count one higher: the sum's rise is that sweep), until
   ``--sweeps`` sweeps are seen.
4. curtail: a signed ``curtail`` with a 0 kW cap, which needs every miner asleep. Per miner
   that was mining, from the signal's acceptance (``received_at`` in the daemon's state
   file) to the simulator's ``slept_at`` stamp (the first sleep's arrival at the simulated
   miner since its last wake, from its control port's ``list``); then to the daemon's
   read-back verdict (the ``commands`` records with ``why = "read-back"`` in the daemon's
   audit log).
5. memory and CPU from ``/proc``: the daemon's VmRSS and VmHWM (and its child processes':
   the ``[metrics] listen`` process, and fleet workers when ``fleet_workers`` > 1),
   and the CPU seconds of the daemon and the simulator (each with its child processes)
   in each phase, with the load average at the start and end.

    .venv/bin/python benchmarks/site_scale.py --miners 7500 --gpus 2048
    .venv/bin/python benchmarks/site_scale.py --miners 30000 --gpus 2048 --fleet-workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measure import control, pct, start_simulator  # noqa: E402
from benchmarks.signal_to_fleet import SECRET, iso, serving_port, signed_post  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SWEEP = "gridsched_fleet_sweep_duration_seconds"
FAST = "gridsched_fastpath_duration_seconds"


# -- /proc --------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the metrics listener, fleet workers, simulator shards)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_s(pids: Sequence[int]) -> float:
    """User and system CPU seconds of these processes (those gone count 0)."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def thread_cpu_s(pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds of each thread of these processes, keyed ``pid/tid name``: which thread of
    the daemon's tree (its loop, the store's writer, executor threads, the metrics process)
    spent a phase's CPU."""
    got: dict[str, float] = {}
    for p in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    name, _, rest = (task / "stat").read_text().partition(") ")
                    fields = rest.split()
                    key = f"{p}/{task.name} {name.split('(', 1)[1]}"
                    got[key] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return got


def mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    got = {"VmRSS": 0.0, "VmHWM": 0.0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in got:
                got[key] = int(value.split()[0]) / 1024
    return got["VmRSS"], got["VmHWM"]


# -- the report ---------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    wall_s: float
    daemon_cpu_s: float
    sim_cpu_s: float


@dataclass
class Report:
    miners: int
    gpus: int
    fleet_workers: str
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    luxos_sessions: str = "kept"
    serving_s: float = 0.0
    devices_ok: int = 0
    running: int = 0  # miners mining before the curtail
    scrape_s: list[float] = field(default_factory=list)
    # the same scrapes on [metrics] listen (a process of its own), each on a new connection
    listener_s: list[float] = field(default_factory=list)
    listener_age_s: list[float] = field(default_factory=list)  # the rendering's age it said
    listener_stale: int = 0  # answered with an earlier rendering (the loop too busy)
    metrics_bytes: int = 0
    metrics_series: int = 0
    sweep_s: list[float] = field(default_factory=list)
    commanded_s: dict[str, float] = field(default_factory=dict)  # host -> from acceptance
    confirmed_s: dict[str, float] = field(default_factory=dict)  # host -> read-back verdict
    unconfirmed: int = 0
    post_s: float = 0.0  # the curtail's POST answered 202
    fast_path_s: float | None = None  # the daemon's own: decision to every device commanded
    compliance: str = ""  # /v1/status after the read-back
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    workers_rss_mb: list[float] = field(default_factory=list)
    workers_hwm_mb: list[float] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the daemon's ERROR lines and tracebacks
    stop_errors: list[str] = field(default_factory=list)  # the same, logged while stopping
    scrapes_timed_out: int = 0  # /metrics scrapes unanswered within the client's 60 s
    # --profile: the CPU seconds of each thread of the daemon's tree over the sweeps' phase
    sweep_threads_cpu_s: dict[str, float] = field(default_factory=dict)
    aborted: str = ""  # why the run stopped before its end, if it did


def _ms(xs: Sequence[float]) -> str:
    if not xs:
        return f"{'-':>9s} {'-':>9s} {'-':>9s}"
    return " ".join(
        f"{v * 1000:7.0f}ms" for v in (pct(list(xs), 0.5), pct(list(xs), 0.99), max(xs))
    )


def _s(xs: Sequence[float]) -> str:
    if not xs:
        return f"{'-':>8s} {'-':>8s} {'-':>8s}"
    return " ".join(f"{v:7.2f}s" for v in (pct(list(xs), 0.5), pct(list(xs), 0.99), max(xs)))


def _load(t: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in t)


def print_report(r: Report) -> None:
    la = _load
    print(f"\n{r.miners} miners + {r.gpus} GPUs, fleet_workers = {r.fleet_workers}, "
          f"luxos_sessions = {r.luxos_sessions}; "
          f"load average {la(r.load_start)} at the start, {la(r.load_end)} at the end")  # fmt: skip
    print(f"daemon serving after {r.serving_s:.1f} s; {r.devices_ok} devices read ok; "
          f"{r.running} miners mining before the curtail")  # fmt: skip
    print(f"{'figure':52s} {'p50':>9s} {'p99':>9s} {'max':>9s}")
    print(f"{f'/metrics scrape ({len(r.scrape_s)})':52s} {_ms(r.scrape_s)}")
    print(f"{f'/metrics on [metrics] listen ({len(r.listener_s)})':52s} {_ms(r.listener_s)}")
    print(f"{f'  its rendering age; {r.listener_stale} stale':52s} {_ms(r.listener_age_s)}")
    print(f"{f'telemetry sweep, the daemon histogram ({len(r.sweep_s)})':52s} {_s(r.sweep_s)}")
    c, k = list(r.commanded_s.values()), list(r.confirmed_s.values())
    print(f"{f'curtail: acceptance to commanded ({len(c)} of {r.running})':52s} {_s(c)}")
    print(f"{f'curtail: acceptance to read-back confirmed ({len(k)})':52s} {_s(k)}")
    # per miner, what the read-back adds to the command: the sleep's arrival to its verdict
    gap = [v - r.commanded_s[h] for h, v in r.confirmed_s.items() if h in r.commanded_s]
    print(f"{f'curtail: sleep at the miner to read-back ({len(gap)})':52s} {_s(gap)}")
    print(f"/metrics: {r.metrics_series} series, {r.metrics_bytes / 1024:.0f} KiB; "
          f"{r.scrapes_timed_out} scrapes unanswered within 60 s")  # fmt: skip
    fp = "-" if r.fast_path_s is None else f"{r.fast_path_s:.2f} s"
    print(f"curtail POST answered 202 in {r.post_s * 1000:.0f} ms; the daemon's fast path "
          f"(decision to every device commanded): {fp}; unconfirmed {r.unconfirmed}; "
          f"compliance after: {r.compliance}")  # fmt: skip
    workers = ""
    if r.workers_rss_mb:
        workers = (f"; {len(r.workers_rss_mb)} child processes (metrics listener, fleet workers)"
                   f" RSS {sum(r.workers_rss_mb):.0f} MB,"
                   f" peak {sum(r.workers_hwm_mb):.0f} MB summed")  # fmt: skip
    print(f"daemon memory: RSS {r.rss_mb:.0f} MB, peak (VmHWM) {r.hwm_mb:.0f} MB{workers}")
    print(f"{'phase':28s} {'wall':>8s} {'daemon CPU':>11s} {'simulator CPU':>14s}")
    for p in r.phases:
        print(f"{p.name:28s} {p.wall_s:7.1f}s {p.daemon_cpu_s:10.1f}s {p.sim_cpu_s:13.1f}s")
    if r.sweep_threads_cpu_s:
        print("daemon threads' CPU over the sweeps and scrapes (threads under 0.1 s left out):")
        for name, spent in sorted(r.sweep_threads_cpu_s.items(), key=lambda kv: -kv[1]):
            if spent >= 0.1:
                print(f"  {name:40s} {spent:7.2f}s")
    if r.aborted:
        print(f"the run stopped early: {r.aborted}")
    for line in r.errors[:20]:
        print(f"daemon: {line}")
    for line in r.stop_errors[:4]:
        print(f"daemon, while stopping: {line}")


# -- the run ------------------------------------------------------------------------------


class Clockwork:
    """Phases timed in wall and CPU seconds of the daemon's and the simulator's trees."""

    def __init__(self, report: Report, sim_pid: int) -> None:
        self.report, self.sim_pid, self.daemon_pid = report, sim_pid, 0
        self._mark = self._now()

    def _now(self) -> tuple[float, float, float]:
        d = cpu_s(tree(self.daemon_pid)) if self.daemon_pid else 0.0
        return time.monotonic(), d, cpu_s(tree(self.sim_pid))

    def phase(self, name: str) -> None:
        now = self._now()
        w, d, s = (a - b for a, b in zip(now, self._mark, strict=True))
        self.report.phases.append(Phase(name, w, d, s))
        self._mark = now


def start_sim(args: argparse.Namespace, site: Path) -> tuple[subprocess.Popen[str], int]:
    """The simulator on a random loopback base (another one when its bind fails there: the
    child's own bind is the check); its control port."""
    for attempt in range(4):
        base = f"127.{random.randrange(100, 250)}.0.0"
        first = io.StringIO()
        try:
            with contextlib.redirect_stdout(first):
                sim = start_simulator(
                    args.miners, base, args.sleep_s, args.wake_s, 0, "--gpus", str(args.gpus),
                    "--firmware", args.mix, "--write-site", str(site),
                )  # fmt: skip
        except SystemExit:
            if attempt == 3:
                raise
            continue
        print(first.getvalue(), end="", flush=True)
        named = re.search(r"control 127\.0\.0\.1:(\d+)", first.getvalue())
        if named is None:
            sim.terminate()
            raise SystemExit(f"no control port in the simulator's line: {first.getvalue()!r}")
        assert sim.stdout is not None
        for line in sim.stdout:  # the workers' lines, then the site file
            if line.startswith("wrote "):
                break
        return sim, int(named.group(1))
    raise AssertionError("unreachable")


def configure(site: Path, args: argparse.Namespace) -> None:
    # A hashprice at which the plan runs every miner at every hour of the demo prices, as in
    # benchmarks/signal_to_fleet.py; "hold" on shutdown, so that stopping commands nothing.
    workers = '"auto"' if args.fleet_workers == "auto" else args.fleet_workers
    text = site.read_text().replace(
        "hashprice_usd_per_ths_day = 0.05", "hashprice_usd_per_ths_day = 0.5"
    )
    if args.luxos_sessions != "kept":  # [devices.adapter] luxos_sessions of every miner class
        text = text.replace(
            'kind = "pyasic"\n', f'kind = "pyasic"\nluxos_sessions = "{args.luxos_sessions}"\n'
        )
    site.write_text(
        text + f"\n[daemon]\npoll_s = {args.poll_s:g}\nfleet_workers = {workers}\n"
        'replan_s = 3600\nhorizon = "6h"\nstep = "5min"\nshutdown_posture = "hold"\n'
        f'\n[metrics]\nlisten = "127.0.0.1:{args.metrics_port}"\n'
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listener_client() -> httpx.Client:
    """The client for the listener's scrapes, built once before any is timed: building one
    (an SSL context loading the CA bundle, even for plain HTTP) took 120-300 ms on a loaded
    host, which a scrape timed with ``httpx.get`` paid each time and the API's scrapes, on one
    client, did not. The listener answers HTTP/1.0, so each scrape still opens a connection
    of its own, as Prometheus does after an idle interval."""
    return httpx.Client(timeout=60)


def scrape_listener(client: httpx.Client, port: int, r: Report) -> None:
    """One scrape of [metrics] listen on a new connection, timed; the rendering's age and the
    stale count it reports."""
    t0 = time.perf_counter()
    try:
        resp = client.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.TimeoutException:
        r.scrapes_timed_out += 1
        return
    r.listener_s.append(time.perf_counter() - t0)
    for line in resp.text.splitlines():
        if line.startswith("gridsched_metrics_snapshot_age_seconds "):
            r.listener_age_s.append(float(line.split()[1]))
        if line.startswith("gridsched_metrics_stale_scrapes_total "):
            r.listener_stale = int(float(line.split()[1]))


def histogram(text: str, name: str) -> tuple[float, float]:
    """(count, sum) of a histogram in an exposition."""
    got = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        if line.startswith(name + "_count ") or line.startswith(name + "_sum "):
            key, value = line.split(" ", 1)
            got[key.rsplit("_", 1)[1]] = float(value)
    return got["count"], got["sum"]


def wait_for(what: str, timeout_s: float, check: Any, every_s: float = 1.0) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise SystemExit(f"{what}: not within {timeout_s:g} s")
        time.sleep(every_s)


def mining(cport: int) -> set[str]:
    listing = control(cport, {"op": "list"})["miners"]
    return {m["host"] for m in listing if m["phase"] == "mining" and m["hashrate_ths"] > 0}


def run(args: argparse.Namespace, tmp: Path, r: Report) -> None:
    """Fill ``r`` as the run goes: what it measured stays there if a later step fails."""
    site, db, log = tmp / "site.toml", tmp / "state.db", tmp / "daemon.log"
    args.metrics_port = free_port()
    t_sim = time.monotonic()
    sim, cport = start_sim(args, site)
    clock = Clockwork(r, sim.pid)
    r.phases.append(Phase("simulator start", time.monotonic() - t_sim, 0.0, cpu_s(tree(sim.pid))))
    daemon = None
    try:
        configure(site, args)
        env = {**os.environ, "GRIDSCHED_WEBHOOK_SECRET": SECRET}
        if args.profile:  # scheduler/cli/profiling.py: the loop thread, marked by signals
            env["GRIDSCHED_PROFILE"] = str(Path(args.profile).resolve())
        t = time.monotonic()
        with log.open("w") as err:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli", "run", "--config", str(site), "--db",
                 str(db), "--listen", "127.0.0.1:0", "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        clock.daemon_pid = daemon.pid
        url = f"http://127.0.0.1:{serving_port(daemon, args.start_timeout_s)}"
        r.serving_s = time.monotonic() - t
        clock.phase("daemon start (connect, plan)")
        client = httpx.Client(base_url=url, timeout=60)
        scraper = listener_client()
        devices = args.miners + args.gpus

        def all_read() -> int:
            # every device read, and all but 1 % ok (on a loaded host some readings time
            # out: those devices are "degraded" until the next sweep reads them)
            classes = client.get("/v1/status").json()["classes"].values()
            ok = sum(c["health"]["ok"] for c in classes)
            read = sum(c["health"]["ok"] + c["health"]["degraded"] for c in classes)
            return ok if read >= devices and ok >= 0.99 * devices else 0

        r.devices_ok = wait_for("every device read", args.start_timeout_s, all_read)

        def awake() -> set[str]:
            now = mining(cport)
            return now if len(now) >= 0.95 * args.miners else set()

        wait_for("the plan's miners mining", 120 + args.miners / 100, awake, 2.0)
        clock.phase("until every device read ok")

        # /metrics and the sweeps: each scrape a fresh render, the histogram read from it
        threads_before = thread_cpu_s(tree(daemon.pid))
        if args.profile:
            daemon.send_signal(signal.SIGUSR1)  # the profile starts again here
        last: tuple[float, float] | None = None
        text = ""
        while len(r.scrape_s) < args.scrapes or len(r.sweep_s) < args.sweeps:
            t0 = time.perf_counter()
            try:
                resp = client.get("/metrics")
            except httpx.TimeoutException:
                r.scrapes_timed_out += 1  # not counted in the times: said apart
                if r.scrapes_timed_out > args.scrapes:
                    break
                continue
            r.scrape_s.append(time.perf_counter() - t0)
            text = resp.text
            scrape_listener(scraper, args.metrics_port, r)
            count, total = histogram(text, SWEEP)
            if last is not None and count == last[0] + 1:
                r.sweep_s.append(total - last[1])
            last = (count, total)
            time.sleep(max(0.0, 1.05 - (time.perf_counter() - t0)))
            if len(r.scrape_s) > args.scrapes + 60 * args.sweeps:  # sweeps stopped coming
                break
        r.metrics_bytes = len(text.encode())
        r.metrics_series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        clock.phase("sweeps and scrapes")
        if args.profile:
            daemon.send_signal(signal.SIGUSR2)  # ... and is written here
            threads_after = thread_cpu_s(tree(daemon.pid))
            r.sweep_threads_cpu_s = {
                k: v - threads_before.get(k, 0.0) for k, v in threads_after.items()
            }

        running = mining(cport)
        r.running = len(running)
        every = max(1.0, args.miners / 7500)  # a list of 7,500 miners is about 1.5 MB
        fast_before = histogram(client.get("/metrics").text, FAST)
        t0 = time.perf_counter()
        event = {"id": "site-scale-curtail", "type": "curtail", "start": iso(time.time() - 1),
                 "duration": "1h", "limit_kw": 0}  # fmt: skip
        resp = signed_post(client, url, event)
        r.post_s = time.perf_counter() - t0
        if resp.status_code != 202:
            raise SystemExit(f"curtail refused: {resp.status_code} {resp.text}")
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            accepted = con.execute(
                "SELECT received_at FROM signals WHERE id = ?", (event["id"],)
            ).fetchone()[0]

            def commanded() -> bool:
                for m in control(cport, {"op": "list"})["miners"]:
                    if m["host"] in running and m["slept_at"] >= accepted:
                        # the first sleep's arrival since the last wake: a later command (a
                        # profile staged while asleep) stamps commanded_at, not slept_at
                        r.commanded_s.setdefault(m["host"], m["slept_at"] - accepted)
                return running <= r.commanded_s.keys()

            # the simulator stamps each arrival, so asking every second loses nothing
            with contextlib.suppress(SystemExit):
                wait_for("every miner commanded", args.curtail_timeout_s, commanded, every)
            clock.phase("curtail: commanded")
            seen = 0

            def confirmed() -> bool:
                nonlocal seen
                rows = con.execute(
                    "SELECT seq, payload FROM log WHERE kind = 'commands' AND seq > ?", (seen,)
                ).fetchall()
                for seq, payload in rows:
                    seen = seq
                    body = json.loads(payload)
                    if body.get("why") != "read-back":
                        continue
                    for o in body["outcomes"]:
                        host = o["device"].split("/", 1)[1]
                        if host in running and o["request"].startswith("sleep"):
                            if o["kind"] == "confirmed":
                                r.confirmed_s.setdefault(host, o["at"] - accepted)
                            else:
                                r.unconfirmed += 1
                return len(r.confirmed_s) + r.unconfirmed >= len(running)

            with contextlib.suppress(SystemExit):
                wait_for("every miner's read-back", args.curtail_timeout_s, confirmed)
        clock.phase("curtail: read-back")
        fast_after = histogram(client.get("/metrics").text, FAST)
        if fast_after[0] > fast_before[0]:
            r.fast_path_s = (fast_after[1] - fast_before[1]) / (fast_after[0] - fast_before[0])
        r.compliance = client.get("/v1/status").json()["compliance"].get("state", "?")
    finally:
        r.load_end = os.getloadavg()
        r.errors = errors(log)
        if daemon is not None:  # its memory now, also when the run stopped early
            r.rss_mb, r.hwm_mb = mem_mb(daemon.pid)
            for p in tree(daemon.pid)[1:]:
                rss, hwm = mem_mb(p)
                r.workers_rss_mb.append(rss)
                r.workers_hwm_mb.append(hwm)
            daemon.terminate()
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(10)
        sim.terminate()
        sim.wait(30)
        # what it logs while stopping (a poll in flight cancelled) is told apart
        r.stop_errors = errors(log)[len(r.errors) :]


def errors(log: Path) -> list[str]:
    """The daemon's ERROR lines and tracebacks so far."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return [ln for ln in lines if "Traceback" in ln or "ERROR" in ln]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--miners", type=int, default=7500)
    ap.add_argument("--gpus", type=int, default=2048)
    ap.add_argument("--mix", default="luxos", help="firmware families, as `fleet simulate "
                    "--firmware`: comma-separated, spread over the miners in blocks")  # fmt: skip
    ap.add_argument("--fleet-workers", default="1", help='the daemon\'s fleet_workers: N or "auto"')
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--sweeps", type=int, default=3, help="sweeps to time, at least")
    ap.add_argument("--poll-s", type=float, default=15.0, help="the daemon's poll_s (its default)")
    ap.add_argument("--sleep-s", type=float, default=5.0, help="simulated time to reach sleep")
    ap.add_argument("--wake-s", type=float, default=12.0)
    ap.add_argument("--start-timeout-s", type=float, default=900.0)
    ap.add_argument("--curtail-timeout-s", type=float, default=300.0)
    ap.add_argument(
        "--luxos-sessions",
        choices=("kept", "on-demand"),
        default="kept",
        help="the miners' [devices.adapter] luxos_sessions (the daemon's default: kept)",
    )
    ap.add_argument("--keep", help="copy the daemon's log and state file into this folder")
    ap.add_argument("--profile", help="write cProfile stats of the daemon's loop thread over the "
                    "sweeps and scrapes to this path (and PATH.gc.json), and print each of its "
                    "threads' CPU")  # fmt: skip
    args = ap.parse_args(argv)
    if args.fleet_workers != "auto" and not args.fleet_workers.isdigit():
        ap.error(f'--fleet-workers {args.fleet_workers!r}: give a count or "auto"')
    return args


def main(argv: Sequence[str] | None = None) -> Report:
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gridsched-site-scale-"))
    r = Report(args.miners, args.gpus, args.fleet_workers, os.getloadavg())
    r.luxos_sessions = args.luxos_sessions
    try:
        run(args, tmp, r)
    except (SystemExit, KeyboardInterrupt, httpx.HTTPError) as exc:  # what was measured is printed
        r.aborted = f"{type(exc).__name__}: {exc}"
    try:
        print_report(r)
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
        return r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
