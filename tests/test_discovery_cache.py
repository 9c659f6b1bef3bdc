"""Discovery remembered: what pyasic found at each address is kept (the daemon's state file)
and reused on the next start after one ``version`` call; a device that answers as something
else is discovered afresh. ``fleet status`` is read only: it leaves a daemon's LuxOS session
alone, and shows discovery's progress only on a terminal."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import discovery
from adapters.asic import PyasicMiner
from adapters.discovery import IdentityBook
from adapters.fleet import Fleet
from adapters.sim.fleet import FIRMWARE, MinerSpec, SimFleet, SimFleetThread
from adapters.sim.luxos import LuxosSim
from models.firmware import Family
from scheduler.audit.head import head_path
from scheduler.audit.store import Store
from scheduler.cli.fleet import Progress
from scheduler.cli.main import main
from scheduler.cli.simulate import site_for_simulator
from tests.support.simfleet import FAST, can_bind_80, firmware_fleet, free_base, loopback_host

FAMILIES = ("luxos", "antminer", "braiins", "whatsminer", "vnish", "whatsminer3")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleetThread]:
    """One miner of each firmware family (the web-on-80 ones only where port 80 binds)."""
    firmware = tuple(f for f in FAMILIES if can_bind_80() or f not in ("antminer", "vnish"))
    ports = (4028, 4433, 50051, *((80,) if can_bind_80() else ()))
    yield from firmware_fleet(len(firmware), firmware, ports, ("Antminer S19j Pro",))


def _kind(m: Any) -> str:
    return next(k for k, cls in FIRMWARE.items() if type(m) is cls)


async def _connect(hosts: dict[str, str], book: IdentityBook) -> Fleet:
    miners = [PyasicMiner(f"{k}/0", h, timeout_s=10.0, identities=book) for k, h in hosts.items()]
    fleet = Fleet(miners)
    errors = await fleet.connect_all()
    assert not any(errors.values()), errors
    await fleet.close()
    return fleet


def _identity(fleet: Fleet) -> dict[str, Any]:
    out = {}
    for device_id, dev in fleet.by_id.items():
        assert dev.info is not None
        out[device_id] = dev.info
    return out


def test_a_second_start_with_the_cache_probes_no_known_miner(sim: SimFleetThread) -> None:
    hosts = {_kind(m): m.host for m in sim.fleet.miners}
    first = IdentityBook()
    before = asyncio.run(_connect(hosts, first))
    assert first.discoveries == len(hosts) and first.reused == 0
    stored = json.loads(json.dumps(first.changes()))  # what the state file keeps
    cached = {k for k, h in hosts.items() if h in stored}
    # Every family answers pyasic's `version` on 4028 in a way that can be re-checked,
    # except Whatsminer API v3, whose 4028 answers only get_version: discovered each start.
    assert cached == set(hosts) - {"whatsminer3"}
    again = IdentityBook.from_docs(stored)
    after = asyncio.run(_connect(hosts, again))
    assert again.discoveries == len(hosts) - len(cached)
    assert again.reused == len(cached)
    assert _identity(after) == _identity(before)  # the same make, model, firmware, presets
    assert again.changes() == {}  # nothing new to store


def test_a_device_that_answers_as_something_else_is_discovered_again(
    sim: SimFleetThread,
) -> None:
    """The address of a Braiins OS+ miner held a LuxOS miner's identity (re-flashed since):
    its ``version`` answer no longer matches, so pyasic's discovery runs, and the book
    records what is there now."""
    hosts = {_kind(m): m.host for m in sim.fleet.miners}
    book = IdentityBook()
    asyncio.run(_connect({"luxos": hosts["luxos"]}, book))
    luxos = book.changes()[hosts["luxos"]]
    assert luxos is not None
    stale = IdentityBook.from_docs({hosts["braiins"]: {**luxos, "address": hosts["braiins"]}})
    fleet = asyncio.run(_connect({"braiins": hosts["braiins"]}, stale))
    assert (stale.discoveries, stale.reused) == (1, 0)
    assert fleet.by_id["braiins/0"].info is not None
    assert fleet.by_id["braiins/0"].info.family == Family.BRAIINS.value
    now = stale.changes()[hosts["braiins"]]
    assert now is not None and now["family"] == Family.BRAIINS.value


def test_identities_are_kept_in_the_state_file(tmp_path: Path) -> None:
    book = IdentityBook()
    doc = {"address": "10.0.0.7", "miner_class": "m:C", "check": "LuxOS|{}", "family": "luxos"}
    book.put(IdentityBook.from_docs({"10.0.0.7": doc}).known["10.0.0.7"])

    async def save() -> None:
        store = Store(tmp_path / "state.db")
        store.start()
        try:
            await store.put_device_identities(book.changes())
        finally:
            store.close()

    asyncio.run(save())
    reopened = Store(tmp_path / "state.db")
    try:
        loaded = IdentityBook.from_docs(reopened.device_identities())
    finally:
        reopened.close()
    assert loaded.known == book.known


def test_fleet_status_leaves_a_daemons_luxos_session_alone() -> None:
    """A daemon holds the miner's one LuxOS session; `fleet status` (read only) connects and
    reads, even past the renewal age, without ending it."""
    host = loopback_host()
    m = LuxosSim(host, session_ttl_s=60.0, **FAST)
    th = SimFleetThread(SimFleet([m], control_port=None))
    with th:
        logon = th.call(lambda: m.answer(b'{"command": "logon"}'))
        daemons = logon["SESSION"][0]["SessionID"]
        dev = PyasicMiner("s/0", host, timeout_s=10.0, session_renew_s=0.0, sessions=False)
        fleet = Fleet([dev])

        async def status() -> int:
            await fleet.connect_all()
            n = len(await fleet.read_all())
            await fleet.close()
            return n

        assert asyncio.run(status()) == 1
        now = th.call(lambda: m.answer(b'{"command": "session"}'))
        assert now["SESSION"][0]["SessionID"] == daemons


def test_fleet_status_fills_the_cache_then_probes_no_known_miner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = free_base(3)
    fleet = SimFleet.build(3, base=base, control_port=None, **FAST)
    site = tmp_path / "site.toml"
    specs = [MinerSpec(m.host, "luxos", m.model) for m in fleet.miners]
    site.write_text(site_for_simulator(specs, [], None))
    db = tmp_path / "state.db"

    async def daemon_was_here() -> None:  # a state file with a chain and its head file
        store = Store(db)
        store.start()
        try:
            await store.record("start", {"by": "a daemon"})
        finally:
            store.close()

    asyncio.run(daemon_was_here())
    head = head_path(str(db))
    before = head.read_bytes()
    with SimFleetThread(fleet):
        assert main(["fleet", "status", "--config", str(site), "--db", str(db)]) == 0
        assert "discovery: 3 miners probed, 0 known" in capsys.readouterr().err
        assert main(["fleet", "status", "--config", str(site), "--db", str(db)]) == 0
        out = capsys.readouterr()
    assert "discovery: 0 miners probed, 3 known" in out.err
    assert "connecting" not in out.err  # stderr is not a terminal here: no progress line
    assert head.read_bytes() == before  # the daemon's head file is not written by status
    store = Store(db)
    try:
        assert [r[2] for r in store.records(0.0, 2e9)] == ["start"]
    finally:
        store.close()


def test_progress_is_shown_on_a_terminal_only() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        show = Progress("connecting 3 devices", stream, every_s=0.0)
        for done in (1, 2, 3):
            show(done, 3)
    assert pipe.getvalue() == ""
    lines = tty.getvalue().split("\r")
    assert lines[-1].startswith("connecting 3 devices: 3/3 (") and lines[-1].endswith("s)\n")
    assert len(lines) == 4  # one rewrite per device (every_s=0), the last one ends the line


def test_a_daemons_second_start_probes_no_known_miner(tmp_path: Path) -> None:
    """The daemon keeps what discovery found in its state file: the next start on the same
    file builds each known miner from it after one `version` call."""
    from tests.support.daemon import daemon_of, free_loopback_base, running

    site = f"""
