"""Braiins OS+ over one kept gRPC channel per miner.

pyasic's ``BOSerWebAPI.send_command`` opens a new grpclib ``Channel`` for every call: a TCP
connection, HTTP/2's preface and SETTINGS exchange and a fresh HPACK table each time. In a
profile of the fleet benchmark's Braiins commands (``benchmarks/fleet_control.py
--profile``) that setup and its framing were most of the controller's CPU per command
(docs/performance.md, "Fleet control"). A grpclib ``Channel`` connects on first use and
again after its connection is lost (``Channel.__connect__``), so one is kept per miner and
the calls are otherwise pyasic's: the same stub, the same token renewal on
``UNAUTHENTICATED``, the same ``APIError`` for a failed call.

The writes (:meth:`KeptChannel.write`: ``PauseMining``, ``ResumeMining``,
``SetPowerTarget``, as pyasic's ``stop_mining``, ``resume_mining`` and ``set_power_limit``
send them) and the reading's calls go over a kept connection of our own
(:mod:`adapters.grpc_wire`: the same headers and message bytes as grpclib's, without
grpclib, ``h2`` and betterproto, which a profile of the fleet benchmark put at most of a
command's CPU). A request's bytes are made once (an empty message; a power target's once
per target) and the answer's bytes are read only for the one number a power target needs.
pyasic's own calls (``send_command``: the login, discovery's) keep grpclib's ``Channel``.
pyasic's ``stop_mining`` also answers False for any ``APIError``, a refused connection as
much as the firmware's refusal, and the adapter took both for a refusal; here the gRPC
status decides (``UNAVAILABLE`` and a lost connection are unreachable,
``DEADLINE_EXCEEDED`` a timeout, any other status the firmware's refusal in its words).
At connect the tuner's power-target range is asked once (:func:`tuner_range`:
``ConfigurationService/GetConstraints``, ``tuner_constraints.power_target`` min and max).

A reading (:func:`read`) asks for what the adapter's Telemetry uses, from the calls
pyasic's ``BOSer.get_data`` makes for those fields (``BOSER_DATA_LOC``): over the kept
channel ``MinerService/GetMinerStats`` (power: ``power_stats.approximated_consumption``),
``MinerService/GetHashboards`` (each board's ``highest_chip_temp``) and
``PerformanceService/GetActivePerformanceMode`` (the tuner's power target), requests as
bytes made once and answers read at the wire for those fields only
(:mod:`adapters.braiins_fields`, by the field numbers of pyasic's generated
``braiins.bos.v1``); and on the BOSminer API one ``summary+tunerstatus+devs`` (hashrate
``MHS 1m``, the tuner's chain errors, mining while a device's ``MHS 5s`` is above 0), sent
as it is: pyasic's ``multicommand`` re-derives its command list by introspection on every
call. A field not on the wire is unknown, never 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    Telemetry,
    contain,
)
from adapters.braiins_fields import chip_temps_c, power_w, target_w, value_at
from adapters.neterrors import describe
from adapters.payloads import asic_state

if TYPE_CHECKING:
    from adapters.grpc_wire import Wire

log = logging.getLogger("gridsched.fleet")

_PKG = "/braiins.bos.v1."
#: pyasic's control calls as the gRPC methods it sends them to (``web/braiins_os/boser.py``).
WRITES = {
    "stop_mining": _PKG + "ActionsService/PauseMining",
    "resume_mining": _PKG + "ActionsService/ResumeMining",
    "set_power_limit": _PKG + "PerformanceService/SetPowerTarget",
}
#: The reading's gRPC calls (each request an empty message) and the BOSminer API's.
STATS = _PKG + "MinerService/GetMinerStats"
HASHBOARDS = _PKG + "MinerService/GetHashboards"
MODE = _PKG + "PerformanceService/GetActivePerformanceMode"
CONSTRAINTS = _PKG + "ConfigurationService/GetConstraints"  # the tuner's range, at connect
#: A range not read for a passing reason (no answer in time, an unreadable one) is asked
#: again with a reading this long after (:func:`tuner_range`).
RANGE_RETRY_S = 600.0
RPC_READING = "summary+tunerstatus+devs"


_EMPTY = b""  # PauseMiningRequest and ResumeMiningRequest have no fields
_TARGETS: dict[int, bytes] = {}  # SetPowerTargetRequest per target (W), for every miner
_NO_RANGE_SAID: set[str] = set()  # miners whose firmware gives no power range: logged once


def target_request(watts: int) -> bytes:
    """``SetPowerTargetRequest(power_target=Power(watt=watts), save_action=
    SAVE_AND_FORCE_APPLY)`` as pyasic's ``set_power_limit`` sends it, made once per
    target."""
    raw = _TARGETS.get(watts)
    if raw is None:
        from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
            Power,
            SaveAction,
            SetPowerTargetRequest,
        )

        msg = SetPowerTargetRequest(
            power_target=Power(watt=watts), save_action=SaveAction.SAVE_AND_FORCE_APPLY
        )
        raw = bytes(msg)
        if len(_TARGETS) < 4096:
            _TARGETS[watts] = raw
    return raw


class KeptChannel:
    """pyasic's ``BOSerWebAPI.send_command`` over one kept channel; :meth:`install` routes
    the miner's gRPC calls (commands and readings) through it."""

    def __init__(self, web: Any) -> None:
        self.web = web  # pyasic's BOSerWebAPI: ip, port, auth(), _get_auth()
        self._channel: Any = None  # grpclib's, for pyasic's own calls (send_command)
        self._stub: Any = None
        self._wire: Wire | None = None  # ours, for the writes and the reading's calls
        self._renewing = asyncio.Lock()  # one logon for the calls that found the token gone
        # the tuner's power-target range (W), said (or none to say), last asked: tuner_range
        self.range_w: tuple[float, float] | None = None
        self.range_settled, self.range_asked_at = False, -math.inf

    def _open(self) -> Any:
        from grpclib.client import Channel
        from pyasic.web.braiins_os.boser import BOSMinerGRPCStub

        if self._channel is None:  # made in the running loop, which it keeps
            self._channel = Channel(self.web.ip, self.web.port)
            self._stub = BOSMinerGRPCStub(self._channel)
        return self._channel

    def _request(self, fn: str, args: tuple[Any, ...]) -> bytes:
        return target_request(int(args[0])) if fn == "set_power_limit" else _EMPTY

    async def _unary(self, path: str, request: bytes) -> bytes:
        """One call with the session token over the kept wire (:mod:`adapters.grpc_wire`),
        logging on again once if it has expired."""
        from grpclib import GRPCError, Status

        if self._wire is None:
            from adapters.grpc_wire import Wire

            self._wire = Wire(str(self.web.ip), int(self.web.port))
        for again in (False, True):
            token = await self.web.auth()
            try:
                reply = await self._wire.call(path, request, (("authorization", str(token)),))
            except GRPCError as e:
                if again or e.status != Status.UNAUTHENTICATED:
                    raise
                async with self._renewing:  # the token expired: a new one, once for all
                    if self.web.token == token:
                        await self.web._get_auth()
                continue
            return b"" if reply is None else reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(self, device_id: str, fn: str, args: tuple[Any, ...], timeout_s: float) -> None:
        """Do what pyasic's ``fn`` (``stop_mining``, ``resume_mining``, ``set_power_limit``)
        does; raise unreachable, a timeout, or the firmware's refusal in its words."""
        path = WRITES.get(fn)
        if path is None:
            known = ", ".join(WRITES)
            raise ValueError(f"no Braiins OS+ write for pyasic's {fn!r}; known: {known}")
        what = path.rsplit("/", 1)[1] + (f" {int(args[0])} W" if args else "")
        call = self._checked(device_id, what, path, self._request(fn, args))
        data = await contain(device_id, what, call, timeout_s)
        if fn == "set_power_limit":
            try:  # SetPowerTargetResponse.power_target.watt, 0 when absent (proto3)
                got = value_at(data, 1, 1)
                if not isinstance(got, int | None):
                    raise ValueError(f"power_target.watt is not a varint: {got!r}")
            except ValueError as e:
                raise BadReply(device_id, f"{what}: an answer that is no message: {e}") from None
            if not got:  # absent (proto3: 0 is not sent): the answer names no target
                raise BadReply(
                    device_id,
                    f"{what}: an answer without power_target.watt (the target set): "
                    f"{data[:40].hex() or 'an empty message'}",
                )
            if got != int(args[0]):  # what pyasic's set_power_limit asks of the answer
                raise ControlRejected(device_id, f"{what}: the firmware set {got} W")

    async def _checked(self, device_id: str, what: str, path: str, request: bytes) -> bytes:
        """:meth:`_unary`, its gRPC status told apart (inside :func:`contain`, which would
        call anything it does not know an unreadable answer)."""
        from grpclib import GRPCError, Status
        from grpclib.exceptions import StreamTerminatedError

        try:
            return await self._unary(path, request)
        except GRPCError as e:
            words = f"{what}: {e.status.name} {e.message or ''}".rstrip()
            if e.status is Status.UNAVAILABLE:
                raise DeviceUnreachable(device_id, words) from None
            if e.status is Status.DEADLINE_EXCEEDED:
                raise DeviceTimeout(device_id, words) from None
            raise ControlRejected(device_id, f"the firmware refused: {words}") from None
        except StreamTerminatedError as e:
            raise DeviceUnreachable(device_id, f"{what}: connection lost ({e})") from None

    def install(self) -> None:
        self.web.send_command = self.send_command

    async def send_command(
        self,
        command: str,
        ignore_errors: bool = False,
        allow_warning: bool = True,
        privileged: bool = False,
        **parameters: Any,
    ) -> dict[str, Any]:
        from grpclib import GRPCError, Status
        from pyasic.errors import APIError

        message = parameters["message"]
        metadata: list[tuple[str, str]] = []
        if privileged:
            metadata.append(("authorization", await self.web.auth()))
        self._open()
        endpoint = getattr(self._stub, command, None)
        if endpoint is None:
            if not ignore_errors:
                raise APIError(f"Command not found - {command}")
            return {}
        try:
            try:
                reply: dict[str, Any] = (await endpoint(message, metadata=metadata)).to_pydict()
            except GRPCError as e:
                if e.status != Status.UNAUTHENTICATED:
                    raise
                await self.web._get_auth()  # the token expired: a new one, once
                metadata = [("authorization", await self.web.auth())]
                reply = (await endpoint(message, metadata=metadata)).to_pydict()
        except (GRPCError, ConnectionError) as e:
            raise APIError(f"gRPC command failed - {endpoint}") from e
        return reply

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
        if self._wire is not None:
            self._wire.close()
            self._wire = None


