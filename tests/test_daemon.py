"""The daemon end to end: the real process, a simulated fleet on loopback, real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.audit.store import Store
from tests.support.cli import run_main
from tests.support.clock import WallClock
from tests.support.daemon import free_loopback_base
from tests.support.memfleet import memory_daemon
from tests.support.serve import Served, served
from tests.support.wait import wait_until
from tests.support.webhook import signed_headers

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLWdyaWRzY2hlZA=="
OADR_TOKEN = "oadr-test-token-0123456789"
SITE = """
[site]
name = "daemon test"
interconnect_kw = 200
pue = 1.05
base_load_kw = 2

[prices]
format = "demo"

[mining]
hashprice_usd_per_ths_day = 0.06

[tariff.dr_levels_kw]
"1" = 100
"2" = 40
"3" = 10

[inference]
committed_tokens_s = 500
committed_usd_per_mtok = 0.6

[daemon]
poll_s = 1
replan_s = 60
horizon = "6h"
step = "5min"
body_max_bytes = 4096

[[devices]]
name = "s19"
kind = "asic"
model = "S19j Pro"
count = 20
[devices.adapter]
kind = "sim"
sim_base = "{base}"
sim_sleep_s = 0.5
sim_wake_s = 1.0
timeout_s = 10

[[devices]]
name = "h100"
kind = "gpu"
model = "H100 SXM"
power_caps_w = [700, 350]
count = 4
[devices.adapter]
kind = "sim"
"""


HTTP_S = 30.0  # a busy loaded machine may take seconds to answer; no call waits forever
#: A daemon's start: its interpreter and imports alone took 55 s at load 20 on 2 cores
START_S = 240.0

SERVING = re.compile(r"gridsched: serving https?://[^:\s]+:(\d+)")


class DaemonProc:
    """``gridsched run`` as a process on a port the OS picks (``--listen 127.0.0.1:0``; the
    daemon prints the address it serves on), its output read by a thread so that no read
    blocks the test; its miners on a free loopback /24 chosen at random."""

    def __init__(self, tmp: Path, base: str | None = None) -> None:
        # a free loopback /24 at random: two test runs on one host never share miners
        self.base = base or free_loopback_base(20)
        self.site = tmp / "site.toml"
        self.site.write_text(SITE.replace("{base}", self.base))
        self.db = tmp / "state.db"
        # port 0 at every start, a restart too: the OS picks, the daemon says which. A URL
        # named before the start (a VTN's callback) says {port} (GRIDSCHED_VTN_CALLBACK_URL).
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def mining_at_every_hour(self) -> None:
        """Before ``start``: a hashprice at which the plan mines at every hour (at the site's
        0.06, the demo prices put its miners to sleep at some)."""
        text = self.site.read_text()
        assert "hashprice_usd_per_ths_day = 0.06" in text
        self.site.write_text(
            text.replace("hashprice_usd_per_ths_day = 0.06", "hashprice_usd_per_ths_day = 1.0")
        )

    def start(self, timeout: float = START_S) -> None:
        env = {
            **os.environ,
            "GRIDSCHED_WEBHOOK_SECRET": SECRET,
            "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN,
        }
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--config", str(self.site),
             "--db", str(self.db),
             "--listen", "127.0.0.1:0", "--log-level", "warning"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines = self.lines = []
        found: queue.Queue[int | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if (m := SERVING.search(line)) is not None:
                    found.put(int(m.group(1)))
            found.put(None)  # the output ended: the daemon exited

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        try:
            self._ready(proc, found, timeout)
        except BaseException:
            if proc.poll() is None:  # a daemon that did not start in time is not left behind
                proc.kill()
                proc.wait(10)
            raise

    def _ready(
        self, proc: subprocess.Popen[str], found: queue.Queue[int | None], timeout: float
    ) -> None:
        """Until the daemon serves and its /healthz says 200, within ``timeout``."""
        end = time.monotonic() + timeout
        try:
            port = found.get(timeout=timeout)
        except queue.Empty:
            why = f"daemon not serving after {timeout:g} s:\n{self.output()}"
            raise AssertionError(why) from None
        if port is None:
            proc.wait(10)
            raise AssertionError(f"daemon exited {proc.returncode}:\n{self.output()[-3000:]}")
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("daemon did not become healthy")

    def output(self) -> str:
        """What the daemon printed so far (all of it once it has exited)."""
        if self.proc is not None and self.proc.poll() is not None and self._reader is not None:
            self._reader.join(10)
        return "".join(self.lines)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(START_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # a daemon that does not stop is not left running after the test
            self.proc.wait(10)
            raise
        return self.output()


@pytest.fixture
def read_only_daemon(api_daemon: Served) -> Iterator[Served]:
    """A daemon of the test's own for the tests that only read it or send it what it must
    refuse: in this process on real HTTP (``api_daemon``; what they check is the API's answer,
    not the process, and a fresh one costs a fraction of a second where a shared process
    cost a start of 14 s on a loaded host). After each, no signal may be stored and no event
    be in force: a refused request stores nothing."""
    yield api_daemon
    # every event in force came as a signal, stored (a webhook's, an OpenADR one's alike)
    left = httpx.get(api_daemon.url + "/v1/signals", timeout=HTTP_S).json()["signals"]
    assert not left, f"a read-only test changed the daemon: {left}"


@pytest.fixture
def mining_daemon(tmp_path: Path) -> Iterator[DaemonProc]:
    """A daemon process of this test's own whose plan mines at every hour (the demo prices
    put the test site's miners to sleep at some, at the default hashprice)."""
    d = DaemonProc(tmp_path)
    d.mining_at_every_hour()
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


