"""pyasic's own writes, for the families that have no path of their own, with "no answer"
told apart from success and from the firmware's refusal.

Every family with a path of its own (LuxOS, Whatsminer v2 and v3, Braiins OS+ over a kept
gRPC channel, stock Antminer, VNish) takes its verdict from the firmware's answer. The
rest (Family.OTHER, and Braiins OS+ on pyasic's pre-gRPC ``BOSMiner`` class) go through
pyasic's ``stop_mining`` / ``resume_mining``, whose True/False the adapter can only take
as they come. What pyasic 0.79 does underneath, from its source:

- ``rpc/base.py`` ``BaseMinerRPCAPI._send_bytes`` answers a connection it could not open,
  or a read that timed out, with ``b"{}"``, and ``misc.validate_command_output`` passes
  ``{}``: a write to a miner gone from the network came back as an answer. A connection
  closed without an answer, or an answer that is not JSON even after pyasic's repairs,
  raises ``APIError``, which the backends' ``stop_mining`` (``avalonminer.py``,
  ``braiins_os.py`` ``BOSMiner``, ``btminer.py``) turn into False: a refusal.
- ``miners/base.py`` ``MinerProtocol.stop_mining`` / ``resume_mining`` return False
  without sending anything, and so does ``UnknownMiner``'s; the classes that do not
  override them (Innosilicon, Iceriver, Hammer, Elphapex, Bitaxe...) cannot be commanded
  through pyasic at all.

Inside a write (:func:`strict`) the RPC client of the miner (:func:`install`) raises
instead: :class:`NoAnswer` (a ``ConnectionError``: unreachable) for no connection or a
connection closed without an answer, :class:`Unparsed` (unreadable) for an answer that is
not JSON. Readings, at the same time on the same miner, keep pyasic's behaviour: the
switch is a context variable, per task. A write pyasic cannot send at all is
:class:`~adapters.base.Unsupported` (:func:`unsupported`).

ePIC's web API has a path of its own (:mod:`adapters.epic`). The other families' web
APIs (Auradine, Goldshell, Marathon, Hiveon...) are pyasic's as they are: several of
their writes return True whatever the miner answered (docs/hardware.md, "Write
verdicts"); for them only the read-back says done.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: True inside a write whose RPC answers must be real ones (this task and those it starts).
_STRICT: contextvars.ContextVar[bool] = contextvars.ContextVar("rpccheck_strict", default=False)


class NoAnswer(ConnectionError):
    """No connection, or the miner closed it without an answer."""


class Unparsed(ValueError):
    """The miner answered something that is not JSON, even after pyasic's repairs."""


@contextmanager
def strict() -> Iterator[None]:
    """Make the RPC calls made inside raise :class:`NoAnswer` / :class:`Unparsed`."""
    token = _STRICT.set(True)
    try:
        yield
    finally:
        _STRICT.reset(token)


def install(miner: Any) -> None:
    """Wrap the ``_send_bytes`` of ``miner.rpc`` (pyasic's ``BaseMinerRPCAPI``) once, so
    that inside :func:`strict` it sends the same bytes and says when nothing answered."""
    from pyasic.rpc.base import BaseMinerRPCAPI

    rpc = getattr(miner, "rpc", None)
    if not isinstance(rpc, BaseMinerRPCAPI) or getattr(rpc, "_rpccheck", False):
        return
    loose = rpc._send_bytes

    async def send_bytes(data: bytes, *, port: int | None = None, timeout: int = 100) -> bytes:
        if not _STRICT.get():
            return bytes(await loose(data, port=port, timeout=timeout))
        return await _send_checked(rpc, data, rpc.port if port is None else port)

    rpc._send_bytes = send_bytes
    rpc._rpccheck = True


async def _send_checked(rpc: Any, data: bytes, port: int) -> bytes:
    """pyasic's ``_send_bytes`` (connect, write, read to the end), failures raised; the
    caller's timeout (``adapters.base.contain``) bounds it."""
    from pyasic.errors import APIError

    where = f"{rpc.ip}:{port}"
    try:
        reader, writer = await asyncio.open_connection(str(rpc.ip), port)
    except OSError as exc:
        raise NoAnswer(f"no connection to {where}: {exc}") from None
    try:
        writer.write(data)
        await writer.drain()
        got = await reader.read()
    except OSError as exc:
        raise NoAnswer(f"{where} dropped the connection: {exc}") from None
    finally:
        writer.close()
    if not got.strip(b"\x00 \t\r\n"):
        raise NoAnswer(f"{where} closed the connection without an answer")
    try:
        rpc._load_api_data(got)
    except APIError:
        raise Unparsed(f"{where} answered something that is not JSON: {got[:60]!r}") from None
    return bytes(got)


def unsupported(miner: Any, fn: str) -> str:
    """Why pyasic cannot send ``fn`` to this miner ("" when it can): its class keeps
    pyasic's base ``fn``, or is ``UnknownMiner``; both return False, sending nothing."""
    from pyasic.miners.backends.unknown import UnknownMiner
    from pyasic.miners.base import MinerProtocol

    cls = type(miner)
    base = getattr(MinerProtocol, fn, None)
    if isinstance(miner, UnknownMiner) or (base is not None and getattr(cls, fn, None) is base):
        return f"pyasic 0.79 has no {fn} for {cls.__name__} (it answers False, sending nothing)"
    return ""