def kept(miner: Any) -> KeptChannel | None:
    """The kept channel installed on this miner, if any (:func:`keep`)."""
    owner = getattr(getattr(getattr(miner, "web", None), "send_command", None), "__self__", None)
    return owner if isinstance(owner, KeptChannel) else None


def keep(miner: Any, old: KeptChannel | None) -> KeptChannel | None:
    """A kept channel installed on a Braiins OS+ miner whose web API is pyasic's gRPC one
    (``BOSerWebAPI``): ``old`` where it already serves this miner object; None for any
    other (BOSminer's legacy web API), which stays pyasic's."""
    from pyasic.web.braiins_os.boser import BOSerWebAPI

    web = getattr(miner, "web", None)
    if old is not None and old.web is web:
        return old
    if old is not None:
        old.close()
    if type(web) is not BOSerWebAPI:
        return None
    kept = KeptChannel(web)
    kept.install()
    return kept


# -- the tuner's power-target range: GetConstraints, once --------------------------------


def range_w(data: bytes) -> tuple[float, float] | None:
    """``GetConstraintsResponse.tuner_constraints.power_target`` {``min``, ``max``}
    ``.watt`` (field numbers of pyasic's generated messages); None where either is left
    off the wire or min is above max. ValueError for bytes that are no message."""
    lo, hi = value_at(data, 1, 1, 2, 1), value_at(data, 1, 1, 3, 1)
    if not isinstance(lo, int) or not isinstance(hi, int) or not 0 < lo <= hi:
        return None
    return float(lo), float(hi)