[site]
name = "cache"
interconnect_kw = 100
[[devices]]
name = "s19"
kind = "asic"
model = "S19j Pro"
count = 3
[devices.adapter]
kind = "sim"
sim_base = "{free_loopback_base(3)}"
timeout_s = 10
"""

    async def start() -> tuple[int, int, int]:
        d = daemon_of(tmp_path, site)
        async with running(d):
            known = len(d.identities.known)
        return d.identities.discoveries, d.identities.reused, known

    assert asyncio.run(start()) == (3, 0, 3)
    assert asyncio.run(start()) == (0, 3, 3)


def test_discovery_waits_the_adapters_timeout_not_only_pyasics_own() -> None:
    """pyasic's identification gives up after its own ``factory_get_timeout`` (3 s by
    default) whatever the adapter's ``timeout_s``: a miner slower than that to answer (a
    loaded host, a congested link) read as "no miner identified", unreachable. Discovery
    gives it the adapter's timeout. Here pyasic's is 1 s and the miner answers in 1.5 s."""
    import pyasic.settings

    from adapters import discovery
    from adapters.sim.server import FaultKind

    host = loopback_host()
    m = LuxosSim(host, **FAST)
    before = pyasic.settings.get("factory_get_timeout")
    pyasic.settings.update("factory_get_timeout", 1)
    try:
        th = SimFleetThread(SimFleet([m], control_port=None))
        with th:
            th.call(lambda: m.inject(FaultKind.SLOW, 60.0, 1.5))
            found = asyncio.run(discovery.discover("slow/0", host, 4.0, None))
        assert found.miner is not None and "LUXMiner" in type(found.miner).__name__
    finally:
        pyasic.settings.update("factory_get_timeout", before)


# A first discovery, with no identity on record, identifies a miner whose answer to
# ``version`` names its firmware from that answer and pyasic's own model steps, without
# pyasic's web probe; every other miner goes through pyasic's whole discovery. Either way
# the class is the one ``pyasic.get_miner`` chooses (issue 21: discovery at scale).


def test_every_family_is_identified_as_pyasics_whole_discovery_identifies_it(
    sim: SimFleetThread,
) -> None:
    import pyasic

    for m in sim.fleet.miners:
        found = asyncio.run(discovery.discover("m/0", m.host, 5.0, discovery.IdentityBook()))
        theirs = asyncio.run(pyasic.get_miner(m.host))
        # pyasic makes a class per Whatsminer (API v2 or v3 by firmware): compared by name
        assert type(found.miner).__name__ == type(theirs).__name__, _kind(m)
        assert discovery.class_name(found.miner) == discovery.class_name(theirs), _kind(m)
        assert found.miner.ip == theirs.ip
        # The fingerprint is the one a later start re-checks (empty only for Whatsminer
        # API v3, whose 4028 answers no `version`).
        assert bool(found.check) == (_kind(m) != "whatsminer3"), _kind(m)
        if found.check:
            check = asyncio.run(discovery.version_fingerprint(m.host))
            assert found.check == check, _kind(m)


def test_a_miner_named_by_its_version_answer_is_asked_nothing_else_to_be_found(
    sim: SimFleetThread,
) -> None:
    """pyasic's discovery asks 4028 ``version`` and ``devdetails`` and HTTP 80 and 443 at
    once (a new HTTP client with TLS per miner), then the model; the fingerprint was one
    more ``version``. Now a miner whose ``version`` names its firmware answers that, and
    only what pyasic's own model step asks (LuxOS, Whatsminer: ``version`` again), and no
    web request; the fingerprint comes from the first answer."""
    luxos = next(m for m in sim.fleet.miners if _kind(m) == "luxos")
    before = sim.call(lambda: luxos.commands_seen)
    found = asyncio.run(discovery.discover("luxos/0", luxos.host, 5.0, discovery.IdentityBook()))
    assert "LUXMiner" in type(found.miner).__name__
    assert sim.call(lambda: luxos.commands_seen) - before == 2  # version, version (model)


def test_an_answer_that_does_not_name_the_firmware_leaves_it_to_pyasic(
    sim: SimFleetThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``version`` answer pyasic cannot classify (here: none at all, as from firmware
    that answers only on HTTP) is not guessed from: pyasic's whole discovery runs."""
    calls: list[str] = []

    async def whole(address: str) -> Any:
        calls.append(address)
        return "the whole discovery's miner"

    async def silent(address: str, cmd: str) -> None:
        return None

    from pyasic.miners.factory import MinerFactory

    monkeypatch.setattr("pyasic.get_miner", whole)
    monkeypatch.setattr(MinerFactory, "_socket_ping", staticmethod(silent))
    luxos = next(m for m in sim.fleet.miners if _kind(m) == "luxos")
    found = asyncio.run(discovery.discover("luxos/0", luxos.host, 5.0, None))
    assert found.miner == "the whole discovery's miner" and calls == [luxos.host]


