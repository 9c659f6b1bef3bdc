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

    .venv/bin/python benchmarks/ven_latency.py --events 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measure import pct  # noqa: E402
from models.site import OpenADR  # noqa: E402
from scheduler.service.ven import Ven, VenConfig  # noqa: E402
from tests.vtn_double import VtnDouble  # noqa: E402

SITE = OpenADR.model_validate({"ven_name": "bench", "resources": [{"name": "site"}]})


def bl_token(vtn: VtnDouble) -> str:
    r = httpx.post(f"{vtn.url}/auth/token", data={"grant_type": "client_credentials",
                   "client_id": "bl", "client_secret": "bl-secret"})  # fmt: skip
    return str(r.json()["access_token"])


def event(pid: str, kw: float) -> dict[str, Any]:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200)
    args = ap.parse_args()
    asyncio.run(mqtt_round(args.events))
    webhook_round(args.events)


if __name__ == "__main__":
    main()