async def tuner_range(
    device_id: str, kept: KeptChannel, timeout_s: float
) -> tuple[float, float] | None:
    """The tuner's power-target range (W), asked once per kept channel; never raises.
    None where the firmware has none to give (UNIMPLEMENTED, or an answer naming none:
    logged once per miner, as information) or did not answer for a passing reason
    (logged; asked again :data:`RANGE_RETRY_S` later)."""
    from grpclib import GRPCError, Status

    if kept.range_settled or (now := time.monotonic()) - kept.range_asked_at < RANGE_RETRY_S:
        return kept.range_w
    kept.range_asked_at = now

    async def ask() -> bytes | None:
        try:
            return await kept._unary(CONSTRAINTS, _EMPTY)
        except GRPCError as e:
            if e.status is not Status.UNIMPLEMENTED:
                raise
            return None

    try:
        data = await contain(device_id, "GetConstraints", ask(), timeout_s)
        got = None if data is None else range_w(data)
    except (AdapterError, ValueError) as e:
        log.warning("%s: the tuner's power range is not known yet: %s", device_id, e)
        return None
    kept.range_w, kept.range_settled = got, True
    if got is None and device_id not in _NO_RANGE_SAID:
        _NO_RANGE_SAID.add(device_id)
        why = "is not served (UNIMPLEMENTED)" if data is None else "names no power range"
        log.info("%s: GetConstraints %s: no limit known on its power target", device_id, why)
    return got