#: the test site with its devices in memory (tests/support/memfleet.py), not simulated
MEMORY_SITE = re.sub(r"\[devices\.adapter\][^\[]*", "", SITE.replace("{base}", "unused"))


@pytest.fixture
def api_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A daemon of this test's own, in this process, its devices in memory and its API on
    real HTTP (tests/support/serve.py): for tests of what the API does with a request,
    without a process to start. Its clock is the wall clock: the signals' times and
    signatures are."""
    yield from in_process(tmp_path, monkeypatch)


def in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = MEMORY_SITE
) -> Iterator[Served]:
    """``api_daemon``'s body, for other modules' fixtures; ``text``: the site file."""
    with serving(tmp_path, monkeypatch, text) as s:
        yield s


@contextlib.contextmanager
def serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = MEMORY_SITE
) -> Iterator[Served]:
    """A daemon in this process over the site file ``text`` (devices in memory), its state
    in ``tmp_path``: served until the block ends, then closed. Served again over the same
    ``tmp_path``, it is the same daemon after a restart (its state file, nothing of the
    first one's memory)."""
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("GRIDSCHED_OPENADR_TOKENS", OADR_TOKEN)
    d, _ = memory_daemon(text, tmp_path, WallClock())
    with served(d) as s:
        yield s


def signed(
    body: bytes, msg_id: str | None = None, ts: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    return signed_headers(secret, msg_id or str(uuid.uuid4()), body, ts)


def now_iso(offset_s: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def post_signal(url: str, event: Any, **kw: Any) -> httpx.Response:
    body = json.dumps(event).encode()
    return httpx.post(url + "/v1/signals", content=body, headers=signed(body, **kw), timeout=10)


def status(d: DaemonProc | Served) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(d.url + "/v1/status", timeout=10).json()
    return out


def wait_for(pred: Any, timeout: float = 30.0, step: float = 0.3) -> Any:
    """``pred()`` once truthy (tests/support/wait.py; the failure names the condition)."""
    return wait_until(pred, timeout, step)


# -- signals, security ---------------------------------------------------------------------------


def test_curtail_signal_sheds_and_measured_power_follows(mining_daemon: DaemonProc) -> None:
    daemon = mining_daemon
    wait_for(lambda: status(daemon)["import_kw"] > 60)  # the miners woken by the plan
    r = post_signal(
        daemon.url,
        {"id": "cut-1", "type": "curtail", "start": now_iso(-1), "duration": "1h", "limit_kw": 40},
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": True, "duplicate": False, "ids": ["cut-1"], "ended": []}

    def shed() -> dict[str, Any] | None:
        s = status(daemon)
        return s if s["cap_kw"] == 40 and s["import_kw"] <= 40 else None

    s = wait_for(shed, 30)
    assert s["active_events"][0]["id"] == "cut-1"
    # committed inference is protected: GPUs still serve
    assert s["classes"]["h100"]["modes"].get("sleep", 0) < 4
    text = httpx.get(daemon.url + "/metrics", timeout=10).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    cap = fams["gridsched_site_import_cap_watts"].samples[0].value
    power = {s.labels["kind"]: s.value for s in fams["gridsched_site_power_watts"].samples}
    assert cap == 40_000 and power["import"] <= 40_000
    assert any(s.labels == {"type": "curtail"} for s in fams["gridsched_signals_active"].samples)
    r = post_signal(daemon.url, {"id": "cut-1", "type": "cancel"})
    assert r.status_code == 202
    wait_for(lambda: status(daemon)["cap_kw"] == 200)


def test_retried_delivery_is_not_applied_twice(api_daemon: Served) -> None:
    daemon = api_daemon
    body = json.dumps(
        {"id": "p-1", "type": "price", "start": now_iso(), "duration": "5min", "price": 90}
    ).encode()
    h = signed(body)
    r1 = httpx.post(daemon.url + "/v1/signals", content=body, headers=h, timeout=HTTP_S)
    r2 = httpx.post(daemon.url + "/v1/signals", content=body, headers=h, timeout=HTTP_S)
    assert r1.status_code == 202 and r2.status_code == 200 and r2.json()["duplicate"] is True


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda b, h: (b, {**h, "webhook-signature": "v1,AAAA"}), 401, "does not match"),
        (
            lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-id"}),
            401,
            "missing header",
        ),
        (lambda b, h: (b + b" ", h), 401, "does not match"),
        (lambda b, h: (b, {**h, "content-type": "text/plain"}), 415, "application/json"),
        (lambda b, h: (b"x" * 5000, h), 413, "cap"),
    ],
    ids=["forged", "no-id", "tampered", "content-type", "oversized"],
)
def test_bad_requests_say_what_was_wrong(
    read_only_daemon: Served, mutate: Any, code: int, words: str
) -> None:
    daemon = read_only_daemon
    body = json.dumps({"id": "x", "type": "alert", "start": now_iso()}).encode()
    b, h = mutate(body, signed(body))
    r = httpx.post(daemon.url + "/v1/signals", content=b, headers=h, timeout=HTTP_S)
    assert r.status_code == code, r.text
    assert words in r.json()["error"]


def test_stale_timestamp_is_refused(read_only_daemon: Served) -> None:
    daemon = read_only_daemon
    r = post_signal(
        daemon.url, {"id": "old", "type": "alert", "start": now_iso()}, ts=int(time.time()) - 900
    )
    assert r.status_code == 401 and "allowed +-300 s" in r.json()["error"]


def test_invalid_signal_names_the_field(read_only_daemon: Served) -> None:
    daemon = read_only_daemon
    r = post_signal(daemon.url, {"id": "bad", "type": "curtail", "start": now_iso()})
    assert r.status_code == 422
    assert "limit_kw or level" in r.json()["detail"][0]["problem"]
    r = post_signal(daemon.url, [{"id": "a", "type": "curtail", "start": now_iso(), "level": 9}])
    assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith("[0].level")
    body = b"{not json"
    r = httpx.post(daemon.url + "/v1/signals", content=body, headers=signed(body), timeout=HTTP_S)
    assert r.status_code == 422 and "not JSON" in r.json()["error"]


def test_openadr3_notifications(api_daemon: Served) -> None:
    daemon = api_daemon
    url = daemon.url + "/openadr3/notifications"
    assert httpx.get(url, params={"echo": "abc123"}, timeout=HTTP_S).text == "abc123"
    note: dict[str, Any] = {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "evt-42",
            "programID": "prog-1",
            "priority": 1,
            "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "P9999Y"},
            "intervals": [
                {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [150]}]}
            ],
        },
    }
    assert httpx.post(url, json=note, timeout=HTTP_S).status_code == 401
    assert (
        httpx.post(
            url, json=note, headers={"Authorization": "Bearer nope"}, timeout=HTTP_S
        ).status_code
        == 403
    )
    auth = {"Authorization": f"Bearer {OADR_TOKEN}"}
    r = httpx.post(url, json=note, headers=auth, timeout=HTTP_S)
    assert r.status_code == 202, r.text
    assert "oadr:evt-42:0" in r.json()["ids"]
    wait_for(lambda: status(daemon)["cap_kw"] == 150)
    signals = httpx.get(daemon.url + "/v1/signals", timeout=HTTP_S).json()["signals"]
    assert any(s["id"] == "oadr:evt-42:0" and s["stored"]["source"] == "openadr3" for s in signals)
    bad = {
        **note,
        "object": {
            **note["object"],
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [7]}]}],
        },
    }
    r = httpx.post(url, json=bad, headers=auth, timeout=HTTP_S)
    assert r.status_code == 422 and "valid are 0, 1, 2, 3" in r.json()["detail"][0]["problem"]
    r = httpx.post(url, json={**note, "operation": "DELETE"}, headers=auth, timeout=HTTP_S)
    assert r.status_code == 202
    wait_for(lambda: status(daemon)["cap_kw"] == 200)


