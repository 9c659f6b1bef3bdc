"""Braiins OS+ over one kept gRPC channel per miner.

pyasic's ``BOSerWebAPI.send_command`` opens a new grpclib ``Channel`` for every call: a TCP
connection, HTTP/2's preface and SETTINGS exchange and a fresh HPACK table each time. In a
profile of the fleet benchmark's Braiins commands (``benchmarks/fleet_control.py
--profile``) that setup and its framing were most of the controller's CPU per command
(docs/performance.md, "Fleet control"). A grpclib ``Channel`` connects on first use and
again after its connection is lost (``Channel.__connect__``), so one is kept per miner and
the calls are otherwise pyasic's: the same stub, the same token renewal on
``UNAUTHENTICATED``, the same ``APIError`` for a failed call.
"""

from __future__ import annotations

from typing import Any


class KeptChannel:
    """pyasic's ``BOSerWebAPI.send_command`` over one kept channel; :meth:`install` routes
    the miner's gRPC calls (commands and readings) through it."""

    def __init__(self, web: Any) -> None:
        self.web = web  # pyasic's BOSerWebAPI: ip, port, auth(), _get_auth()
        self._channel: Any = None
        self._stub: Any = None

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
        from grpclib.client import Channel
        from pyasic.errors import APIError
        from pyasic.web.braiins_os.boser import BOSMinerGRPCStub

        message = parameters["message"]
        metadata: list[tuple[str, str]] = []
        if privileged:
            metadata.append(("authorization", await self.web.auth()))
        if self._channel is None:  # made in the running loop, which it keeps
            self._channel = Channel(self.web.ip, self.web.port)
            self._stub = BOSMinerGRPCStub(self._channel)
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
