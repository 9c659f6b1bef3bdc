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
send them) go over the same channel without pyasic's message handling. A profile of the
fleet benchmark put about a third of a write's CPU in betterproto: building the request
message, serialising it, parsing the answer and turning it into pyasic's dict
(``to_pydict``), of which a pause or a resume uses nothing and a power target one number.
Here a request's bytes are made once (an empty message; a power target's once per
target) and the answer's bytes are read only for that number. pyasic's ``stop_mining``
also answers False for any ``APIError``, a refused connection as much as the firmware's
refusal, and the adapter took both for a refusal; here the gRPC status decides
(``UNAVAILABLE`` and a lost connection are unreachable, ``DEADLINE_EXCEEDED`` a timeout,
any other status the firmware's refusal in its words).
"""

from __future__ import annotations

from typing import Any

from adapters.base import ControlRejected, DeviceTimeout, DeviceUnreachable, contain

_PKG = "/braiins.bos.v1."
#: pyasic's control calls as the gRPC methods it sends them to (``web/braiins_os/boser.py``).
WRITES = {
    "stop_mining": _PKG + "ActionsService/PauseMining",
    "resume_mining": _PKG + "ActionsService/ResumeMining",
    "set_power_limit": _PKG + "PerformanceService/SetPowerTarget",
}


class _Raw:
    """A message as bytes: grpclib's ``ProtoCodec`` asks a message type only for
    ``SerializeToString`` and ``FromString``, so a request made once is sent as it is and
    an answer is left unparsed until something in it is wanted."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf name grpclib calls
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> _Raw:
        return cls(data)


_EMPTY = _Raw(b"")  # PauseMiningRequest and ResumeMiningRequest have no fields


class KeptChannel:
    """pyasic's ``BOSerWebAPI.send_command`` over one kept channel; :meth:`install` routes
    the miner's gRPC calls (commands and readings) through it."""

    def __init__(self, web: Any) -> None:
        self.web = web  # pyasic's BOSerWebAPI: ip, port, auth(), _get_auth()
        self._channel: Any = None
        self._stub: Any = None
        self._targets: dict[int, _Raw] = {}  # SetPowerTargetRequest per target (W)

    def _open(self) -> Any:
        from grpclib.client import Channel
        from pyasic.web.braiins_os.boser import BOSMinerGRPCStub

        if self._channel is None:  # made in the running loop, which it keeps
            self._channel = Channel(self.web.ip, self.web.port)
            self._stub = BOSMinerGRPCStub(self._channel)
        return self._channel

    def _request(self, fn: str, args: tuple[Any, ...]) -> _Raw:
        if fn != "set_power_limit":
            return _EMPTY
        watts = int(args[0])
        raw = self._targets.get(watts)
        if raw is None:
            from pyasic.web.braiins_os.proto.braiins.bos.v1 import (
                Power,
                SaveAction,
                SetPowerTargetRequest,
            )

            msg = SetPowerTargetRequest(  # as pyasic's set_power_limit sends it
                power_target=Power(watt=watts), save_action=SaveAction.SAVE_AND_FORCE_APPLY
            )
            raw = self._targets[watts] = _Raw(bytes(msg))
        return raw

    async def _unary(self, path: str, request: _Raw) -> bytes:
        """One call with the session token, logging on again once if it has expired."""
        from grpclib import GRPCError, Status
        from grpclib.const import Cardinality

        for again in (False, True):
            if again:
                await self.web._get_auth()  # the token expired: a new one, once
            metadata = [("authorization", await self.web.auth())]
            try:
                async with self._open().request(
                    path, Cardinality.UNARY_UNARY, _Raw, _Raw, metadata=metadata
                ) as stream:
                    await stream.send_message(request, end=True)
                    reply = await stream.recv_message()
            except GRPCError as e:
                if again or e.status != Status.UNAUTHENTICATED:
                    raise
                continue
            return b"" if reply is None else reply.data
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
            from pyasic.web.braiins_os.proto.braiins.bos.v1 import SetPowerTargetResponse

            got = SetPowerTargetResponse().parse(data).power_target.watt
            if got != int(args[0]):  # what pyasic's set_power_limit asks of the answer
                raise ControlRejected(device_id, f"{what}: the firmware set {got} W")

    async def _checked(self, device_id: str, what: str, path: str, request: _Raw) -> bytes:
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