def test_plan_health_and_openapi(read_only_daemon: Served) -> None:
    daemon = read_only_daemon
    # the plan a daemon makes as it starts (in a process, its start-up job runs it)
    assert daemon.call(daemon.daemon.replan("start")) is not None
    plan = httpx.get(daemon.url + "/v1/plan", timeout=HTTP_S).json()
    assert plan["schema"].startswith("gridsched.plan/")
    assert httpx.get(daemon.url + "/healthz", timeout=HTTP_S).json()["ok"] is True
    spec = httpx.get(daemon.url + "/openapi.json", timeout=HTTP_S).json()
    assert {"/v1/signals", "/openadr3/notifications", "/healthz", "/metrics"} <= set(spec["paths"])


# -- durability -----------------------------------------------------------------------------------


def test_kill9_loses_no_accepted_signal(tmp_path: Path) -> None:
    """Signals are posted from another thread while the daemon is killed with -9 at a random
    moment; every signal answered 2xx must be there after the restart, and in force. Each
    signal's limit is lower than the one before, so the cap after a restart names exactly
    the last signal stored: the last one accepted, or the one in flight at the kill."""
    rounds = int(os.environ.get("GRIDSCHED_KILL_ROUNDS", "3"))
    d = DaemonProc(tmp_path)
    rng = random.Random(7)
    accepted: list[str] = []
    limits: dict[str, float] = {}
    in_flight: set[str] = set()  # no answer (the kill): stored or not, both are right
    sent = iter(range(10**6))
    d.start()
    try:
        for r in range(rounds):
            stop, first = threading.Event(), threading.Event()

            def sender(
                round_no: int, stop: threading.Event = stop, first: threading.Event = first
            ) -> None:
                while not stop.is_set():
                    n = next(sent)
                    eid, limit_kw = f"k{round_no}-{n}", round(150 - 0.01 * n, 2)
                    ev = {"id": eid, "type": "curtail", "start": now_iso(-1), "duration": "2h",
                          "limit_kw": limit_kw}  # fmt: skip
                    limits[eid] = limit_kw
                    try:
                        resp = post_signal(d.url, ev)
                    except httpx.HTTPError:
                        in_flight.add(eid)
                        return
                    if resp.status_code in (200, 202):
                        accepted.append(eid)
                        first.set()

            th = threading.Thread(target=sender, args=(r,))
            th.start()
            # the kill at a random moment once the round has had a signal accepted: on a
            # loaded host a fixed delay could end a round before any answer came back
            assert first.wait(120), f"round {r}: no signal accepted in 120 s"
            time.sleep(rng.uniform(0.0, 1.3))
            d.kill9()
            stop.set()
            th.join(20)
            d.start()
            stored = {
                s["id"] for s in httpx.get(d.url + "/v1/signals", timeout=HTTP_S).json()["signals"]
            }
            missing = [i for i in accepted if i not in stored]
            assert not missing, f"round {r}: accepted but lost: {missing[:5]}"
            assert stored <= set(accepted) | in_flight, "stored, never sent or refused"
            last = min(stored, key=limits.__getitem__)
            assert last in {accepted[-1]} | in_flight  # the newest stored is the last sent
            assert status(d)["cap_kw"] == pytest.approx(limits[last])  # and it is in force
    finally:
        if d.proc is not None and d.proc.poll() is None:
            out = d.stop()
            assert "safe posture" in out
    assert accepted
    print(f"\n{len(accepted)} signals accepted across {rounds} kill -9 restarts; none lost")
    v = Store(d.db).verify()
    assert v.ok, v.reason
    res = run_main("audit", "verify", "--db", str(d.db))  # the commands, in this process
    assert res.returncode == 0 and "intact" in res.stdout
    out_csv = tmp_path / "evidence.csv"
    res = run_main("audit", "export", "--db", str(d.db), "--from", now_iso(-3600),
                   "--to", now_iso(60), "--out", str(out_csv))  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = out_csv.read_text()
    assert "signal" in text and "commands" in text and "telemetry" in text and accepted[0] in text


