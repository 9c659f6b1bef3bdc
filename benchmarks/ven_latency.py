"""From an event created at a VTN to gridsched holding it, by MQTT, by webhook and by polling.

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
   alone; each event lowers the import cap by ``--step-miners`` of the largest miner at the
   meter, so that the fast path must shed more for each (with a step near one miner, a
   re-plan after the last shed has often slept enough already); the time from the event's
   creation at the VTN to the first of its sleep commands arriving at a simulated miner
   (the simulator stamps each on arrival, as in benchmarks/signal_to_fleet.py), told apart
   by whether the daemon's fast path ran for it (its histogram's count) or a re-plan sent
   them; events without a sleep command are checked (already under the new cap, or not);
   the daemon's CPU seconds over the round.

    .venv/bin/python benchmarks/ven_latency.py --events 200
    .venv/bin/python benchmarks/ven_latency.py --shed --events 200 --step-miners 3 --poll-events 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measure import pct, start_simulator  # noqa: E402
from models.site import OpenADR  # noqa: E402
from scheduler.service.ven import Ven, VenConfig  # noqa: E402
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


async def mqtt_round(n: int) -> list[float]:
    from tests.test_ven import Mosquitto

    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if exe is None:
        print("mqtt: skipped (mosquitto not installed)")
        return []
    broker = Mosquitto(exe)
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
    os.environ |= {
        "GRIDSCHED_VTN_URL": vtn.url,
        "GRIDSCHED_VTN_CLIENT_ID": "ven-1",
        "GRIDSCHED_VTN_CLIENT_SECRET": "ven-secret",
        "GRIDSCHED_VTN_CALLBACK_URL": f"{d.url}/openadr3/notifications",
        "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN,
    }
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def control(port: int, req: dict[str, Any]) -> dict[str, Any]:
    """One request to the simulator's control port (JSON lines)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    out: dict[str, Any] = json.loads(buf)
    return out


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


