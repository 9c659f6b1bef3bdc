r"""From an event created at a VTN to gridsched holding it, by MQTT, by webhook and by polling.

A VTN double (tests/vtn_double.py: every request validated against the OpenADR 3.1.0
definition, which costs it a few ms) on loopback; the event is POSTed by the utility's side.

1. MQTT: a mosquitto broker (Debian's, started here; skipped without it) and the VEN of
   scheduler/service/ven.py; time until the VEN hands the event to the daemon's path.
2. webhook: a real ``gridsched run`` with a simulated fleet, subscribed through its VEN
   (GRIDSCHED_VTN_*); time until the daemon answered the VTN's webhook 2xx, i.e. the event
   is stored and its cap handed to the fast path (benchmarks/signal_to_fleet.py times the
   rest, from there to every miner commanded).
3. polling: the time one poll of ``--events`` events takes; an event waits at most one
   polling period plus that.
4. to the fleet (``--shed``): a real ``gridsched run`` over ``gridsched fleet simulate``
   miners in their own process, its VEN told of events by webhook, by MQTT or by polling
   alone. Each event's cap is ``--step-miners`` of the largest miner (at the meter) below
   the site's import at the modes its miners were told (the simulator's own state, not the
   daemon's figures: commands received, asleep at sleep power, else at the profile's
   watts), and below every earlier cap, so that each needs a shed when it is created; the
   daemon plans with ``cap_margin_pct = 0`` (``--cap-margin-pct``): with the site's default
   2 %, each re-plan already frees more than the next step on a large fleet, and the next
   events need none (at 860 miners, 177 of 200; such events are counted apart, never
   timed). The goal's figure is, over the events that needed a shed, the time from the
   event's creation at the VTN to the first of its sleep commands arriving at a simulated miner
   (the simulator stamps each on arrival, as in benchmarks/signal_to_fleet.py), told apart
   by whether the daemon's fast path ran for it (its histogram's count) or only a re-plan
   sent them; the events that needed none are counted apart; the daemon's CPU seconds
   over the round. ``--log-dir`` keeps the daemon's log (the fast path says why it shed or
   not) and a table of every event (cap, told power, first sleep, fast path).

    .venv/bin/python benchmarks/ven_latency.py --events 200
    .venv/bin/python benchmarks/ven_latency.py --shed --step-miners 2 --miners 1000 --poll-events 0
    .venv/bin/python benchmarks/ven_latency.py --shed --step-miners 2 --miners 1000 --channels "" \
        --poll-events 200
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.sim.physics import SLEEP_W, presets_for  # noqa: E402
from benchmarks.measure import control, pct  # noqa: E402
from models.economics import site_load_kw  # noqa: E402
from models.site import OpenADR, load_site  # noqa: E402
from scheduler.service.ven import Ven, VenConfig  # noqa: E402
from tests.test_daemon import SERVING  # noqa: E402
from tests.vtn_double import VtnDouble  # noqa: E402

SITE = OpenADR.model_validate({"ven_name": "bench", "resources": [{"name": "site"}]})


def bl_token(vtn: VtnDouble) -> str:
    r = httpx.post(f"{vtn.url}/auth/token", data={"grant_type": "client_credentials",
                   "client_id": "bl", "client_secret": "bl-secret"})  # fmt: skip
    return str(r.json()["access_token"])


def event(pid: str, kw: float) -> dict[str, Any]:
    """An import capacity limit of ``kw`` from 5 s ago, for 10 minutes."""
    start = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    return {
        "programID": pid,
        "intervalPeriod": {"start": start, "duration": "PT10M"},
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                                "payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }  # fmt: skip


def summary(name: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return (f"{name}: n={len(ms)} p50={pct(ms, 0.5):.1f} ms p99={pct(ms, 0.99):.1f} ms "
            f"max={max(ms):.1f} ms")  # fmt: skip


def start_broker(exe: str) -> Any:
    """mosquitto as the VEN tests start it (tests/test_ven.py), its config in a folder of
    its own."""
    from tests.test_ven import Mosquitto

    return Mosquitto(exe, Path(tempfile.mkdtemp(prefix="ven-broker-")))


async def mqtt_round(n: int) -> list[float]:
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if exe is None:
        print("mqtt: skipped (mosquitto not installed)")
        return []
    broker = start_broker(exe)
    vtn = VtnDouble(mqtt_port=broker.port).start()
    got: dict[str, float] = {}
    arrived = asyncio.Event()

    async def sink(body: dict[str, Any]) -> None:
        if body["objectType"] == "EVENT":
            got.setdefault(body["object"]["id"], time.time())
            arrived.set()

    cfg = VenConfig(vtn_url=vtn.url, client_id="ven-1", client_secret="ven-secret", site=SITE,
                    poll_s=3600)  # fmt: skip
    ven = Ven(cfg, sink)
    out: list[float] = []
    try:
        await ven.start()
        assert ven.mqtt is not None
        await asyncio.wait_for(ven.mqtt.connected.wait(), 10)
        headers = {"Authorization": f"Bearer {bl_token(vtn)}"}
        async with httpx.AsyncClient(base_url=vtn.url, headers=headers) as bl:
            pid = (await bl.post("/programs", json={"programName": "bench"})).json()["id"]
            for k in range(n):
                t0 = time.time()
                eid = (await bl.post("/events", json=event(pid, 100 + k))).json()["id"]
                while eid not in got:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 10)
                out.append(got[eid] - t0)
    finally:
        await ven.stop()
        vtn.close()
        broker.stop()
    print(summary("mqtt: VTN create -> VEN hands on", out))
    return out


def webhook_round(n: int) -> tuple[list[float], list[float]]:
    from tests.test_daemon import OADR_TOKEN, DaemonProc, status

    vtn = VtnDouble().start()
    tmp = Path(tempfile.mkdtemp(prefix="ven-bench-"))
    d = DaemonProc(tmp, base="127.12.0.0")
    d.site.write_text(d.site.read_text() + '\n[openadr]\nven_name = "bench"\n')
    os.environ |= {**vtn.ven_env(), "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN}
    lat: list[float] = []
    poll: list[float] = []
    d.start()
    try:
        while not (status(d).get("openadr_ven") or {}).get("subscription_id"):
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {bl_token(vtn)}"}
        with httpx.Client(base_url=vtn.url, headers=headers) as bl:
            pid = bl.post("/programs", json={"programName": "bench"}).json()["id"]
            for k in range(n):
                t0 = time.time()
                eid = bl.post("/events", json=event(pid, 1000 + k)).json()["id"]
                deadline = time.monotonic() + 10
                while eid not in vtn.answered_at and time.monotonic() < deadline:
                    time.sleep(0.0005)
                lat.append(vtn.answered_at[eid] - t0)

        async def one_poll() -> None:
            cfg = VenConfig(vtn_url=vtn.url, client_id="ven-1", client_secret="ven-secret",
                            site=SITE, mqtt=False, poll_s=3600)  # fmt: skip

            async def sink(body: dict[str, Any]) -> None:
                return None

            ven = Ven(cfg, sink)
            await ven.start()
            for _ in range(5):
                t0 = time.time()
                await ven.poll_once()
                poll.append(time.time() - t0)
            await ven.stop()

        asyncio.run(one_poll())
    finally:
        d.stop()
        vtn.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(summary("webhook: VTN create -> daemon answered 2xx (stored, fast path asked)", lat))
    print(summary(f"polling: one poll of {n + 1} objects", poll))
    if vtn.violations:
        print(f"VTN saw {len(vtn.violations)} violations of the definition", file=sys.stderr)
    return lat, poll


def start_fleet(miners: int, site: Path) -> tuple[subprocess.Popen[str], int]:
    """``gridsched fleet simulate`` with its control port where the OS puts it (port 0,
    the port read from its first line), writing ``site``; returns once the site is written.
    No port is picked here and bound later: a port found free can be taken in between."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "fleet", "simulate", "--miners", str(miners),
         "--base", "127.31.0.0", "--control-port", "0", "--sleep-s", "0.1", "--wake-s", "0.5",
         "--write-site", str(site)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    line = sim.stdout.readline().strip()
    m = re.search(r"control 127\.0\.0\.1:(\d+)", line)
    if m is None:
        sim.kill()
        raise SystemExit(f"the simulator did not start, or named no control port: {line!r}")
    print(line)
    sim.stdout.readline()  # the site file is written
    return sim, int(m.group(1))