@pytest.mark.skipif(not can_bind_80(), reason="needs port 80 (root or CAP_NET_BIND_SERVICE)")
def test_a_miner_slow_to_answer_version_is_still_found_by_pyasics_web_probe() -> None:
    """Found by review: asking ``version`` first and pyasic's whole discovery only after it
    gave up lost a LuxOS miner whose ``version`` answer came after pyasic's timeout, which
    pyasic's own web probe (its page names Luxor's firmware) found. pyasic's discovery now
    starts beside the ``version`` ask once that has had HEAD_START_S to itself."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import pyasic.settings

    from adapters.sim.server import FaultKind

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><title>Luxor Firmware</title></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    host = loopback_host((4028, 80))
    m = LuxosSim(host, **FAST)
    web = HTTPServer((host, 80), Page)
    threading.Thread(target=web.serve_forever, args=(0.05,), daemon=True).start()
    before = pyasic.settings.get("factory_get_timeout")
    try:
        th = SimFleetThread(SimFleet([m], control_port=None))
        with th:
            th.call(lambda: m.inject(FaultKind.SLOW, 60.0, 1.5))  # every answer 1.5 s late
            found = asyncio.run(discovery.discover("slow/0", host, 1.0, None))
    finally:
        pyasic.settings.update("factory_get_timeout", before)
        web.shutdown()
        web.server_close()
    assert "LUXMiner" in type(found.miner).__name__


def test_an_address_where_nothing_answers_is_said_in_words() -> None:
    """Field audit (session 20), no. 6: a site whose addresses were all wrong said only "no
    miner identified"; pyasic's discovery keeps no cause. What a plain connection to the
    miner's ports met is said: refused, or a port that accepts but answers nothing known."""
    import contextlib
    import socket
    import threading

    from adapters import discovery
    from adapters.base import DeviceUnreachable

    host = loopback_host()  # nothing listens there
    with pytest.raises(DeviceUnreachable) as err:
        asyncio.run(discovery.discover("gone/0", host, 1.0, None))
    assert "port 4028: connection refused; port 80: connection refused" in str(err.value)
    with socket.socket() as srv:  # something on 4028 that hangs up on every connection
        srv.bind((host, 4028))
        srv.listen()

        def hang_up() -> None:
            with contextlib.suppress(OSError):
                while True:
                    srv.accept()[0].close()

        threading.Thread(target=hang_up, daemon=True).start()
        with pytest.raises(DeviceUnreachable) as err:
            asyncio.run(discovery.discover("mute/0", host, 1.0, None))
    assert "port 4028 accepts connections, but no firmware pyasic knows" in str(err.value)
