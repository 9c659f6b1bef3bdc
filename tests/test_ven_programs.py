"""The programs the daemon learned (their payload descriptors, the defaults of their events)
survive a restart: kept in the state database, loaded on start, so that an event whose units
only its program gave is acted on even when the VTN cannot be asked for the program again."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.service.ven_daemon import deliverer
from tests.support.memfleet import memory_daemon

SITE = """
[site]
name = "programs"
interconnect_kw = 100

[prices]
format = "demo"

[daemon]
horizon = "2h"
step = "5min"

[openadr]
ven_name = "ven-programs"

[[devices]]
name = "s19"
kind = "asic"
count = 2
modes = [{ name = "stock", power_kw = 3.0, hashrate_ths = 100 }]
"""

#: a tariff program: its events carry prices in USD per kWh and say so only here
PROGRAM = {
    "id": "tou",
    "programName": "time of use",
    "payloadDescriptors": [
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE", "units": "KWH",
         "currency": "USD"}
    ],
}  # fmt: skip


#: the daemon process's site: two simulated miners, this VEN
LIGHT_SITE = """
[site]
name = "programs k9"
interconnect_kw = 50

[prices]
format = "demo"

[daemon]
poll_s = 1
horizon = "1h"
step = "5min"

[openadr]
ven_name = "ven-k9"

