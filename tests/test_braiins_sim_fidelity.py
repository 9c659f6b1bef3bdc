"""The Braiins OS+ simulator is no kinder than the firmware (fw25 audit D4, D8, D9), driven
by pyasic itself and by the adapter over TCP:

- the tuner's power target has a range (bos-plus-api ``TunerConstraints.power_target``,
  served by ``ConfigurationService/GetConstraints``), and a target outside it is refused
  (or, in the "clamp" variant, set at the nearest bound): the adapter says refused;
- pyasic's plain ``get_data()`` (no include list) and ``get_config()`` read the miner;
- a session token unused for ``timeout_s`` expires, and the adapter logs on again with
  no failed attempt.
"""

from __future__ import annotations

import time
from typing import Any

import pyasic
import pytest

from adapters.asic import PyasicMiner
from adapters.base import ModeRequest
from adapters.outcomes import Outcome, OutcomeKind
from adapters.sim.braiins import BraiinsSim
from adapters.sim.fleet import SimFleet, SimFleetThread
from tests.support.simfleet import FAST, loopback_host, one_device_fleet, run


class Skew:
    """A clock the test moves on: the simulator's time, so that an hour passes at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _sim(**kw: Any) -> tuple[BraiinsSim, SimFleetThread]:
    m = BraiinsSim(loopback_host((4028, 50051)), web_port=None, **FAST, **kw)
    return m, SimFleetThread(SimFleet([m], control_port=None))


async def _connected(dev: PyasicMiner) -> tuple[Any, list[Outcome]]:
    seen: list[Outcome] = []
    fleet = one_device_fleet(dev, seen)
    await dev.connect()
    fleet.status[dev.device_id].connected = True
    return fleet, seen


# -- D4: the tuner's power range -------------------------------------------------------------


def test_get_constraints_names_the_tuner_range_from_the_nameplate() -> None:
    """pyasic's own ``get_constraints``: default at the S19j Pro's nameplate (3050 W), min
    and max at the shares of it an S19k Pro on Braiins OS+ 26.04 reports (771 and 6435 W of
    2760 W)."""
    m, th = _sim()

    async def go() -> Any:
        miner = await pyasic.get_miner(m.host)
        return await miner.web.get_constraints()

    with th:
        got = run(go())
    power = got["tunerConstraints"]["powerTarget"]
    assert power["default"]["watt"] == 3050
    assert power["min"]["watt"] == round(3050 * 771 / 2760) == 852
    assert power["max"]["watt"] == round(3050 * 6435 / 2760) == 7111
    assert m.power_range() == (852.0, 7111.0)


@pytest.mark.parametrize("watts", [50, 99_999])
def test_a_target_outside_the_range_is_refused_and_the_adapter_says_refused(watts: int) -> None:
    """50 W and 99,999 W were taken and "confirmed" by read-back (the audit's probe); the
    firmware's range refuses them (INVALID_ARGUMENT, our assumption of what it does), the
    miner stays at its target, and the fleet's outcome is a refusal in the firmware's
    words, not an unreachable miner. pyasic's own set_power_limit says False."""
    m, th = _sim()
    dev = PyasicMiner("bos/f1", m.host, timeout_s=20.0)

    async def go() -> tuple[list[Outcome], bool, Any]:
        fleet, _ = await _connected(dev)
        out = await fleet.apply({dev.device_id: ModeRequest("run", float(watts))})
        plain = await (await pyasic.get_miner(m.host)).set_power_limit(watts)
        health = fleet.status[dev.device_id].health
        ok = await fleet.apply({dev.device_id: ModeRequest("run", 3000.0)})
        await dev.close()
        return out + ok, plain, health

    with th:
        out, plain, health = run(go())
        target = th.call(lambda: m.target_w)
    refused, ok = out
    assert not refused.ok and refused.kind is OutcomeKind.REJECTED, refused
    assert refused.attempts == 1  # a refusal is not tried again
    assert refused.error is not None
    assert "INVALID_ARGUMENT" in refused.error and "out of range [852, 7111]" in refused.error
    assert str(health) == "rejected"
    assert plain is False
    assert ok.ok and target == 3000.0


def test_a_clamping_firmware_sets_the_bound_and_the_adapter_says_what_it_set() -> None:
    """The other variant (``out_of_range="clamp"``): the nearest bound is set and answered;
    the adapter compares the answer with what it asked and reports a refusal naming the
    target the firmware set."""
    m, th = _sim(out_of_range="clamp")
    dev = PyasicMiner("bos/f2", m.host, timeout_s=20.0)

    async def go() -> list[Outcome]:
        fleet, _ = await _connected(dev)
        out = await fleet.apply({dev.device_id: ModeRequest("run", 99_999.0)})
        await dev.close()
        return list(out)

    with th:
        (out,) = run(go())
        target = th.call(lambda: m.target_w)
    assert not out.ok and out.kind is OutcomeKind.REJECTED, out
    assert out.error is not None and "the firmware set 7111 W" in out.error
    assert target == 7111.0


# -- D8: pyasic's plain get_data() and get_config() ------------------------------------------


def test_pyasic_plain_get_data_and_get_config_read_the_miner() -> None:
    """No include list: every call pyasic's BOSER_DATA_LOC makes is answered (the cooling
    state, the locate-device status, the pool groups and, for ``config``, the miner
    configuration besides the adapter's calls)."""
    m, th = _sim()

    async def go() -> tuple[Any, Any]:
        miner = await pyasic.get_miner(m.host)
        return await miner.get_data(), await miner.get_config()

    with th:
        data, config = run(go())
        calls = set(th.call(lambda: list(m.grpc_calls)))
    assert {"_cooling", "_locate", "_pool_groups", "_configuration"} <= calls
    assert data.wattage is not None and data.wattage > 2000
    assert data.hashrate is not None and float(data.hashrate) > 50
    assert data.is_mining is True
    assert len(data.fans) == 4 and all(f.speed and f.speed > 0 for f in data.fans)
    assert [str(p.url) for p in data.pools] == ["stratum+tcp://127.0.0.1:3333"]
    assert data.pools[0].user == "gridsched.sim" and data.pools[0].active is True
    assert data.fault_light is False
    assert data.wattage_limit == 3050
    assert config.mining_mode.mode == "power_tuning" and config.mining_mode.power == 3050
    pools = config.pools.groups[0].pools
    assert [(p.url, p.user) for p in pools] == [("stratum+tcp://127.0.0.1:3333", "gridsched.sim")]


# -- D9: the session token expires when unused -----------------------------------------------


class Logons:
    """Counts the logons of one pyasic ``BOSerWebAPI`` (its ``_get_auth``), client side."""

    def __init__(self, web: Any) -> None:
        self.n = 0
        real = web._get_auth

        async def counted() -> Any:
            self.n += 1
            return await real()

        web._get_auth = counted


def test_the_token_lives_while_used_and_expires_after_timeout_unused() -> None:
    """pyasic's plain client: a call within ``timeout_s`` of the last keeps the token (two
    gaps of 3000 s, 6000 s after the logon); after 3601 s unused the firmware answers
    UNAUTHENTICATED and pyasic logs on again. The logon says the timeout configured."""
    clock = Skew()
    m, th = _sim(clock=clock)

    async def go() -> list[int]:
        miner = await pyasic.get_miner(m.host)
        logons = Logons(miner.web)
        await miner.web.get_miner_details()
        seen = [logons.n]
        for gap in (3000.0, 3000.0, 3601.0):
            clock.offset += gap
            await miner.web.get_miner_details()
            seen.append(logons.n)
        return seen

    with th:
        assert run(go()) == [1, 1, 1, 2]


def test_an_expired_token_is_renewed_by_the_adapter_with_no_failed_attempt() -> None:
    """The adapter's reading and its commands over the kept channel: after an hour unused,
    each logs on again once and succeeds at its first attempt (no call of the adapter's
    failed, so the fleet counted no failure)."""
    clock = Skew()
    m, th = _sim(clock=clock)
    dev = PyasicMiner("bos/f3", m.host, timeout_s=20.0)
    attempts = {"read": 0, "apply": 0, "failed": 0}

    def counted(op: str, real: Any) -> Any:
        async def call(*args: Any) -> Any:
            attempts[op] += 1
            try:
                return await real(*args)
            except Exception:
                attempts["failed"] += 1
                raise

        return call

    dev.read = counted("read", dev.read)  # type: ignore[method-assign]
    dev.apply = counted("apply", dev.apply)  # type: ignore[method-assign]

    async def go() -> tuple[list[Outcome], list[int], list[bool]]:
        fleet, _ = await _connected(dev)
        logons = Logons(dev._need().web)
        read = [bool(await fleet.read_all())]
        seen = [logons.n]
        clock.offset += 3601.0
        read.append(bool(await fleet.read_all()))  # the three calls refused, one logon, again
        seen.append(logons.n)
        clock.offset += 3601.0
        out = await fleet.apply({dev.device_id: ModeRequest("sleep")})
        seen.append(logons.n)
        await dev.close()
        return list(out), seen, read

    with th:
        out, seen, read = run(go())
    assert seen[1] == seen[0] + 1 and seen[2] == seen[1] + 1, seen
    assert read == [True, True]
    assert out[0].ok and out[0].attempts == 1 and out[0].kind is OutcomeKind.ACCEPTED, out
    assert attempts == {"read": 2, "apply": 1, "failed": 0}


def test_the_logon_says_the_configured_timeout() -> None:
    m, th = _sim(token_timeout_s=90.0)

    async def go() -> Any:
        from grpclib.client import Channel
        from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
            AuthenticationServiceStub,
            LoginRequest,
        )

        async with Channel(m.host, 50051) as ch:
            return await AuthenticationServiceStub(ch).login(
                LoginRequest(username="root", password="root")
            )

    with th:
        got = run(go())
    assert got.timeout_s == 90 and got.token


def test_the_graphql_write_path_keeps_the_tuners_range_too() -> None:
    """asic-rs writes the power target through GraphQL (``updateAutotuning``); that path
    refused only 0 W or less after the gRPC one got the tuner's range (session 25)."""
    from adapters.sim.braiins import BraiinsSim
    from adapters.sim.braiins_web import _mutate

    sim = BraiinsSim("127.0.0.1")
    lo, hi = sim.power_range()
    sel = {"bosminer": {"config": {"updateAutotuning": {}}}}
    for watts in (int(lo) - 1, int(hi) + 1):
        out = _mutate(sim, sel, {"limit": watts})["bosminer"]["config"]["updateAutotuning"]
        assert "out of range" in out["message"], out
    ok = _mutate(sim, sel, {"limit": int(lo) + 100})["bosminer"]["config"]["updateAutotuning"]
    assert ok["autotuning"]["powerTarget"] == int(lo) + 100