def test_status_shows_the_chain_head_a_witness_can_check_later(
    read_only_daemon: Served,
) -> None:
    """The checkpoint in /v1/status is what an operator copies elsewhere: `audit verify
    --expect-head` then proves the database still holds it (nothing cut, nothing re-hashed)."""
    daemon = read_only_daemon
    audit = status(daemon)["audit"]
    assert audit["error"] is None and audit["signal_problems"] == []
    head = audit["head"]
    assert head["seq"] >= 1 and len(head["hash"]) == 64
    res = run_main("audit", "verify", "--db", str(daemon.db), "--expect-head", head["witness"])
    assert res.returncode == 0 and "intact" in res.stdout, res.stdout + res.stderr
    res = run_main("audit", "verify", "--db", str(daemon.db),
                   "--expect-head", f"{head['seq']}:{'0' * 64}")  # fmt: skip
    assert res.returncode == 1 and "the expected head" in res.stdout


def test_silent_feeds_put_the_site_in_fail_safe(tmp_path: Path) -> None:
    d = DaemonProc(tmp_path)
    d.site.write_text(
        d.site.read_text().replace(
            "body_max_bytes = 4096",
            "body_max_bytes = 4096\nsignal_silence_s = 2\nfailsafe_cap_kw = 30",
        )
    )
    d.start()
    try:
        s = wait_for(lambda: (st := status(d))["failsafe"] and st, 30)
        assert "signal feed silent" in s["failsafe"] and s["cap_kw"] == 30
        wait_for(lambda: status(d)["import_kw"] <= 30, 30)
        r = post_signal(
            d.url,
            {"id": "hb", "type": "price", "start": now_iso(3600), "duration": "5min", "price": 1},
        )
        assert r.status_code == 202
        assert status(d)["failsafe"] is None  # a signal is a heartbeat
    finally:
        out = d.stop()
    told = re.search(r"safe posture: (\d+) devices told, (\d+) confirmed by read-back, 0 not", out)
    assert told is not None and told.group(1) == told.group(2) != "0", out


def test_signal_command_signs_and_sends(
    api_daemon: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gridsched signal`` (run by its main in this process, tests/support/cli.py) signs
    with GRIDSCHED_WEBHOOK_SECRET, which api_daemon's environment gives, and is obeyed."""
    daemon = api_daemon
    res = run_main("signal", "curtail", "--url", daemon.url, "--id", "cli-1", "--level", "1",
                   "--duration", "30min")  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith("202"), res.stdout + res.stderr
    wait_for(lambda: status(daemon)["cap_kw"] == 100)
    res = run_main("signal", "cancel", "--url", daemon.url, "--id", "cli-1")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(lambda: status(daemon)["cap_kw"] == 200)
    # signed with another secret than the daemon's (the daemon, in this process, reads
    # GRIDSCHED_WEBHOOK_SECRET; the command is pointed at another variable): refused
    monkeypatch.setenv("GRIDSCHED_TEST_OTHER_SECRET", "wrong")
    res = run_main(
        "signal", "alert", "--url", daemon.url, "--secret-env", "GRIDSCHED_TEST_OTHER_SECRET"
    )
    assert res.returncode == 1 and res.stdout.startswith("401")