[[devices]]
name = "s19"
kind = "asic"
model = "S19j Pro"
count = 2
[devices.adapter]
kind = "sim"
sim_base = "{base}"
timeout_s = 10
"""


def price_event(eid: str = "e1", program_id: str = "tou") -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    return {
        "id": eid,
        "programID": program_id,
        "intervalPeriod": {"start": start, "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.42]}]}],
    }


def note(kind: str, op: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"objectType": kind, "operation": op, "object": obj}


def prices(events: list[dict[str, Any]]) -> list[float]:
    return [float(e["price"]) for e in events if e.get("type") == "price"]


def test_programs_learned_are_loaded_by_the_next_daemon(tmp_path: Path) -> None:
    first, _ = memory_daemon(SITE, tmp_path)

    async def learn() -> None:
        await first.open()
        try:
            await deliverer(first)(note("PROGRAM", "CREATE", PROGRAM))
            other = {**PROGRAM, "id": "gone"}
            await deliverer(first)(note("PROGRAM", "CREATE", other))
            await deliverer(first)(note("PROGRAM", "DELETE", other))
        finally:
            await first.close()

    asyncio.run(learn())
    rows = sqlite3.connect(tmp_path / "state.db").execute("SELECT id FROM openadr_programs")
    assert [r[0] for r in rows] == ["tou"]  # the deleted one is gone from the file too

    second, _ = memory_daemon(SITE, tmp_path)  # a restart: nothing heard from the VTN yet
    got: list[dict[str, Any]] = []

    async def act() -> None:
        await second.open()
        try:
            await deliverer(second)(note("EVENT", "CREATE", price_event()))
            # the deleted program's event: recorded as not acted on, not guessed
            await deliverer(second)(note("EVENT", "CREATE", price_event("e2", "gone")))
            got.extend(e.model_dump() for e in second.active_events())
        finally:
            await second.close()

    asyncio.run(act())
    assert prices(got) == [pytest.approx(420.0)]  # 0.42 USD/kWh in USD/MWh
    assert len(second.openadr_programs) == 1


def test_a_program_by_webhook_is_on_disk_before_the_answer(tmp_path: Path) -> None:
    from scheduler.service.api import create_app

    d, _ = memory_daemon(SITE, tmp_path)
    headers = {"Authorization": "Bearer prog-token-0123456789"}

    async def go() -> int:
        await d.open()
        try:
            transport = httpx.ASGITransport(app=create_app(d))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.post("/openadr3/notifications", headers=headers,
                                 json=note("PROGRAM", "CREATE", PROGRAM))  # fmt: skip
                return r.status_code
        finally:
            await d.close()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDSCHED_OPENADR_TOKENS", "prog-token-0123456789")
        assert asyncio.run(go()) == 200
    (row,) = sqlite3.connect(tmp_path / "state.db").execute(
        "SELECT id, descriptors FROM openadr_programs"
    )
    assert row[0] == "tou" and json.loads(row[1])["PRICE"]["units"] == "KWH"


def test_callback_url_names_the_port_the_api_listens_on() -> None:
    """``{port}`` in GRIDSCHED_VTN_CALLBACK_URL is the port the API was bound to (with
    ``--listen HOST:0``, the one the OS chose): the VTN is told a URL that reaches this
    daemon without anyone guessing a free port before it starts."""
    from models.site import OpenADR
    from scheduler.service.ven_daemon import ven_config_from_env

    site = OpenADR.model_validate({"ven_name": "v"})
    env = {
        "GRIDSCHED_VTN_URL": "http://vtn.example",
        "GRIDSCHED_VTN_CLIENT_ID": "ven-1",
        "GRIDSCHED_VTN_CLIENT_SECRET": "s",
        "GRIDSCHED_OPENADR_TOKENS": "t",
        "GRIDSCHED_VTN_CALLBACK_URL": "https://gw.example:{port}/openadr3/notifications",
    }
    cfg = ven_config_from_env(site, env, listen_port=43121)
    assert cfg is not None and cfg.callback_url == "https://gw.example:43121/openadr3/notifications"
    with pytest.raises(ValueError, match=r"GRIDSCHED_VTN_CALLBACK_URL.*\{port\}"):
        ven_config_from_env(site, env, listen_port=None)  # not bound yet: no port to name
    fixed = {**env, "GRIDSCHED_VTN_CALLBACK_URL": "https://gw.example/cb"}
    cfg = ven_config_from_env(site, fixed, listen_port=43121)
    assert cfg is not None and cfg.callback_url == "https://gw.example/cb"  # as given


@pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")  # the VTN double
def test_killed_daemon_restarted_without_its_vtn_still_reads_units_from_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VEN learns a program from the VTN; kill -9; the VTN is gone when the daemon comes
    back; an event of that program, without its own descriptors, arrives by webhook (the VTN's
    notification path, or a relay, can outlive its API): its price is acted on."""
    from tests.test_daemon import OADR_TOKEN, DaemonProc, status, wait_for
    from tests.test_ven import bl
    from tests.vtn_double import VtnDouble

    vtn = VtnDouble().start()
    d = DaemonProc(tmp_path)
    try:
        client = bl(vtn)
        program = {k: v for k, v in PROGRAM.items() if k != "id"}
        pid = client.create_program(program).json()["id"]
        d.site.write_text(LIGHT_SITE.replace("{base}", d.base))  # two miners: a quick start
        for k, v in vtn.ven_env(callback=False).items():
            monkeypatch.setenv(k, v)
        d.start()
        wait_for(lambda: (status(d).get("openadr_ven") or {}).get("polls"), 30)
        d.kill9()
        vtn.stop()  # unreachable from here on
        d.start()
        ven = wait_for(lambda: status(d).get("openadr_ven"), 30)
        assert not ven["enrolled"] and ven["last_error"], ven  # the VTN does not answer
        r = httpx.post(
            d.url + "/openadr3/notifications",
            headers={"Authorization": f"Bearer {OADR_TOKEN}"},
            json=note("EVENT", "CREATE", price_event("evt-k9", pid)),
            timeout=10,
        )
        assert r.status_code == 202, r.text
        # stored as a price (USD/MWh) for the planner, not as a notice of units unknown
        signals = httpx.get(d.url + "/v1/signals", timeout=10).json()["signals"]
        got = [e for e in signals if str(e.get("id", "")).startswith("oadr:evt-k9:")]
        assert prices(got) == [pytest.approx(420.0)], got
        assert status(d)["openadr_not_acted"]["count"] == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        vtn.close()
    assert vtn.violations == [], vtn.violations
