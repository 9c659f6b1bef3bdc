"""The simulated Braiins OS+ miner's gRPC answers to reads, and its tuner's power range.

Split from :mod:`adapters.sim.braiins`, which serves them. Each answer is built from
pyasic's generated ``braiins.bos.v1`` messages (``web/braiins_os/proto``), whose fields
are those of Braiins's public API (github.com/braiins/bos-plus-api, ``proto/bos/v1``):

- ``MinerService/GetMinerDetails``, ``GetMinerStats``, ``GetHashboards`` and
  ``PerformanceService/GetActivePerformanceMode``: the adapter's reading and pyasic's.
- ``CoolingService/GetCoolingState`` (``cooling.proto``; pyasic's ``_get_fans`` reads
  ``fans[n].rpm``), ``ActionsService/GetLocateDeviceStatus`` (``actions.proto``;
  ``_get_fault_light``), ``PoolService/GetPoolGroups`` (``pool.proto``; ``_get_pools``
  reads ``url``, ``user``, ``stats``, ``active``, ``alive``) and
  ``ConfigurationService/GetMinerConfiguration`` (``configuration.proto``; pyasic's
  ``get_config``, ``MinerConfig.from_boser``): what pyasic's plain ``get_data()`` asks
  for beyond the adapter's reading (``BOSER_DATA_LOC`` in
  ``miners/backends/braiins_os.py``).
- ``ConfigurationService/GetConstraints`` (``configuration.proto``; the tuner's
  ``PowerConstraints`` of ``constraints.proto``): the power-target range, which pyasic's
  ``BOSerWebAPI.get_constraints`` reads and the adapter asks at connect; or, where the
  simulator is told so, UNIMPLEMENTED (:func:`unimplemented`).

The tuner's range (:func:`power_range`): Braiins OS+ 26.04 reports default 2760 W, min
771 W and max 6435 W for an Antminer S19k Pro (``bosminer.metadata.autotuning.powerTarget``,
read from a live miner in github.com/256foundation/asic-rs pull request 292); the default
is that model's nameplate (2760 W in :mod:`models.catalog`). Other models are given the
same shares of their nameplate: an assumption, as no other model's figures are published.
The fans' speeds and the pool's share counts are the simulator's own, from its physics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpclib.const
from grpclib import GRPCError, Status
from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
    BooleanConstraint,
    BosVersion,
    CoolingAutoMode,
    CoolingConfiguration,
    FanState,
    GetConstraintsResponse,
    GetCoolingStateResponse,
    GetHashboardsResponse,
    GetMinerConfigurationResponse,
    GetMinerDetailsResponse,
    GetMinerStatsResponse,
    GetPoolGroupsResponse,
    GigaHashrate,
    Hashboard,
    LocateDeviceStatusResponse,
    MinerPowerStats,
    PerformanceMode,
    Pool,
    PoolConfiguration,
    PoolGroup,
    PoolGroupConfiguration,
    PoolStats,
    Power,
    PowerConstraints,
    PowerTargetMode,
    Quota,
    SensorLocation,
    Temperature,
    TemperatureSensor,
    TunerConfiguration,
    TunerConstraints,
    TunerMode,
    TunerPerformanceMode,
)

if TYPE_CHECKING:
    from grpclib.server import Stream

    from adapters.sim.braiins import BraiinsSim

BOS_VERSION = "2024-09-26-0-2d1d1c0b-24.09-plus"
#: The tuner's power-target range as shares of its default (the nameplate): 771 W and
#: 6435 W of 2760 W, an S19k Pro on Braiins OS+ 26.04 (module docstring).
MIN_SHARE = 771 / 2760
MAX_SHARE = 6435 / 2760
FANS = 4  # an S19-series Antminer's (pyasic's ``expected_fans`` for the S19j Pro)
POOL_URL = "stratum+tcp://127.0.0.1:3333"  # the one pool every simulated miner mines on
POOL_USER = "gridsched.sim"


def power_range(nameplate_w: float) -> tuple[int, int]:
    """The tuner's accepted power targets, min and max in watts, for a nameplate."""
    return round(nameplate_w * MIN_SHARE), round(nameplate_w * MAX_SHARE)


def details(sim: BraiinsSim) -> GetMinerDetailsResponse:
    p = sim.preset("default")
    mac = sim._mac
    return GetMinerDetailsResponse(
        uid=mac.replace(":", ""),
        hostname="braiins-os",
        mac_address=mac,
        bos_version=BosVersion(current=BOS_VERSION, major="24.09", bos_plus=True),
        sticker_hashrate=GigaHashrate(gigahash_per_second=p.ths * 1000.0),
        serial_number="SIM" + mac.replace(":", "")[-8:],
    )