def start_daemon(
    argv: list[str], env: dict[str, str], log_path: Path | None
) -> tuple[subprocess.Popen[str], int]:
    """``gridsched run --listen 127.0.0.1:0``: the port it says it serves on (its output is
    copied to ``log_path``, if given, else dropped)."""
    proc = subprocess.Popen(
        [*argv, "--listen", "127.0.0.1:0"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    found: queue.Queue[int | None] = queue.Queue()

    def copy() -> None:
        assert proc.stdout is not None
        with log_path.open("w") if log_path is not None else open(os.devnull, "w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()  # readable while the round runs
                if (m := SERVING.search(line)) is not None:
                    found.put(int(m.group(1)))
        found.put(None)  # the daemon exited

    threading.Thread(target=copy, daemon=True).start()
    try:
        port = found.get(timeout=300)
    except queue.Empty:
        port = None
    if port is None:
        proc.kill()
        raise SystemExit(f"gridsched run did not serve (exit {proc.wait(10)}); see its log")
    return proc, port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fast_paths(http: httpx.Client, url: str) -> float:
    """How many times the daemon's fast path has commanded devices (its histogram's count)."""
    for line in http.get(url + "/metrics").text.splitlines():
        if line.startswith("gridsched_fastpath_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


@dataclass
class Shed:
    """One event of a shed round: its cap, the site's power as the fleet had been told at
    its creation, and what followed."""

    k: int
    cap_kw: float
    told_kw: float
    created_at: float = 0.0  # Unix time of the create request (to read the daemon's log by)
    latency_s: float | None = None  # VTN create -> first sleep command at a miner
    fast: bool = False  # the daemon's fast path commanded devices meanwhile

    @property
    def needed(self) -> bool:
        """Whether the event asked for a shed at all: what the miners were told to draw
        (not what they read, which lags a sleep by its ramp) above the new cap."""
        return self.told_kw > self.cap_kw


def told_import_kw(listing: list[dict[str, Any]], pue: float, base_kw: float) -> float:
    """The site's import at the modes the miners were told (the commands received), from
    the simulator's own state, not the daemon's figures: a miner asleep or going to sleep at
    its sleep power, one mining, waking or rebooting at its profile's watts (whatever its
    ramp there draws now)."""
    it_w = 0.0
    for m in listing:
        if m["phase"] == "sleeping":
            it_w += SLEEP_W
            continue
        watts = {p.name: p.watts for p in presets_for(m["model"])}
        name = str(m["profile"])
        if name in watts:
            it_w += watts[name]
        elif name.endswith("W"):  # an exact power target (set_target)
            it_w += float(name[:-1])
        else:
            it_w += float(m["power_w"])
    return float(site_load_kw(it_w / 1000.0, pue, base_kw))


def shed_round(
    channel: str,
    n: int,
    miners: int,
    poll_s: float,
    gap_s: float = 0.0,
    fleet_poll_s: float = 2,
    step_miners: float = 1.1,
    log_path: Path | None = None,
    cap_margin_pct: float | None = None,
) -> tuple[list[float], int]:
    """VTN create -> first sleep command at a miner, ``n`` events by ``channel`` (webhook,
    mqtt, poll), ``gap_s`` apart at least. Returns the latencies and how many events got no
    sleep command (each checked: was the site already under the new cap?)."""
    from tests.test_daemon import OADR_TOKEN

    broker = None
    if channel == "mqtt":
        exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
        if exe is None:
            print("shed by mqtt: skipped (mosquitto not installed)")
            return [], 0
        broker = start_broker(exe)
    vtn = VtnDouble(mqtt_port=broker.port if broker else None).start()
    tmp = Path(tempfile.mkdtemp(prefix="ven-shed-"))
    site = tmp / "site.toml"
    sim, cport = start_fleet(miners, site)
    daemon = None
    lat: list[float] = []
    needed: list[Shed] = []
    try:
        # hashprice high enough that the plan runs every miner (as signal_to_fleet.py)
        text = site.read_text().replace(
            "hashprice_usd_per_ths_day = 0.05", "hashprice_usd_per_ths_day = 0.5"
        )
        site.write_text(
            text + f'\n[daemon]\npoll_s = {fleet_poll_s:g}\nreplan_s = 3600\nhorizon = "6h"\n'
            'step = "5min"\n'
            + ("" if cap_margin_pct is None else f"cap_margin_pct = {cap_margin_pct:g}\n")
            + '\n[openadr]\nven_name = "bench"\n'
        )
        loaded = load_site(site).site
        pue, base_kw = loaded.pue, loaded.base_load_kw
        env = {
            **os.environ,
            **vtn.ven_env(),  # its callback at {port}: the port the daemon is bound to
            "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN,
            "GRIDSCHED_VTN_POLL_S": str(poll_s if channel == "poll" else 3600),
        }
        if channel != "webhook":  # told by MQTT or by polling alone
            env.pop("GRIDSCHED_VTN_CALLBACK_URL")
        daemon, dport = start_daemon(
            [sys.executable, "-m", "scheduler.cli", "run", "--config", str(site), "--db",
             str(tmp / "state.db"), "--log-level", "info" if log_path is not None else "warning"],
            env, log_path,
        )  # fmt: skip
        url = f"http://127.0.0.1:{dport}"
        http = httpx.Client(timeout=30)

        def ven() -> dict[str, Any]:
            try:
                out: dict[str, Any] = http.get(url + "/v1/status").json().get("openadr_ven") or {}
                return out
            except httpx.HTTPError:
                return {}

        def ready(v: dict[str, Any]) -> bool:
            if channel == "webhook":
                return bool(v.get("subscription_id"))
            if channel == "mqtt":
                return bool((v.get("mqtt") or {}).get("connected"))
            return bool(v.get("polls"))

        deadline = time.monotonic() + 300
        while not ready(ven()):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"shed by {channel}: the daemon's VEN did not get ready")
            time.sleep(0.2)
        listing: list[dict[str, Any]] = []
        told_before = -1.0
        for _ in range(180):  # until the plan woke (nearly) every miner, and it settled
            listing = control(cport, {"op": "list"})["miners"]
            # settled: no command since the last look, every ramp (a wake, a profile change)
            # over, and the daemon has read back every command (the fast path tells every
            # device whose last command is unconfirmed to shed, not counting on it: events
            # sent while the first plan's 808 commands awaited their read-back shed 79, 207
            # and 136 miners for caps 10 kW below the load, 2026-12-01 22:08 UTC)
            told = told_import_kw(listing, pue, base_kw)
            read = site_load_kw(sum(m["power_w"] for m in listing) / 1000.0, pue, base_kw)
            mining = sum(m["phase"] == "mining" for m in listing)
            classes = (http.get(url + "/v1/status").json().get("classes") or {}).values()
            unconfirmed = sum(c["health"].get("unconfirmed", 0) for c in classes)
            if (
                mining >= 0.95 * miners
                and told == told_before
                and abs(read - told) < 0.01 * told
                and unconfirmed == 0
            ):
                break
            told_before = told
            time.sleep(1.0)
        time.sleep(2 * fleet_poll_s)  # two polls: measured import is the whole fleet's
        import_kw = float(http.get(url + "/v1/status").json()["import_kw"])
        top_kw = max(m["power_w"] for m in listing) / 1000.0
        step_kw = top_kw * 1.05 * step_miners  # PUE 1.05 (the simulator's site)
        if n * step_kw >= import_kw:  # said before the round, not at its event n
            raise SystemExit(f"--miners {miners} too few for {n} events of {step_kw:.2f} kW")
        print(f"shed by {channel}: {miners} miners, import {import_kw:.0f} kW, "
              f"cap lowered {step_kw:.2f} kW per event")  # fmt: skip
        headers = {"Authorization": f"Bearer {bl_token(vtn)}"}
        cpu0, load0 = cpu_s(daemon.pid), os.getloadavg()[0]
        wait_s = 5.0 if channel != "poll" else 2 * poll_s + 5.0
        created: dict[str, float] = {}
        rows: list[Shed] = []
        with httpx.Client(base_url=vtn.url, headers=headers, timeout=30) as bl:
            pid = bl.post("/programs", json={"programName": "bench"}).json()["id"]
            last_cap_kw = math.inf
            for k in range(n):
                count = fast_paths(http, url)
                told_kw = told_import_kw(control(cport, {"op": "list"})["miners"], pue, base_kw)
                # below what the miners were told, and below every cap still in force
                cap_kw = last_cap_kw = min(told_kw, last_cap_kw) - step_kw
                if cap_kw <= 0:  # the figures so far still count
                    print(f"shed by {channel}: --miners {miners} too few: stopped at event {k}")
                    break
                t0 = time.time()
                r = bl.post("/events", json=event(pid, round(cap_kw, 3)))
                assert r.status_code == 201, r.text
                created[r.json()["id"]] = t0
                row = Shed(k, cap_kw, told_kw, t0)
                rows.append(row)
                time.sleep(0.2)  # the simulator stamps on arrival: asking later loses nothing
                end = time.monotonic() + wait_s
                while True:
                    c = control(cport, {"op": "curtails"})["curtails"]
                    got = [v[1] for v in c.values() if v[0] == "sleep" and v[1] >= t0]
                    if got:
                        row.latency_s = min(got) - t0
                        break
                    if time.monotonic() > end:
                        break
                    time.sleep(0.05)
                time.sleep(0.3)  # the fast path's histogram counts once every command answered
                row.fast = fast_paths(http, url) > count
                time.sleep(max(0.0, gap_s - (time.time() - t0)))
        cpu = cpu_s(daemon.pid) - cpu0
        load1 = os.getloadavg()[0]
        if log_path is not None:
            with log_path.with_suffix(".events.tsv").open("w") as f:
                f.write("event\tcreated_utc\tcap_kw\ttold_kw\tneeded\tfirst_sleep_ms\tfast_path\n")
                for x in rows:
                    ms = "" if x.latency_s is None else f"{x.latency_s * 1000:.1f}"
                    at = datetime.fromtimestamp(x.created_at, UTC).strftime("%H:%M:%S.%f")[:-3]
                    f.write(f"{x.k}\t{at}\t{x.cap_kw:.2f}\t{x.told_kw:.2f}\t{int(x.needed)}"
                            f"\t{ms}\t{int(x.fast)}\n")  # fmt: skip
        needed = [x for x in rows if x.needed]
        n = len(rows)
        lat = [x.latency_s for x in needed if x.latency_s is not None]
        print(f"shed by {channel}: {len(needed)} of {n} events needed a shed when created "
              f"(the fleet's told power above the new cap); {n - len(needed)} did not (the "
              "site was already under it)")  # fmt: skip
        if lat:
            print(summary(f"shed by {channel}: needed: VTN create -> first sleep at a miner", lat))
        for fast, what in ((True, "the fast path ran"), (False, "no fast path (a re-plan's)")):
            xs = [x.latency_s for x in needed if x.fast is fast and x.latency_s is not None]
            if xs:
                print(summary(f"shed by {channel}: needed, {what}", xs))
        missed = [x for x in needed if x.latency_s is None]
        silent = [x for x in needed if not x.fast]
        print(f"shed by {channel}: needed and no sleep command within {wait_s:g} s: "
              f"{len(missed)}; needed and the fast path did not run: {len(silent)}"
              + "".join(f"\n  event {x.k}: cap {x.cap_kw:.1f} kW, told {x.told_kw:.1f} kW"
                        for x in silent[:10]))  # fmt: skip
        spare = [x for x in rows if not x.needed]
        slept = [x.latency_s for x in spare if x.latency_s is not None]
        print(f"shed by {channel}: not needed: {len(spare)}, of which {len(slept)} saw sleeps "
              f"anyway (a re-plan's), {sum(x.fast for x in spare)} a fast "
              "path")  # fmt: skip
        answered = [vtn.answered_at[e] - t for e, t in created.items() if e in vtn.answered_at]
        if answered:  # the part before the fast path: stored, the VTN answered 2xx
            print(
                summary(f"shed by {channel}: VTN create -> daemon answered the webhook", answered)
            )
        fast_lines = [
            ln for ln in http.get(url + "/metrics").text.splitlines()
            if ln.startswith("gridsched_fastpath_duration_seconds_") and "bucket" not in ln
        ]  # fmt: skip
        print(f"shed by {channel}: daemon's own fast path (decision -> every device commanded): "
              + ", ".join(fast_lines))  # fmt: skip
        print(f"shed by {channel}: daemon CPU {cpu:.1f} s over the round ({cpu / n * 1000:.0f} "
              f"ms per event); load average {load0:.1f} -> {load1:.1f}")  # fmt: skip
        if vtn.violations:
            print(f"VTN saw {len(vtn.violations)} violations of the definition", file=sys.stderr)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(60)
        sim.terminate()
        sim.wait(10)
        vtn.close()
        if broker is not None:
            broker.stop()
        if log_path is not None and (tmp / "state.db").exists():  # its audit: every command
            shutil.copy(tmp / "state.db", log_path.with_suffix(".state.db"))
        shutil.rmtree(tmp, ignore_errors=True)
    return lat, n - len(needed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--shed", action="store_true", help="to the fleet: rounds 4 only")
    ap.add_argument("--miners", type=int, default=0, help="simulated miners (0: enough)")
    ap.add_argument("--step-miners", type=float, default=1.1, help="cap step, in miners")
    ap.add_argument("--poll-events", type=int, default=20)
    ap.add_argument("--poll-s", type=float, default=2.0)
    ap.add_argument("--gap-s", type=float, default=0.0, help="at least this between events")
    ap.add_argument("--channels", default="webhook,mqtt")
    ap.add_argument("--fleet-poll-s", type=float, default=2.0, help="the daemon's [daemon] poll_s")
    ap.add_argument("--log-dir", type=Path, help="keep each round's daemon log here (info)")
    ap.add_argument(
        "--cap-margin-pct", type=float, default=0.0,
        help="the daemon's [daemon] cap_margin_pct (the site's default is 2)",
    )  # fmt: skip
    args = ap.parse_args()

    def logs(channel: str) -> Path | None:
        if args.log_dir is None:
            return None
        args.log_dir.mkdir(parents=True, exist_ok=True)
        return Path(args.log_dir / f"daemon-{channel}.log")

    if args.shed:
        # the step is the largest miner's (above the mean by up to a third, its profile), and
        # a shed sleeps more than the step (whole miners, some still ramping): 1.6 steps
        miners = args.miners or int(args.events * args.step_miners * 2.2) + 20
        for channel in filter(None, args.channels.split(",")):  # "": the polling round alone
            shed_round(
                channel, args.events, miners, args.poll_s, args.gap_s, args.fleet_poll_s,
                args.step_miners, logs(channel), args.cap_margin_pct,
            )  # fmt: skip
        if args.poll_events:
            few = args.miners or int(args.poll_events * args.step_miners * 2.2) + 20
            shed_round("poll", args.poll_events, few, args.poll_s, 0.0, args.fleet_poll_s,
                       args.step_miners, logs("poll"), args.cap_margin_pct)  # fmt: skip
        return
    asyncio.run(mqtt_round(args.events))
    webhook_round(args.events)


if __name__ == "__main__":
    main()