def shed_round(
    channel: str,
    n: int,
    miners: int,
    poll_s: float,
    gap_s: float = 0.0,
    fleet_poll_s: float = 2,
    step_miners: float = 1.1,
) -> tuple[list[float], int]:
    """VTN create -> first sleep command at a miner, ``n`` events by ``channel`` (webhook,
    mqtt, poll), ``gap_s`` apart at least. Returns the latencies and how many events got no
    sleep command (each checked: was the site already under the new cap?)."""
    from tests.test_daemon import OADR_TOKEN
    from tests.test_ven import Mosquitto

    broker = None
    if channel == "mqtt":
        exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
        if exe is None:
            print("shed by mqtt: skipped (mosquitto not installed)")
            return [], 0
        broker = Mosquitto(exe)
    vtn = VtnDouble(mqtt_port=broker.port if broker else None).start()
    tmp = Path(tempfile.mkdtemp(prefix="ven-shed-"))
    site, cport, dport = tmp / "site.toml", free_port(), free_port()
    sim = start_simulator(miners, "127.31.0.0", 0.1, 0.5, cport, "--write-site", str(site))
    daemon = None
    lat: list[float] = []
    unneeded = late = 0
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # the site file is written
        # hashprice high enough that the plan runs every miner (as signal_to_fleet.py)
        text = site.read_text().replace(
            "hashprice_usd_per_ths_day = 0.05", "hashprice_usd_per_ths_day = 0.5"
        )
        site.write_text(
            text + f'\n[daemon]\npoll_s = {fleet_poll_s:g}\nreplan_s = 3600\nhorizon = "6h"\n'
            'step = "5min"\n'
            '\n[openadr]\nven_name = "bench"\n'
        )
        url = f"http://127.0.0.1:{dport}"
        env = {
            **os.environ,
            "GRIDSCHED_VTN_URL": vtn.url,
            "GRIDSCHED_VTN_CLIENT_ID": "ven-1",
            "GRIDSCHED_VTN_CLIENT_SECRET": "ven-secret",
            "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN,
            "GRIDSCHED_VTN_POLL_S": str(poll_s if channel == "poll" else 3600),
        }
        env.pop("GRIDSCHED_VTN_CALLBACK_URL", None)
        if channel == "webhook":
            env["GRIDSCHED_VTN_CALLBACK_URL"] = f"{url}/openadr3/notifications"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--config", str(site), "--db",
             str(tmp / "state.db"), "--listen", f"127.0.0.1:{dport}", "--log-level", "error"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
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
        for _ in range(120):  # until the plan woke (nearly) every miner, and it settled
            listing = control(cport, {"op": "list"})["miners"]
            if sum(m["phase"] == "mining" for m in listing) >= 0.95 * miners:
                break
            time.sleep(1.0)
        time.sleep(2 * fleet_poll_s)  # two polls: measured import is the whole fleet's
        import_kw = float(http.get(url + "/v1/status").json()["import_kw"])
        top_kw = max(m["power_w"] for m in listing) / 1000.0
        step_kw = top_kw * 1.05 * step_miners  # PUE 1.05 (the simulator's site)
        print(f"shed by {channel}: {miners} miners, import {import_kw:.0f} kW, "
              f"cap lowered {step_kw:.2f} kW per event")  # fmt: skip
        headers = {"Authorization": f"Bearer {bl_token(vtn)}"}
        cpu0, load0 = cpu_s(daemon.pid), os.getloadavg()[0]
        wait_s = 5.0 if channel != "poll" else 2 * poll_s + 5.0
        created: dict[str, float] = {}
        with httpx.Client(base_url=vtn.url, headers=headers, timeout=30) as bl:
            pid = bl.post("/programs", json={"programName": "bench"}).json()["id"]
            count = fast_paths(http, url)
            via: list[str] = []  # per entry of lat: "fast" (the fast path ran) or "plan"
            for k in range(n):
                if len(via) < len(lat):  # the last event's shed: by the fast path or not?
                    time.sleep(0.3)  # its histogram is counted once every command answered
                    now_count = fast_paths(http, url)
                    via.append("fast" if now_count > count else "plan")
                count = fast_paths(http, url)
                cap_kw = import_kw - (k + 1) * step_kw
                if cap_kw <= 0:
                    raise SystemExit(f"--miners {miners} too few for {n} events")
                t0 = time.time()
                r = bl.post("/events", json=event(pid, round(cap_kw, 3)))
                assert r.status_code == 201, r.text
                created[r.json()["id"]] = t0
                time.sleep(0.2)  # the simulator stamps on arrival: asking later loses nothing
                end = time.monotonic() + wait_s
                while True:
                    c = control(cport, {"op": "curtails"})["curtails"]
                    got = [v[1] for v in c.values() if v[0] == "sleep" and v[1] >= t0]
                    if got:
                        lat.append(min(got) - t0)
                        break
                    if time.monotonic() > end:  # no miner told to sleep: was none needed?
                        st = http.get(url + "/v1/status").json()
                        under = st["cap_kw"] is not None and st["cap_kw"] <= cap_kw + 0.01
                        if under and st["compliance"]["state"] == "met":
                            unneeded += 1  # a re-plan had shed more than the fast path
                        else:
                            late += 1
                        break
                    time.sleep(0.05)
                time.sleep(max(0.0, gap_s - (time.time() - t0)))
            if len(via) < len(lat):
                time.sleep(0.3)
                via.append("fast" if fast_paths(http, url) > count else "plan")
        cpu = cpu_s(daemon.pid) - cpu0
        load1 = os.getloadavg()[0]
        print(summary(f"shed by {channel}: VTN create -> first sleep command at a miner", lat))
        for kind, what in (("fast", "by the fast path"), ("plan", "by a re-plan, no fast path")):
            xs = [x for x, v in zip(lat, via, strict=True) if v == kind]
            if xs:
                print(summary(f"shed by {channel}: ... {what}", xs))
        answered = [vtn.answered_at[e] - t for e, t in created.items() if e in vtn.answered_at]
        if answered:  # the part before the fast path: stored, the VTN answered 2xx
            print(
                summary(f"shed by {channel}: VTN create -> daemon answered the webhook", answered)
            )
        fast = [
            ln for ln in http.get(url + "/metrics").text.splitlines()
            if ln.startswith("gridsched_fastpath_duration_seconds_") and "bucket" not in ln
        ]  # fmt: skip
        print(f"shed by {channel}: daemon's own fast path (decision -> every device commanded): "
              + ", ".join(fast))  # fmt: skip
        print(f"shed by {channel}: no sleep command within {wait_s:g} s for {unneeded + late} "
              f"of {n} events: {unneeded} with the site already under the new cap (met), "
              f"{late} not; daemon CPU {cpu:.1f} s over the round ({cpu / n * 1000:.0f} ms "
              f"per event); load average {load0:.1f} -> {load1:.1f}")  # fmt: skip
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
        shutil.rmtree(tmp, ignore_errors=True)
    return lat, unneeded


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
    args = ap.parse_args()
    if args.shed:
        miners = args.miners or int(args.events * args.step_miners * 1.2) + 20
        for channel in args.channels.split(","):
            shed_round(
                channel, args.events, miners, args.poll_s, args.gap_s, args.fleet_poll_s,
                args.step_miners,
            )  # fmt: skip
        if args.poll_events:
            few = int(args.poll_events * args.step_miners * 1.2) + 20
            shed_round("poll", args.poll_events, few, args.poll_s, 0.0, args.fleet_poll_s,
                       args.step_miners)  # fmt: skip
        return
    asyncio.run(mqtt_round(args.events))
    webhook_round(args.events)


if __name__ == "__main__":
    main()
