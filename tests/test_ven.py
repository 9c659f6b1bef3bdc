"""gridsched as an OpenADR 3 VEN against a VTN double checked against the specification.

Programs and events are created at the VTN by a third-party client library (``openadr3``
from PyPI, as a utility's business logic would); the VEN enrolls, polls, subscribes and
reports. Every request and response the VTN saw is valid per the 3.1.0 OpenAPI definition
(``vtn.violations`` stays empty). Skipped when ../shared/openadr3 is absent.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.openadr import skip_without_openadr3

openadr3 = skip_without_openadr3()

from models.site import OpenADR  # noqa: E402
from scheduler.service.openadr import notification_to_events  # noqa: E402
from scheduler.service.ven import Ven, VenConfig  # noqa: E402
from scheduler.service.ven_reports import ImportSample  # noqa: E402
from tests.support.child import Child, start_on_a_free_port  # noqa: E402
from tests.vtn_double import VtnDouble, load_spec  # noqa: E402

# openapi-core checks the bearer scheme and warns that it cannot check the oauth2 one
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")
T = TypeVar("T")
SITE = OpenADR.model_validate(
    {
        "ven_name": "gridsched-toy",
        "resources": [{"name": "site-meter"}],  # no classes: the whole site
    }
)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture
def vtn() -> Iterator[VtnDouble]:
    v = VtnDouble().start()
    yield v
    v.close()
    assert v.violations == [], "\n".join(v.violations)


def bl(vtn: VtnDouble) -> Any:
    """The utility's business logic: the openadr3 library with a BL token."""
    url = f"{vtn.url}/auth/token" if vtn.version == "3.0.1" else None  # no /auth/server
    token = openadr3.fetch_token(vtn.url, "bl", "bl-secret", token_url=url)
    return openadr3.create_bl_client(vtn.url, token)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def limit_event(program_id: str, kw: float = 400.0, **extra: Any) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "programID": program_id,
        "eventName": "shed",
        "intervalPeriod": {"start": iso(start), "duration": "PT1H"},
        "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT",
             "units": "KW"}
        ],
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
        **extra,
    }  # fmt: skip


