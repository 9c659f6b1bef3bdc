"""A simulated Antminer on Braiins OS+: the BOSminer API on 4028 and the gRPC API on 50051.

What pyasic (0.79) reads and writes for Braiins OS+ with the public gRPC API (``BOSer`` in
``miners/backends/braiins_os.py``, ``web/braiins_os/boser.py``), each shape from there:

- **BOSminer API on 4028** (cgminer-compatible, ``a+b`` multicommands): ``version``
  (``VERSION[0].BOSer``, as Braiins OS+ 24.09 answers it: a reply captured from one is in
  asic-rs's test data, ``asic-rs-firmwares/braiins/src/test/json/v24.09/version.json``;
  pyasic's and asic-rs's discovery look for "BOSMINER" or "BOSER"), ``devdetails``
  (``DEVDETAILS[0].Model`` = "Bitmain Antminer S19j Pro" names the model), ``summary``
  (``SUMMARY[0]["MHS 1m"]``), ``devs`` (``DEVS[].["MHS 5s"]``: mining while any is above
  0), ``tunerstatus`` (``TUNERSTATUS[0].TunerChainStatus[].Status``), ``pools``.
- **gRPC on 50051** (package ``braiins.bos.v1``, the messages pyasic ships generated):
  ``AuthenticationService/Login`` answers the token in the ``authorization`` initial
  metadata and in ``LoginResponse`` with its ``timeout_s``; every call below needs it, and
  answers UNAUTHENTICATED without it or once it has gone ``token_timeout_s`` unused
  (pyasic's generated ``LoginResponse``: "Token validity refreshed to this value with each
  request"). The reads (:mod:`adapters.sim.braiins_grpc`): ``MinerService/
  GetMinerDetails``, ``GetMinerStats``, ``GetHashboards``, ``PerformanceService/
  GetActivePerformanceMode``, and what pyasic's plain ``get_data()`` and ``get_config()``
  add: ``CoolingService/GetCoolingState``, ``ActionsService/GetLocateDeviceStatus``,
  ``PoolService/GetPoolGroups``, ``ConfigurationService/GetMinerConfiguration``; and
  ``ConfigurationService/GetConstraints`` (the tuner's power-target range; with
  ``constraints=False`` not served, so answered UNIMPLEMENTED). The writes:
  ``PerformanceService/SetPowerTarget`` (a target in watts within that range, answered
  with the target set; outside it refused INVALID_ARGUMENT, or with ``out_of_range=
  "clamp"`` the nearest bound set and answered: which one the firmware does is not
  documented, so both are modelled), ``ActionsService/PauseMining`` / ``ResumeMining``
  (``alreadyPaused`` / ``alreadyMining``).

The public API is documented by Braiins (github.com/braiins/bos-plus-api, proto
``bos/v1``). Faults as the other simulators: the transport ones of
:class:`~adapters.sim.server.FaultKind` on both ports, ``ignore`` (pause, resume and power
target answered and not done) and ``garble`` (answers pyasic cannot parse).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import grpclib.const
from grpclib import GRPCError, Status
from grpclib.server import Server, Stream
from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
    GetConstraintsRequest,
    GetConstraintsResponse,
    GetCoolingStateRequest,
    GetCoolingStateResponse,
    GetHashboardsRequest,
    GetHashboardsResponse,
    GetLocateDeviceStatusRequest,
    GetMinerConfigurationRequest,
    GetMinerConfigurationResponse,
    GetMinerDetailsRequest,
    GetMinerDetailsResponse,
    GetMinerStatsRequest,
    GetMinerStatsResponse,
    GetPerformanceModeRequest,
    GetPoolGroupsRequest,
    GetPoolGroupsResponse,
    LocateDeviceStatusResponse,
    LoginRequest,
    LoginResponse,
    PerformanceMode,
    Power,
    SetPowerTargetRequest,
    SetPowerTargetResponse,
)

from adapters.sim import braiins_grpc, braiins_web
from adapters.sim.calllog import CallLog
from adapters.sim.grpc_cork import CorkedServer
from adapters.sim.server import FaultKind, MinerServer
from adapters.sim.web_port import read_http_request, write_http_reply

log = logging.getLogger("gridsched.sim")

BOSER = "boser-buildroot 0.1.0-2d1d1c0b"  # VERSION[0].BOSer, as 24.09 names its API server
BOS_VERSION = braiins_grpc.BOS_VERSION  # bosVersion.current, also on the web port
GRPC_PORT = 50051
_PKG = "/braiins.bos.v1."


@dataclass
class BraiinsSim(MinerServer):
    """One simulated Braiins OS+ miner on ``host``:4028 (BOSminer), ``host``:50051 (gRPC)
    and ``host``:``web_port`` (its page and GraphQL: :mod:`adapters.sim.braiins_web`)."""

    grpc_port: int = GRPC_PORT
    #: The web port; a host that may not bind it (80 needs root) serves without it, as
    #: pyasic needs only 4028 and gRPC (asic-rs needs it to identify the miner).
    web_port: int | None = 80
    username: str = "root"
    password: str = "root"
    #: A session token's life without use (``LoginResponse.timeout_s``: "Token validity
    #: refreshed to this value with each request", pyasic's generated message); an expired
    #: one is answered UNAUTHENTICATED.
    token_timeout_s: float = 3600.0
    #: The tuner's accepted power targets (W); None: from the model's nameplate
    #: (:func:`adapters.sim.braiins_grpc.power_range`).
    power_range_w: tuple[float, float] | None = None
    #: A ``SetPowerTarget`` outside that range: "refuse" (INVALID_ARGUMENT, nothing set) or
    #: "clamp" (the nearest bound set, and answered). Which one Braiins OS+ does is not
    #: documented; refusal is the default (docs/adapters.md).
    out_of_range: str = "refuse"
    #: False: ``ConfigurationService/GetConstraints`` answered UNIMPLEMENTED
    #: (:func:`adapters.sim.braiins_grpc.unimplemented`). The public API has had it since
    #: 1.0.0-alpha (bos-plus-api CHANGELOG): a firmware without it is a precaution.
    constraints: bool = True

    description: ClassVar[str] = f"BOSer {BOSER}"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out_of_range not in ("refuse", "clamp"):
            raise ValueError(f"out_of_range is 'refuse' or 'clamp', not {self.out_of_range!r}")
        self._grpc: Server | None = None
        self._token = ""
        self._token_used = 0.0  # self.clock() when the token was last used
        self.locating = False  # GetLocateDeviceStatus.enabled
        self.grpc_calls: CallLog[str] = CallLog()
        self._web: asyncio.AbstractServer | None = None
        self.web_session = ""
        self.web_calls: CallLog[str] = CallLog()

    # -- serving: gRPC beside the API, following the same faults ---------------------------

    async def _open_more(self) -> None:
        server = CorkedServer([self])
        await server.start(self.host, self.grpc_port, reuse_address=True)
        self._grpc = server
        if self.web_port is None:
            return
        try:
            self._web = await asyncio.start_server(
                self._handle_web, self.host, self.web_port, reuse_address=True, backlog=64
            )
        except PermissionError:
            log.warning("%s: no web port %d (needs root): no GraphQL", self.host, self.web_port)
            self.web_port = None

    def _close_more(self) -> None:
        if self._grpc is not None:
            self._grpc.close()
            self._grpc = None
        if self._web is not None:
            self._web.close()
            self._web = None

    async def _handle_web(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._connection(writer, http=True):
            method, target, headers, raw = await read_http_request(reader)
            self.commands_seen += 1
            if not await self._hang_or_slow(lambda: self._web is not None):
                return  # hung until the fault ended or the miner went away: no answer
            status, body, extra = braiins_web.page(
                self, method, target.split("?", 1)[0], headers, raw
            )
            garbled = b'{"data":' + b"\xff\xfe" if self._fault(FaultKind.MALFORMED) else None
            await write_http_reply(writer, status, body, garbled, extra)

    # -- the BOSminer API on 4028 -----------------------------------------------------------

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        return self._ok(22, "BOSer versions", "VERSION", [{"API": "3.7", "BOSer": BOSER}])

    def _cmd_devdetails(self, _: list[str]) -> dict[str, Any]:
        body = [
            {"DEVDETAILS": i, "Name": "", "ID": i, "Driver": "", "Model": f"Bitmain {self.model}"}
            for i in range(3)
        ]
        return self._ok(69, "Device Details", "DEVDETAILS", body)

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        mhs = ths * 1e6
        body = {
            "Elapsed": int(self.clock() - self.state.boot_at),
            "MHS 1m": mhs,
            "MHS 5s": mhs,
            "MHS av": mhs,
            "Accepted": self.state.accepted,
        }
        return self._ok(11, "Summary", "SUMMARY", [body])

    def _cmd_devs(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        body = [
            {"ASC": i, "ID": i, "MHS 5s": ths * 1e6 / 3, "MHS 1m": ths * 1e6 / 3} for i in range(3)
        ]
        return self._ok(9, "3 ASC(s)", "DEVS", body)

    def _cmd_tunerstatus(self, _: list[str]) -> dict[str, Any]:
        chains = [{"HashchainIndex": i, "Status": "Stable"} for i in range(3)]
        body = {"PowerLimit": int(self.target_w), "TunerChainStatus": chains}
        return self._ok(23, "Tuner Status", "TUNERSTATUS", [body])

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        return self._ok(7, "1 Pool(s)", "POOLS", [self._pool()])

    # -- gRPC on 50051 ----------------------------------------------------------------------

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        async def admit(stream: Stream[Any, Any], name: str, auth: bool) -> tuple[Any, bool]:
            """A call's request, once it passes the hang/slow faults and the token; and
            whether a GARBLE fault answers it (every field at its default: unusable)."""
            request = await stream.recv_message()
            self.grpc_calls.append(name)
            if not await self._hang_or_slow(lambda: self._grpc is not None):
                raise GRPCError(Status.UNAVAILABLE, "hung up")
            token = stream.metadata.get("authorization") if stream.metadata else None
            if auth and not self._authorised(token):
                raise GRPCError(Status.UNAUTHENTICATED, "authentication token is missing")
            return request, self._fault(FaultKind.GARBLE) is not None

        def unary(
            name: str, fn: Callable[[BraiinsSim], Any], req: type, rep: type
        ) -> grpclib.const.Handler:
            async def handle(stream: Stream[Any, Any]) -> None:
                _request, garbled = await admit(stream, name, True)
                await stream.send_message(rep() if garbled else fn(self))

            return grpclib.const.Handler(handle, grpclib.const.Cardinality.UNARY_UNARY, req, rep)

        async def login(stream: Stream[Any, Any]) -> None:
            req = await stream.recv_message()
            if req is None or req.username != self.username or req.password != self.password:
                raise GRPCError(Status.UNAUTHENTICATED, "invalid username or password")
            self._authorised(self._token)  # an expired token is not handed out again
            self._token = self._token or secrets.token_urlsafe(12)
            self._token_used = self.clock()
            await stream.send_initial_metadata(metadata={"authorization": self._token})
            timeout_s = max(1, round(self.token_timeout_s))
            await stream.send_message(LoginResponse(token=self._token, timeout_s=timeout_s))

        def raw(fn: Callable[[bytes], bytes]) -> grpclib.const.Handler:
            """A write served at the wire: its request read for the one field it has, its
            answer made once (pyasic's messages as bytes; betterproto was a fifth of this
            process's CPU per write). The same checks, in the same order, as ``unary``."""

            async def handle(stream: Stream[Any, Any]) -> None:
                request, garbled = await admit(stream, fn.__name__, True)
                body = b"" if garbled else fn(request.data if request else b"")
                await stream.send_message(_Bytes(body))

            return grpclib.const.Handler(
                handle, grpclib.const.Cardinality.UNARY_UNARY, _Bytes, _Bytes
            )

        g = braiins_grpc
        served = {
            _PKG + "AuthenticationService/Login": grpclib.const.Handler(
                login, grpclib.const.Cardinality.UNARY_UNARY, LoginRequest, LoginResponse
            ),
            _PKG + "MinerService/GetMinerDetails": unary(
                "_details", g.details, GetMinerDetailsRequest, GetMinerDetailsResponse
            ),
            _PKG + "MinerService/GetMinerStats": unary(
                "_stats", g.stats, GetMinerStatsRequest, GetMinerStatsResponse
            ),
            _PKG + "MinerService/GetHashboards": unary(
                "_hashboards", g.hashboards, GetHashboardsRequest, GetHashboardsResponse
            ),
            _PKG + "PerformanceService/GetActivePerformanceMode": unary(
                "_mode", g.mode, GetPerformanceModeRequest, PerformanceMode
            ),
            _PKG + "CoolingService/GetCoolingState": unary(
                "_cooling", g.cooling_state, GetCoolingStateRequest, GetCoolingStateResponse
            ),
            _PKG + "ActionsService/GetLocateDeviceStatus": unary(
                "_locate",
                g.locate_status,
                GetLocateDeviceStatusRequest,
                LocateDeviceStatusResponse,
            ),
            _PKG + "PoolService/GetPoolGroups": unary(
                "_pool_groups", g.pool_groups, GetPoolGroupsRequest, GetPoolGroupsResponse
            ),
            _PKG + "ConfigurationService/GetMinerConfiguration": unary(
                "_configuration",
                g.configuration,
                GetMinerConfigurationRequest,
                GetMinerConfigurationResponse,
            ),
            _PKG + "ConfigurationService/GetConstraints": unary(
                "_constraints", g.constraints, GetConstraintsRequest, GetConstraintsResponse
            ),
            _PKG + "PerformanceService/SetPowerTarget": raw(self._set_power_target),
            _PKG + "ActionsService/PauseMining": raw(self._pause),
            _PKG + "ActionsService/ResumeMining": raw(self._resume),
        }
        if not self.constraints:
            served[_PKG + "ConfigurationService/GetConstraints"] = g.unimplemented(
                GetConstraintsRequest, GetConstraintsResponse
            )
        return served

    def _authorised(self, token: object) -> bool:
        """Whether ``token`` is the session's and still valid, its validity then renewed;
        a token unused for ``token_timeout_s`` has expired and is forgotten."""
        now = self.clock()
        if self._token and now - self._token_used > self.token_timeout_s:
            self._token = ""  # expired: the next Login makes a new one
        if not self._token or token != self._token:
            return False
        self._token_used = now
        return True

    def power_range(self) -> tuple[float, float]:
        """The tuner's accepted power targets (W), min and max (``GetConstraints``)."""
        if self.power_range_w is not None:
            return self.power_range_w
        lo, hi = braiins_grpc.power_range(self.preset("default").watts)
        return float(lo), float(hi)

    def _set_power_target(self, request: bytes) -> bytes:
        """``SetPowerTargetRequest`` (``save_action`` 1, ``power_target`` 2 with ``watt``
        1) in, ``SetPowerTargetResponse`` (``power_target`` 1) out."""
        # decoded by pyasic's generated message (betterproto), not by the adapter's own
        # field reader: the simulator must not agree with the client by construction;
        # once per request's bytes (a pure function of them, and betterproto's parse was
        # most of the simulator's extra CPU for a target beside a pause)
        watts = _TARGET_ASKED.get(request)
        if watts is None:
            try:
                msg = SetPowerTargetRequest().parse(request)
            except Exception:  # a body that is not the message; the words are our choice
                raise GRPCError(Status.INTERNAL, "failed to decode Protobuf message") from None
            watts = int(msg.power_target.watt) if msg.power_target else 0
            if len(_TARGET_ASKED) < 4096:
                _TARGET_ASKED[request] = watts
        lo, hi = self.power_range()
        if not lo <= watts <= hi:
            if watts <= 0 or self.out_of_range == "refuse":
                words = f"power target {watts} W out of range [{lo:g}, {hi:g}] W"
                raise GRPCError(Status.INVALID_ARGUMENT, words)
            watts = round(min(max(watts, lo), hi))  # "clamp": the nearest bound, answered
        if self._fault(FaultKind.IGNORE) is None:
            self.set_target(float(watts))
        return _target_reply(watts)

    def _pause(self, _: bytes) -> bytes:
        already = self.state.phase == "sleeping"
        if self._fault(FaultKind.IGNORE) is None:
            self.sleep()
        return _TRUE if already else b""  # PauseMiningResponse.already_paused

    def _resume(self, _: bytes) -> bytes:
        already = self.state.phase in ("mining", "waking")
        if self._fault(FaultKind.IGNORE) is None:
            self.wake()
        return _TRUE if already else b""  # ResumeMiningResponse.already_mining


class _Bytes:
    """A message as its bytes, for grpclib's ``ProtoCodec`` (it asks a message type only
    for ``FromString`` and a message for ``SerializeToString``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf name grpclib calls
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> _Bytes:
        return cls(data)


_TRUE = b"\x08\x01"  # field 1, a bool true (proto3 leaves false off the wire)
_TARGET_REPLIES: dict[int, bytes] = {}
_TARGET_ASKED: dict[bytes, int] = {}  # SetPowerTargetRequest's bytes -> its watts


def _target_reply(watts: int) -> bytes:
    got = _TARGET_REPLIES.get(watts)
    if got is None:
        got = bytes(SetPowerTargetResponse(power_target=Power(watt=watts)))
        if len(_TARGET_REPLIES) < 4096:
            _TARGET_REPLIES[watts] = got
    return got