# -- a reading: only what Telemetry uses, the answers read at the wire --------------------


async def read(device_id: str, miner: Any, kept: KeptChannel, at: float) -> Telemetry:
    """One reading: the three gRPC calls and the one API call at once (module docstring).

    A refused connection or a lost channel on every call is unreachable; an answer that is
    not the message it should be is unreadable, named; a part that fails otherwise is left
    out (as pyasic leaves it), and without power and hashrate there is no reading."""
    from grpclib import GRPCError, Status
    from grpclib.exceptions import StreamTerminatedError
    from pyasic.errors import APIError

    failed: list[str] = []
    gone: list[str] = []

    async def grpc(path: str) -> bytes | None:
        name = path.rsplit("/", 1)[1]
        try:
            return await kept._unary(path, _EMPTY)
        except GRPCError as e:
            words = f"{name}: {e.status.name} {e.message or ''}".rstrip()
            (gone if e.status is Status.UNAVAILABLE else failed).append(words)
        except StreamTerminatedError as e:  # grpclib's words ("Connection lost: ...")
            gone.append(f"{name}: {e}")
        except OSError as e:  # no connection to the gRPC port: which one, and why
            gone.append(f"{name} (gRPC at {kept.web.ip}:{kept.web.port}): {describe(e)}")
        return None

    async def rpc() -> dict[str, Any]:
        try:
            # a part the miner refuses (its STATUS "E") loses that part, not the others
            got = await miner.rpc.send_command(RPC_READING, ignore_errors=True, allow_warning=False)
        except (APIError, OSError, ValueError) as e:
            failed.append(f"{RPC_READING}: {describe(e)}")
            return {}
        return got if isinstance(got, dict) else {}

    stats, boards, mode, api = await asyncio.gather(
        grpc(STATS), grpc(HASHBOARDS), grpc(MODE), rpc()
    )
    if len(gone) == 3 and not api:
        raise DeviceUnreachable(device_id, f"telemetry: {gone[0]}")
    power = target = None
    temps: tuple[float, ...] = ()
    try:
        name = "GetMinerStats"
        power = None if stats is None else power_w(stats)
        name = "GetHashboards"
        temps = () if boards is None else chip_temps_c(boards)
        name = "GetActivePerformanceMode"
        target = None if mode is None else target_w(mode)
    except ValueError as e:
        raise BadReply(device_id, f"telemetry: {name} answered no message: {e}") from None
    ths = mining = None
    with contextlib.suppress(LookupError, TypeError, ValueError):
        ths = float(api["summary"][0]["SUMMARY"][0]["MHS 1m"]) / 1e6
    if ths is not None and not (math.isfinite(ths) and ths >= 0):
        ths = None
    with contextlib.suppress(LookupError, TypeError):
        mining = any(d["MHS 5s"] > 0 for d in api["devs"][0]["DEVS"])
    errors: tuple[str, ...] = ()
    with contextlib.suppress(LookupError, TypeError):
        tuner = api["tunerstatus"][0]
        found = await miner._get_errors(rpc_tunerstatus=tuner)  # pyasic's own words
        errors = tuple(str(getattr(e, "error_message", e)) for e in found)
    if power is None and ths is None:
        why = "; ".join(gone + failed) or f"no power, no hashrate ({str(api)[:120]})"
        raise BadReply(device_id, f"telemetry: {why}")
    return Telemetry(
        device_id=device_id,
        at=at,
        state=asic_state(power, ths, None, mining),
        power_w=power,
        target_w=target,
        hashrate_ths=ths,
        temperatures_c=temps,
        errors=errors,
    )