def make_program(client: Any) -> str:
    r = client.create_program({"programName": f"dr-{time.monotonic_ns()}"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class Sink:
    """What the VEN hands to the daemon, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = False
        self.changed = asyncio.Event()

    async def __call__(self, body: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("store refused (test)")
        self.bodies.append(body)
        self.changed.set()

    def events(self, op: str | None = None) -> list[str]:
        return [
            b["object"]["id"]
            for b in self.bodies
            if b["objectType"] == "EVENT" and (op is None or b["operation"] == op)
        ]


def config(vtn: VtnDouble, **kw: Any) -> VenConfig:
    return VenConfig(vtn_url=vtn.url, client_id="ven-1", client_secret="ven-secret", site=SITE,
                     **{"poll_s": 3600.0, "mqtt": False, **kw})  # fmt: skip


async def until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# -- the specification as published ---------------------------------------------------------


def test_each_erratum_of_the_published_definition_is_needed() -> None:
    from openapi_core import OpenAPI
    from openapi_schema_validator import OAS30Validator

    raw, none = load_spec("3.1.0", errata=False)
    assert none == []
    with pytest.raises(Exception, match="null"):
        OpenAPI.from_dict(raw)  # the YAML typo in BlVenRequest.targets' default
    fixed, errata = load_spec("3.1.0")
    assert len(errata) == 5
    at = "2026-01-01T00:00:00Z"
    ven = {"id": "v1", "createdDateTime": at, "modificationDateTime": at, "objectType": "VEN",
           "venName": "a", "clientID": "c"}  # fmt: skip
    raw_ven = OAS30Validator({"$ref": "#/components/schemas/ven", **raw})
    assert not raw_ven.is_valid(ven)  # objectType VEN and BL_VEN_REQUEST at once
    assert not raw_ven.is_valid({**ven, "objectType": "BL_VEN_REQUEST"})
    assert OAS30Validator({"$ref": "#/components/schemas/ven", **fixed}).is_valid(ven)
    note = {"objectType": "EVENT", "operation": "CREATE",
            "object": {"id": "e", "programID": "p", "objectType": "EVENT",
                       "createdDateTime": "2026-01-01T00:00:00Z",
                       "modificationDateTime": "2026-01-01T00:00:00Z"}}  # fmt: skip
    schema = "#/components/schemas/notification"
    assert not OAS30Validator({"$ref": schema, **raw}).is_valid(note)
    assert OAS30Validator({"$ref": schema, **fixed}).is_valid(note)


# -- enrollment, polling, subscription ------------------------------------------------------


def test_enrolls_fetches_subscribes_and_unsubscribes(vtn: VtnDouble) -> None:
    client = bl(vtn)
    pid = make_program(client)
    eid = client.create_event(limit_event(pid)).json()["id"]
    sink = Sink()
    cfg = config(vtn, callback_url="http://127.0.0.1:9/openadr3/notifications",
                 callback_token="cb-token")  # fmt: skip

    async def go() -> dict[str, Any]:
        ven = Ven(cfg, sink)
        await ven.start()
        st = ven.status()
        subs = list(vtn.objects["subscription"].values())
        assert len(subs) == 1 and subs[0]["objectOperations"][0]["bearerToken"] == "cb-token"
        await ven.stop()
        assert ven.status()["subscription_state"] == "missing"  # removed at the VTN
        return st

    st = run(go())
    assert st["enrolled"] and st["last_error"] is None, st
    # what the metrics read: a poll that succeeded, the channel that brought the event
    assert st["subscription_state"] == "active" and st["polls"] == 1
    assert None not in (st["last_poll_at"], st["started_at"]) and st["consecutive_failures"] == 0
    assert st["events_received"] == {"poll": 1, "mqtt": 0, "webhook": 0}
    vens = list(vtn.objects["ven"].values())
    assert [v["venName"] for v in vens] == ["gridsched-toy"]
    assert [r["resourceName"] for r in vtn.objects["resource"].values()] == ["site-meter"]
    assert sink.events() == [eid]
    assert [b["objectType"] for b in sink.bodies] == ["PROGRAM", "EVENT"]
    assert vtn.objects["subscription"] == {}, "the subscription is removed on stop"
    # the events the VEN hands on are what the daemon's reading makes a cap of
    got = notification_to_events(sink.bodies[1], datetime.now(UTC), SITE)
    assert [e["limit_kw"] for e in got if e.get("type") == "curtail"] == [400.0]

    async def again() -> None:  # a second start reuses the ven and its resources
        ven = Ven(cfg, Sink())
        await ven.start()
        await ven.stop()

    run(again())
    assert len(vtn.objects["ven"]) == 1 and len(vtn.objects["resource"]) == 1


def test_polling_pages_dedups_updates_and_deletes(vtn: VtnDouble) -> None:
    client = bl(vtn)
    pid = make_program(client)
    ids = [client.create_event(limit_event(pid, 100.0 + k)).json()["id"] for k in range(57)]
    sink = Sink()

    async def go() -> None:
        ven = Ven(config(vtn), sink)
        await ven.start()
        assert sorted(sink.events()) == sorted(ids)  # 57 events: two pages of at most 50
        await ven.poll_once()
        assert len(sink.events()) == 57  # nothing new: nothing handed on again
        ev = client.get_event_by_id(ids[0]).json()
        meta = ("id", "createdDateTime", "modificationDateTime", "objectType")
        upd = {k: v for k, v in ev.items() if k not in meta}
        upd["intervals"][0]["payloads"][0]["values"] = [50.0]
        await asyncio.sleep(0.01)  # a later modificationDateTime (ms resolution)
        assert client.update_event(ids[0], upd).status_code == 200
        client.delete_event(ids[1])
        await ven.poll_once()
        assert sink.events("UPDATE").count(ids[0]) == 2
        assert sink.events("DELETE") == [ids[1]]
        await ven.stop()

    run(go())
    assert ("GET", "/events", 200) in vtn.requests


def test_vtn_down_keeps_events_and_says_so(vtn: VtnDouble) -> None:
    client = bl(vtn)
    eid = client.create_event(limit_event(make_program(client))).json()["id"]
    sink = Sink()

    async def go() -> None:
        ven = Ven(config(vtn), sink)
        await ven.start()
        polled_at = ven.status()["last_poll_at"]
        assert polled_at is not None and ven.status()["subscription_state"] == "not_configured"
        vtn.failing = True
        ok = await ven._attempt(ven.poll_once, "poll")
        st = ven.status()
        assert not ok and "HTTP 500" in st["last_error"] and st["consecutive_failures"] == 1
        assert st["poll_failures"] == 1 and st["last_poll_at"] == polled_at  # silent since
        assert sink.events("DELETE") == []  # an unanswered listing deletes nothing
        vtn.failing = False
        vtn.stop()  # a VTN restart: no answer at all, then the same objects again
        assert not await ven._attempt(ven.poll_once, "poll")
        assert "no answer" in ven.status()["last_error"]
        vtn.start()
        assert await ven._attempt(ven.poll_once, "poll")
        st = ven.status()
        assert st["consecutive_failures"] == 0 and st["poll_failures"] == 2
        assert st["polls"] == 2 and st["last_poll_at"] >= polled_at
        await ven.stop()

    run(go())
    assert sink.events() == [eid]


def test_failed_delivery_is_offered_again(vtn: VtnDouble) -> None:
    client = bl(vtn)
    eid = client.create_event(limit_event(make_program(client))).json()["id"]
    sink = Sink()
    sink.fail = True

    async def go() -> None:
        ven = Ven(config(vtn), sink)
        await ven.start()
        assert ven.status()["delivery_failures"] >= 1
        sink.fail = False
        await ven.poll_once()
        await ven.stop()

    run(go())
    assert sink.events() == [eid]


def test_token_renewed_before_expiry_and_after_revocation() -> None:
    vtn = VtnDouble(token_lifetime_s=60).start()
    try:
        sink = Sink()
        now = [1000.0]  # the VEN's monotonic clock, moved by the test (a busy host's start-up
        # could otherwise outlast a short lifetime before the first assertion)

        async def go() -> None:
            ven = Ven(config(vtn), sink)
            ven.tokens.clock = lambda: now[0]
            await ven.start()
            assert ven.tokens.fetched == 1
            await ven.poll_once()
            assert ven.tokens.fetched == 1  # not due until 80 % of its 60 s: kept
            # renewed by our own monotonic clock at 80 % of expires_in, not the VTN's clock
            now[0] += 0.8 * 60 + 0.01
            await ven.poll_once()
            assert ven.tokens.fetched == 2
            vtn.tokens.clear()  # revoked at the VTN: a 401, then a fresh token
            vtn.token_lifetime_s = 3600
            await ven.poll_once()
            assert ven.tokens.fetched == 3
            await ven.stop()

        run(go())
        # renewal came before expiry: the only 401 is the one the revocation caused
        assert [r for r in vtn.requests if r[2] == 401] == [("GET", "/programs", 401)]
    finally:
        vtn.close()
    assert vtn.violations == []


def test_bad_credentials_fail_loud_not_silent(vtn: VtnDouble) -> None:
    async def go() -> dict[str, Any]:
        ven = Ven(VenConfig(vtn_url=vtn.url, client_id="ven-1", client_secret="wrong",
                            site=SITE, mqtt=False), Sink())  # fmt: skip
        await ven.start()
        st = ven.status()
        await ven.stop()
        return st

    st = run(go())
    assert not st["enrolled"] and "client id and secret" in st["last_error"]


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="vtn_url"):
        VenConfig(vtn_url="vtn.example", client_id="a", client_secret="b", site=SITE)
    with pytest.raises(ValueError, match="ven_name"):
        VenConfig(vtn_url="http://x", client_id="a", client_secret="b", site=OpenADR())
    with pytest.raises(ValueError, match="version"):
        VenConfig(vtn_url="http://x", client_id="a", client_secret="b", site=SITE, version="2.0b")


# -- reports ------------------------------------------------------------------------------------


def report_event(pid: str, minutes_ago: int, descriptor: dict[str, Any]) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    ev = limit_event(pid)
    ev["intervalPeriod"] = {"start": iso(start), "duration": "PT10M"}
    ev["intervals"] = [
        {"id": k, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [500.0]}]}
        for k in range(2)
    ]
    ev["reportDescriptors"] = [descriptor]
    return ev


def test_reports_usage_per_interval_with_data_quality(vtn: VtnDouble) -> None:
    client = bl(vtn)
    pid = make_program(client)
    eid = client.create_event(report_event(pid, 25, {"payloadType": "USAGE", "units": "KWH"}))
    eid = eid.json()["id"]

    async def go() -> Ven:
        ven = Ven(config(vtn), Sink(),
                  interpret=lambda b: notification_to_events(b, datetime.now(UTC), SITE),
                  measure=lambda: ImportSample(None, False))  # fmt: skip
        t0 = time.time() - 25 * 60
        for s in range(0, 20 * 60, 10):  # interval 0 from the meter; interval 1 estimated
            ven.record(t0 + s, 600.0 if s < 600 else 300.0, verified=s < 600)
        await ven.start()  # the intervals are over: the report is due at once
        jobs = ven.jobs()
        assert len(jobs) == 1 and [w.interval_id for w in jobs[0].windows] == [0, 1]
        await until(lambda: ven.status()["reports_sent"] == 1)
        assert not await ven.send_report(jobs[0])  # sent once, not again
        await ven.stop()
        return ven

    ven = run(go())
    (report,) = vtn.objects["report"].values()
    assert report["eventID"] == eid and report["clientName"] == "gridsched-toy"
    assert report["payloadDescriptors"][0]["readingType"] == "ESTIMATED"
    (res,) = report["resources"]
    assert res["resourceName"] == "site-meter"
    by_id = {iv["id"]: {p["type"]: p["values"][0] for p in iv["payloads"]}
             for iv in res["intervals"]}  # fmt: skip
    assert by_id[0] == {"USAGE": pytest.approx(100.0, rel=0.01), "DATA_QUALITY": "OK"}
    # samples and interval edges are not aligned to the millisecond: 1 % tolerance
    assert by_id[1] == {"USAGE": pytest.approx(50.0, rel=0.01), "DATA_QUALITY": "ESTIMATED"}
    assert ven.status()["reports_sent"] == 1


def test_unread_site_is_reported_missing_not_zero(vtn: VtnDouble) -> None:
    client = bl(vtn)
    pid = make_program(client)
    client.create_event(report_event(pid, 25, {"payloadType": "DEMAND", "units": "KW"}))
    client.create_event(report_event(pid, 25, {"payloadType": "BASELINE"}))

    async def go() -> Ven:
        ven = Ven(config(vtn), Sink(),
                  interpret=lambda b: notification_to_events(b, datetime.now(UTC), SITE),
                  measure=lambda: ImportSample(None, False))  # fmt: skip
        await ven.start()
        assert len(ven.jobs()) == 2  # BASELINE is answered too: as not available
        await until(lambda: ven.status()["reports_sent"] == 2)
        await ven.stop()
        return ven

    ven = run(go())
    for report in vtn.objects["report"].values():  # DEMAND unread, BASELINE not measured
        for iv in report["resources"][0]["intervals"]:
            assert iv["payloads"] == [{"type": "DATA_QUALITY", "values": ["MISSING"]}]
    assert any("BASELINE" in line for line in ven.status()["not_reported"])


# -- notifications: MQTT (a real broker) and webhooks into the daemon ----------------------------


class Mosquitto:
    """mosquitto on 127.0.0.1, anonymous. It cannot listen on port 0, so it is given a port
    the OS called free and started again on a fresh one when that port was taken meanwhile;
    the listener is named in a config file so that a taken IPv4 port makes it exit (with
    ``-p`` alone it would carry on, on IPv6 only, and the test would reach the other process)."""

    READY = re.compile(r"mosquitto version \S+ running")

    def __init__(self, exe: str, tmp: Path, start: bool = True) -> None:
        self.exe, self.tmp, self.port = exe, tmp, 0
        self.child: Child | None = None
        if start:
            self.start()

    def _argv(self, port: int) -> list[str]:
        conf = self.tmp / f"mosquitto-{port}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        return [self.exe, "-c", str(conf), "-v"]  # -v: the "running" line, once it listens

    def start(self, tries: int = 5) -> None:
        """A first start on a free port; later, a restart on the same port (``tries=1``: the
        VTN told its VENs this port)."""
        again = self.port if self.port else None
        self.child, self.port = start_on_a_free_port(self._argv, self.READY, tries, again)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


@pytest.fixture
def mosquitto_exe() -> str:
    """Debian's mosquitto, or the test is skipped."""
    import shutil

    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    return exe


@pytest.fixture
def mosquitto(mosquitto_exe: str, tmp_path: Path) -> Iterator[Mosquitto]:
    """mosquitto on a free loopback port (anonymous, as with no config file)."""
    m = Mosquitto(mosquitto_exe, tmp_path)
    yield m
    m.stop()


@pytest.fixture
def broker(mosquitto: Mosquitto) -> int:
    return mosquitto.port


def test_a_broker_port_taken_meanwhile_is_seen_and_another_one_used(
    mosquitto_exe: str, tmp_path: Path
) -> None:
    """The port another process holds makes mosquitto exit, not serve IPv6 only while the
    test reaches the other process on 127.0.0.1: it is started again on a fresh port."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        argv = Mosquitto(mosquitto_exe, tmp_path, start=False)._argv
        child, port = start_on_a_free_port(argv, Mosquitto.READY, 2, taken)
    try:
        assert port != taken
        socket.create_connection(("127.0.0.1", port), timeout=30).close()  # it serves there
    finally:
        child.stop()


def test_mqtt_notifications_reach_the_ven(broker: int) -> None:
    vtn = VtnDouble(mqtt_port=broker).start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        sink = Sink()

        async def go() -> dict[str, Any]:
            ven = Ven(config(vtn, mqtt=True), sink)  # polling once an hour: not the path here
            await ven.start()
            assert ven.mqtt is not None
            await asyncio.wait_for(ven.mqtt.connected.wait(), 30)
            eid = (await asyncio.to_thread(client.create_event, limit_event(pid))).json()["id"]
            await until(lambda: eid in sink.events())
            await asyncio.to_thread(client.delete_event, eid)
            await until(lambda: eid in sink.events("DELETE"))
            st = ven.status()
            await ven.stop()
            return st

        st = run(go())
        assert st["notifiers"] == ["MQTT", "WEBHOOK"]
        assert st["events_received"] == {"poll": 0, "mqtt": 2, "webhook": 0}  # create, delete
        assert st["mqtt"]["messages"] >= 2 and st["mqtt"]["connected"]
        assert "openadr/events/create" in st["mqtt"]["topics"]
        assert ("GET", "/notifiers", 200) in vtn.requests
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations


@pytest.fixture
def api_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A daemon in this process on real HTTP (test_daemon.py's ``api_daemon``)."""
    from tests.test_daemon import in_process

    yield from in_process(tmp_path, monkeypatch)


def test_webhook_from_vtn_reaches_the_daemon_and_caps_import(
    vtn: VtnDouble, api_daemon: Any
) -> None:
    """The VEN subscribes with the daemon's callback URL and token; the VTN's webhook then
    carries an event created by the utility's library into the daemon, served on real HTTP
    in this process (``api_daemon``: no process to start for what the API does)."""
    import httpx

    from tests.test_daemon import OADR_TOKEN, status, wait_for

    d = api_daemon
    client = bl(vtn)
    pid = make_program(client)

    async def subscribe() -> None:
        cfg = config(vtn, callback_url=f"{d.url}/openadr3/notifications",
                     callback_token=OADR_TOKEN)  # fmt: skip
        ven = Ven(cfg, Sink())
        await ven.start()
        assert ven.subscription_id is not None
        ven.subs.ids.clear()  # leave it at the VTN: the daemon keeps listening
        await ven.stop()

    run(subscribe())
    eid = client.create_event(limit_event(pid, kw=40.0)).json()["id"]
    s = wait_for(lambda: (st := status(d))["cap_kw"] == 40 and st, 30)
    assert any(e["id"].startswith(f"oadr:{eid}:") for e in s["active_events"])
    assert wait_for(lambda: any(c.startswith("webhook 202") for c, _ in vtn.notified), 30)
    signals = httpx.get(d.url + "/v1/signals", timeout=10).json()["signals"]
    assert any(str(x.get("id", "")).startswith(f"oadr:{eid}:") for x in signals)


def test_daemon_runs_the_ven_polls_listens_and_unsubscribes(
    vtn: VtnDouble, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gridsched run`` with GRIDSCHED_VTN_URL: enrolled at start, the VTN's event in force
    before the first notification, a later one by webhook, the subscription gone on stop."""
    from tests.test_daemon import OADR_TOKEN, DaemonProc, status, wait_for

    client = bl(vtn)
    pid = make_program(client)
    first = client.create_event(limit_event(pid, kw=45.0)).json()["id"]
    d = DaemonProc(tmp_path)  # port 0: the callback URL names the port it gets, {port}
    d.site.write_text(d.site.read_text() + '\n[openadr]\nven_name = "gridsched-daemon"\n'
                      '[[openadr.resources]]\nname = "whole-site"\n')  # fmt: skip
    for k, v in {**vtn.ven_env(), "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN}.items():
        monkeypatch.setenv(k, v)
    d.start()
    try:
        # the HTTP API may answer before start-up is over: wait for the VEN's first poll
        st = wait_for(lambda: (x := status(d)).get("openadr_ven") and x["cap_kw"] == 45 and x, 30)
        assert st["openadr_ven"]["enrolled"], st["openadr_ven"]
        assert st["openadr_ven"]["last_error"] is None, st["openadr_ven"]
        assert any(e["id"].startswith(f"oadr:{first}:") for e in st["active_events"])
        assert len(vtn.objects["subscription"]) == 1
        # the VEN on /metrics, what the GridschedOpenADRVen* alerts read
        from prometheus_client.parser import text_string_to_metric_families

        scraped = httpx.get(d.url + "/metrics", timeout=10).text
        ven = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(scraped)
            for s in f.samples
            if s.name.startswith("gridsched_openadr_ven_")
        }
        assert ven[("gridsched_openadr_ven_subscription", (("state", "active"),))] == 1.0
        assert ven[("gridsched_openadr_ven_polls_total", (("result", "ok"),))] >= 1
        assert ven[("gridsched_openadr_ven_last_poll_timestamp_seconds", ())] > time.time() - 60
        assert ven[("gridsched_openadr_ven_poll_interval_seconds", ())] > 0
        second = client.create_event(limit_event(pid, kw=35.0)).json()["id"]
        s = wait_for(lambda: (x := status(d))["cap_kw"] == 35 and x, 30)
        assert any(e["id"].startswith(f"oadr:{second}:") for e in s["active_events"])
        # the VTN notes the answer after the daemon acted on it
        wait_for(lambda: any(c.startswith("webhook 202") for c, _ in vtn.notified), 30)
    finally:
        d.stop()
    assert vtn.objects["subscription"] == {}, "removed on shutdown"
    assert [v["venName"] for v in vtn.objects["ven"].values()] == ["gridsched-daemon"]


def test_a_301_vtn_keeps_working() -> None:
    """3.0.1: resources under /vens/{id}/resources, no objectType on requests, no
    /notifiers, POST/PUT operations in notifications, programID in reports."""
    vtn = VtnDouble(version="3.0.1").start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        ev = report_event(pid, 25, {"payloadType": "USAGE"})
        ev.pop("payloadDescriptors")  # 3.0.1 descriptors carry no objectType
        eid = client.create_event(ev).json()["id"]
        sink = Sink()

        async def go() -> Ven:
            cfg = config(vtn, version="3.0.1", mqtt=True, callback_url="http://127.0.0.1:9/cb",
                         callback_token="t")  # fmt: skip
            ven = Ven(cfg, sink,
                      interpret=lambda b: notification_to_events(b, datetime.now(UTC), SITE),
                      measure=lambda: ImportSample(None, False))  # fmt: skip
            await ven.start()
            assert len(ven.jobs()) == 1
            await until(lambda: ven.status()["reports_sent"] == 1)
            await ven.stop()
            return ven

        ven = run(go())
        assert ven.status()["enrolled"] and ven.status()["last_error"] is None
        assert sink.events() == [eid]
        (res,) = vtn.objects["resource"].values()
        assert res["resourceName"] == "site-meter" and res["venID"] == ven.ven_id
        assert ("POST", f"/vens/{ven.ven_id}/resources", 201) in vtn.requests
        assert not [r for r in vtn.requests if r[1].startswith("/notifiers")]
        assert ("POST", "/subscriptions", 201) in vtn.requests
        (report,) = vtn.objects["report"].values()
        assert report["programID"] == pid
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations


def test_broker_restart_loses_no_event(mosquitto: Mosquitto) -> None:
    """Events sent while the broker is down arrive by polling; after it is back the VEN
    reconnects and MQTT carries them again."""
    vtn = VtnDouble(mqtt_port=mosquitto.port).start()
    try:
        client = bl(vtn)
        pid = make_program(client)
        sink = Sink()

        async def go() -> dict[str, Any]:
            ven = Ven(config(vtn, mqtt=True, poll_s=0.5, max_backoff_s=0.5), sink)
            await ven.start()
            assert ven.mqtt is not None
            await asyncio.wait_for(ven.mqtt.connected.wait(), 30)
            mosquitto.stop()
            await until(lambda: ven.mqtt is not None and not ven.mqtt.connected.is_set())
            down = (await asyncio.to_thread(client.create_event, limit_event(pid))).json()["id"]
            await until(lambda: down in sink.events())  # by polling
            mosquitto.start(tries=1)  # a restart: the same port
            await asyncio.wait_for(ven.mqtt.connected.wait(), 30)
            seen = ven.mqtt.status["messages"]
            up = (await asyncio.to_thread(client.create_event, limit_event(pid))).json()["id"]
            await until(lambda: up in sink.events())
            await until(lambda: ven.mqtt is not None and ven.mqtt.status["messages"] > seen)
            st = ven.status()
            await ven.stop()
            return st

        st = run(go())
        assert st["mqtt"]["last_error"] is not None  # the outage was seen and said
    finally:
        vtn.close()
    assert vtn.violations == [], vtn.violations


def test_lost_subscription_is_posted_again(vtn: VtnDouble) -> None:
    async def go() -> None:
        ven = Ven(config(vtn, poll_s=0.2, callback_url="http://127.0.0.1:9/cb",
                         callback_token="t"), Sink())  # fmt: skip
        await ven.start()
        first = ven.subscription_id
        vtn.objects["subscription"].clear()  # the VTN forgot it (reset, restored backup)
        await until(lambda: ven.subscription_id not in (None, first))
        assert list(vtn.objects["subscription"]) == [ven.subscription_id]
        await ven.stop()

    run(go())


def test_event_taken_by_webhook_is_not_handed_on_again(vtn: VtnDouble) -> None:
    client = bl(vtn)
    ev = client.create_event(limit_event(make_program(client))).json()
    sink = Sink()

    async def go() -> None:
        ven = Ven(config(vtn), sink)
        note = {"objectType": "EVENT", "operation": "CREATE", "object": ev}
        ven.observe(note)
        ven.observe(note)  # the VTN's retry of the same notification: heard of once
        await ven.start()
        await ven.stop()
        assert ven.status()["events_received"] == {"poll": 0, "mqtt": 0, "webhook": 1}

    run(go())
    assert sink.events() == []  # the daemon has it already; the program is still handed on
    assert [b["objectType"] for b in sink.bodies] == ["PROGRAM"]


def test_daemon_killed_loses_no_event(
    vtn: VtnDouble, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 while the VTN sends an event (its webhook finds no one): the restarted daemon
    fetches it at start-up; the one stored before the kill is still in force."""
    from tests.test_daemon import OADR_TOKEN, DaemonProc, status, wait_for

    client = bl(vtn)
    pid = make_program(client)
    d = DaemonProc(tmp_path)  # port 0: the callback URL names the port it gets, {port}
    d.site.write_text(d.site.read_text() + '\n[openadr]\nven_name = "gridsched-k9"\n')
    for k, v in {**vtn.ven_env(), "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN}.items():
        monkeypatch.setenv(k, v)
    d.start()
    try:
        wait_for(lambda: (status(d).get("openadr_ven") or {}).get("subscription_id"), 30)
        before = client.create_event(limit_event(pid, kw=55.0)).json()["id"]
        wait_for(lambda: status(d)["cap_kw"] == 55, 30)
        d.kill9()
        during = client.create_event(limit_event(pid, kw=44.0)).json()["id"]
        wait_for(lambda: any(c.startswith("webhook failed") for c, _ in vtn.notified), 30)
        d.start()
        s = wait_for(lambda: (x := status(d))["cap_kw"] == 44 and x, 30)
        ids = {e["id"].split(":")[1] for e in s["active_events"] if e["id"].startswith("oadr:")}
        assert {before, during} <= ids
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_mqtt_binding_is_read_as_the_definition_gives_it() -> None:
    from scheduler.service.ven_mqtt import parse_binding

    b = parse_binding({"URIS": ["mqtts://broker.vtn.example"], "serialization": "JSON",
                       "authentication": {"method": "OAUTH2_BEARER_TOKEN",
                                          "username": "{clientID}"}}, "ven-1")  # fmt: skip
    assert (b.host, b.port, b.tls, b.username) == ("broker.vtn.example", 8883, True, "ven-1")
    anon = parse_binding({"URIS": ["mqtt://127.0.0.1:1884"], "serialization": "JSON",
                          "authentication": {"method": "ANONYMOUS"}}, "x")  # fmt: skip
    assert (anon.port, anon.tls, anon.username) == (1884, False, None)
    with pytest.raises(ValueError, match=r"authentication\.method 'CERTIFICATE'"):
        parse_binding({"URIS": ["mqtts://b"], "serialization": "JSON",
                       "authentication": {"method": "CERTIFICATE", "caCert": "",
                                          "clientCert": "", "clientKey": ""}}, "x")  # fmt: skip
    with pytest.raises(ValueError, match="URIS"):
        parse_binding({"URIS": [], "serialization": "JSON", "authentication": {}}, "x")