def stats(sim: BraiinsSim) -> GetMinerStatsResponse:
    w, _ths = sim._advance()
    return GetMinerStatsResponse(
        power_stats=MinerPowerStats(approximated_consumption=Power(watt=max(1, round(w))))
    )


def hashboards(sim: BraiinsSim) -> GetHashboardsResponse:
    t = sim.state.temp_c
    boards = [
        Hashboard(
            id=str(i + 1),
            enabled=True,
            chips_count=126,
            board_temp=Temperature(degree_c=round(t - 6, 1)),
            highest_chip_temp=TemperatureSensor(temperature=Temperature(degree_c=t + 6)),
        )
        for i in range(3)
    ]
    return GetHashboardsResponse(hashboards=boards)


def mode(sim: BraiinsSim) -> PerformanceMode:
    target = PowerTargetMode(power_target=Power(watt=int(sim.target_w)))
    return PerformanceMode(tuner_mode=TunerPerformanceMode(power_target=target))


def cooling_state(sim: BraiinsSim) -> GetCoolingStateResponse:
    """Four fans, faster as the boards run hotter (the simulator's own curve: 1500 rpm at
    the ambient temperature, 6000 rpm at 50 degrees above it)."""
    sim._advance()
    t = sim.state.temp_c
    share = min(1.0, max(0.0, (t - sim.ambient_c) / 50.0))
    fans = [
        FanState(position=i, rpm=round(1500 + 4500 * share), target_speed_ratio=share)
        for i in range(FANS)
    ]
    hottest = TemperatureSensor(
        id=0, location=SensorLocation.CHIP, temperature=Temperature(degree_c=t + 6)
    )
    return GetCoolingStateResponse(fans=fans, highest_temperature=hottest)


def locate_status(sim: BraiinsSim) -> LocateDeviceStatusResponse:
    return LocateDeviceStatusResponse(enabled=sim.locating)


def pool_groups(sim: BraiinsSim) -> GetPoolGroupsResponse:
    mining = sim.state.phase in ("mining", "waking")
    pool = Pool(
        uid="1",
        url=POOL_URL,
        user=POOL_USER,
        enabled=True,
        alive=True,
        active=mining,
        stats=PoolStats(accepted_shares=sim.state.accepted),
    )
    return GetPoolGroupsResponse(
        pool_groups=[PoolGroup(name="Default", quota=Quota(1), pools=[pool])]
    )


def configuration(sim: BraiinsSim) -> GetMinerConfigurationResponse:
    """The pool group, automatic cooling and the tuner at its power target, as configured
    (the cooling's temperatures are not modelled: left off the wire)."""
    pool = PoolConfiguration(uid="1", url=POOL_URL, user=POOL_USER, password="x", enabled=True)
    group = PoolGroupConfiguration(uid="1", name="Default", quota=Quota(1), pools=[pool])
    tuner = TunerConfiguration(
        enabled=True,
        tuner_mode=TunerMode.POWER_TARGET,
        power_target=Power(watt=int(sim.target_w)),
    )
    cooling = CoolingConfiguration(minimum_required_fans=1, auto=CoolingAutoMode())
    return GetMinerConfigurationResponse(pool_groups=[group], temperature=cooling, tuner=tuner)


def constraints(sim: BraiinsSim) -> GetConstraintsResponse:
    """The tuner's power-target constraints: default, min and max (module docstring)."""
    lo, hi = sim.power_range()
    target = PowerConstraints(
        default=Power(watt=round(sim.preset("default").watts)),
        min=Power(watt=round(lo)),
        max=Power(watt=round(hi)),
    )
    tuner = TunerConstraints(
        power_target=target,
        enabled=BooleanConstraint(default=True),
        default_mode=TunerMode.POWER_TARGET,
    )
    return GetConstraintsResponse(tuner_constraints=tuner)


def unimplemented(req: type, rep: type) -> grpclib.const.Handler:
    """A method answered UNIMPLEMENTED, gRPC's status for one a server does not have, in a
    trailers-only answer with its content-type. grpclib's server answers a method missing
    from its mapping without the content-type, which grpclib's client (and
    :mod:`adapters.grpc_wire`, which reads answers as it does) reads as UNKNOWN."""

    async def handle(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        raise GRPCError(Status.UNIMPLEMENTED, "Method not found")

    return grpclib.const.Handler(handle, grpclib.const.Cardinality.UNARY_UNARY, req, rep)
