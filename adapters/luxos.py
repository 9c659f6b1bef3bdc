"""LuxOS calls that the adapter makes its own way, over :mod:`adapters.luxos_wire`.

pyasic's RPC object of the miner still names it (its address and port) and holds its
session (``session_token``, which pyasic's own calls would use too); every call goes out
with pyasic's framing and is checked as pyasic checks it, with about a third less CPU.

The profile change (with ATM around it) is :mod:`adapters.luxos_atm`'s.
``renew_session``: LuxOS ends a session unused for about a minute
(docs.luxor.tech, "Sessions"), and pyasic only notices when a command fails; it keeps one
session at a time and refuses ``logon`` while it is active (Code 402, "Another session is
active", as Luxor's client luxos-tooling handles it), where pyasic adopts the active
session whatever its age. ``renewal_due``: when a reading renews its miner's session, on a
schedule of the miner's own so that a fleet's renewals are spread over its sweeps.
``curtail``: sleep and wake, where pyasic's ``stop_mining`` / ``resume_mining`` cannot tell a
miner not reached from one that refused or obeyed: its RPC answers a connection it could not
open with ``{}`` (``BaseMinerRPCAPI._send_bytes``), which with a session reads as success and
without one makes its ``auth`` raise KeyError, read as a refusal (pyasic 0.x, ``LUXMiner``).
A reply read here in no usable shape (a ``logon`` without ``SESSION[0].SessionID``, a
``profileset`` without ``PROFILE[0].Profile``, a ``curtail`` whose STATUS is no list saying
S, one that is no JSON) is a BadReply naming the command and what was expected; none at
all (closed unanswered) is unreachable; only an error STATUS is the firmware's refusal.
Whatever uses or replaces a miner's session (a command, a renewal) holds its
:func:`session_lock`: a renewal's ``logoff`` ends the session a command sent meanwhile would
carry ("Invalid session id", a failed first attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from adapters import luxos_wire
from adapters.base import AdapterError, BadReply, ControlRejected, DeviceUnreachable, contain
from adapters.luxos_wire import NoReply, Refused, Unparsable

T = TypeVar("T")

#: Watts -> profile name, as LuxOS's ``profiles`` lists them, and the watts of the one chosen.
Profiles = tuple[dict[float, str], float]

#: Each miner's session lock (per pyasic RPC object), with the event loop it belongs to.
_SESSION_LOCKS: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, asyncio.Lock]]
_SESSION_LOCKS = weakref.WeakKeyDictionary()


def session_lock(rpc: Any) -> asyncio.Lock:
    """The lock that keeps a miner's session uses apart from its renewal (one per miner and
    event loop: a lock waited on in one loop cannot be used in another)."""
    loop = asyncio.get_running_loop()
    held = _SESSION_LOCKS.get(rpc)
    if held is None or held[0] is not loop:
        held = _SESSION_LOCKS[rpc] = (loop, asyncio.Lock())
    return held[1]


async def ask(rpc: Any, command: str, *args: str) -> Any:
    """One command to the miner of pyasic's ``rpc`` (its address and session), over
    :mod:`adapters.luxos_wire` (pyasic's framing, decode and status checks, less CPU). A
    miner not reached raises ConnectionError or OSError (retryable); an error STATUS or a
    reply that is no JSON, LuxosError (where pyasic raised its APIError)."""
    return await luxos_wire.ask(str(rpc.ip), int(rpc.port), command, *args)


async def _logon(device_id: str, what: str, rpc: Any) -> None:
    """A session of our own, or the active one adopted (LuxOS refuses a logon beside it,
    Code 402); not reaching the miner raises ConnectionError, a reply without a session id
    in its place BadReply (:func:`session_id`), worded as part of ``what``."""
    rpc.session_token = None
    command = "logon"
    try:
        reply = await ask(rpc, command)
    except Refused:  # refused (402): adopt what is active
        command = "session"
        reply = await ask(rpc, command)
    rpc.session_token = session_id(device_id, f"{what}: the {command} reply", reply)


def session_id(device_id: str, what: str, reply: Any) -> str | None:
    """The ``SESSION[0].SessionID`` of a ``logon`` or ``session`` reply (docs.luxor.tech:
    text; "" when LuxOS gives none): the id, or None for none. A reply without it there,
    or with something other than text or a number, raises BadReply: ``what`` names the
    reply (``curtail sleep: the logon reply``)."""
    try:
        sid = reply["SESSION"][0]["SessionID"]
    except (KeyError, IndexError, TypeError):
        sid = _NONE
    if sid is None or (isinstance(sid, str | int) and not isinstance(sid, bool)):
        return str(sid) if sid else None
    shown = str(reply)[:120]
    raise BadReply(
        device_id, f"{what} has no SESSION[0].SessionID (the session id, as text): {shown}"
    )


#: No field where one was expected (None is LuxOS's null: no session).
_NONE = object()


async def _in_session(
    device_id: str, what: str, rpc: Any, send: Callable[[str], Awaitable[T]]
) -> T:
    """``send(session id)`` within the miner's session lock, logging on first when no
    session is held. A refusal that names the session (it ended under us: another client's
    ``logoff`` of a session we adopted, a reboot, LuxOS's minute) is sent once more after a
    new logon: the miner did nothing on a command whose session it refused."""
    async with session_lock(rpc):
        if rpc.session_token is None:
            await _logon(device_id, what, rpc)
        try:
            return await send(_held(device_id, rpc))
        except Refused as exc:
            if "session" not in str(exc).lower():
                raise
        await _logon(device_id, what, rpc)
        return await send(_held(device_id, rpc))


def _held(device_id: str, rpc: Any) -> str:
    """The session id a logon left, or ControlRejected when LuxOS gave none."""
    if not rpc.session_token:
        raise ControlRejected(device_id, "logon: LuxOS gave no session")
    return str(rpc.session_token)


async def curtail(device_id: str, rpc: Any, action: str, timeout_s: float) -> None:
    """``curtail sleep`` / ``curtail wakeup``, logging on first when no session is held.
    A miner not reached raises DeviceUnreachable (or DeviceTimeout); one that answers an
    error, ControlRejected; one whose answer cannot be read (no JSON, a logon without its
    session id, a reply not in LuxOS's shape of a success: :func:`_said_done`), BadReply."""

    what = f"curtail {action}"

    async def go() -> Any:
        with _refused_or_unreadable(device_id, what):
            return await _in_session(
                device_id, what, rpc, lambda sid: ask(rpc, "curtail", sid, action)
            )

    reply = await contain(device_id, what, go(), timeout_s)
    if not _said_done(reply, "CURTAIL"):
        shown = str(reply)[:120]
        raise BadReply(
            device_id,
            f"{what}: the reply is not LuxOS's success (a STATUS list saying S, and the "
            f"CURTAIL part, where there is one, a list): {shown}",
        )


def _said_done(reply: Any, part: str) -> bool:
    """Whether a command's reply says success in LuxOS's shape (docs.luxor.tech, each
    command's page): ``STATUS`` a list whose first entry's ``STATUS`` is ``S`` or ``I``,
    and the command's own ``part``, where the reply has one, a list. pyasic's check also
    passes a ``STATUS`` given as text (``{"STATUS": "S", ...}``), which LuxOS never sends:
    a miner answering so (garbled) may have done nothing (field24)."""
    status = reply.get("STATUS") if isinstance(reply, dict) else None
    if not isinstance(status, list) or not status or not isinstance(status[0], dict):
        return False
    if status[0].get("STATUS") not in ("S", "I"):
        return False
    return part not in reply or isinstance(reply[part], list)


@contextlib.contextmanager
def _refused_or_unreadable(device_id: str, what: str) -> Iterator[None]:
    """A LuxOS error within a command, as the adapter's: an error STATUS is the firmware's
    refusal (ControlRejected); a reply that is no JSON is unreadable (BadReply), and none
    at all (the connection closed unanswered) unreachable, not refusals: the miner may have
    done the command."""
    try:
        yield
    except Refused as exc:
        raise ControlRejected(device_id, f"{what}: {exc}") from None
    except NoReply as exc:
        raise DeviceUnreachable(device_id, f"{what}: {exc}") from None
    except Unparsable as exc:
        raise BadReply(device_id, f"{what}: {exc}") from None


async def profile_for(device_id: str, rpc: Any, target_w: float, timeout_s: float) -> Profiles:
    """The profiles read again, and the one a target matching none of those known at
    connect sets: the highest at or below it, as pyasic's ``set_power_limit`` chooses (it
    reads them with the configuration each time). LuxOS sets power by profile
    (``profileset``, docs.luxor.tech), sent with the profile's name as pyasic sends it.
    Not reaching the miner raises DeviceUnreachable, where pyasic's path read its ``{}`` as
    a refusal or an unparsable reply; no profile at or below the target, ControlRejected
    naming those listed."""
    reply = await contain(device_id, "profiles", ask(rpc, "profiles"), timeout_s)
    profiles = _profiles(device_id, reply)
    below = [w for w in profiles if w <= target_w + 0.5]
    if not below:
        listed = ", ".join(f"{n} ({w:g} W)" for w, n in sorted(profiles.items())) or "none"
        raise ControlRejected(
            device_id,
            f"set power target: no profile at or below {target_w:g} W; LuxOS lists {listed}",
        )
    return profiles, max(below)


def _profiles(device_id: str, reply: Any) -> dict[float, str]:
    try:
        return {float(p["Watts"]): str(p["Profile Name"]) for p in reply["PROFILES"]}
    except (KeyError, TypeError, ValueError):
        raise BadReply(device_id, "profiles reply has no PROFILES[].Watts / Profile Name") from None


#: LuxOS ends a session unused for about a minute (docs.luxor.tech, "Sessions").
SESSION_TTL_S = 60.0
#: A session idle this long is not trusted: a command logs on first (one more round trip,
#: never a failed attempt); the margin covers the "about" and the command's own latency.
SESSION_SAFE_S = 45.0


def renewal_due(
    device_id: str, used_at: float, now: float, renew_s: float, gap_s: float = 0.0
) -> bool:
    """Whether a reading at ``now`` asks for the renewal of a session opened at ``used_at``
    (monotonic s; the fleet's upkeep makes it, :mod:`adapters.fleet_upkeep`).

    Each miner renews once every ``renew_s``, at a phase of its own within that period
    (drawn from its id), rather than whenever its session has been idle ``renew_s``: a fleet
    connected at once would otherwise renew every session in the same sweep, each renewal a
    logoff and a logon, and keep doing so every ``renew_s`` (7,500 at once at the example
    site). On the schedule, a sweep every P seconds renews about P / renew_s of the
    sessions, and none waits longer than ``renew_s`` plus one sweep, as before. The first
    renewal after a connect may come early (at the miner's first turn).
    0 renews on every reading; infinity never.

    Never when this miner's readings come ``gap_s`` >= SESSION_SAFE_S apart (a sweep that
    long): the renewed session would be stale before the next reading, so the renewal (a
    logoff and a logon, tripling the reading's round trips and lengthening the sweep that
    caused it) buys little; the command that finds the session stale logs on instead.
    """
    if gap_s >= SESSION_SAFE_S:
        return False
    if renew_s <= 0:
        return True
    if renew_s == float("inf"):
        return False
    phase_s = zlib.crc32(device_id.encode()) / 2**32 * renew_s
    turn = now - (now - phase_s) % renew_s  # the miner's latest turn, at or before now
    return used_at < turn


async def renew_session(device_id: str, rpc: Any, timeout_s: float) -> None:
    """Open a session with its whole minute ahead, so that the next command finds one (an
    expired one would fail the command once). LuxOS refuses a logon while a session is
    active, so the current one is ended first: ours, or one another client left (``session``
    names it), of an age nobody here knows. A client that logs on in between wins; its
    session is adopted, as pyasic does."""

    async def go() -> None:
        async with session_lock(rpc):
            await _renew(device_id, rpc)
        if not rpc.session_token:
            raise ControlRejected(device_id, "logon: LuxOS gave no session")

    await contain(device_id, "session renewal", go(), timeout_s)


async def _renew(device_id: str, rpc: Any) -> None:
    """Within the session lock: the current session ended, a new one opened."""
    sid = rpc.session_token
    if sid is None:
        with contextlib.suppress(Exception):
            sid = session_id(device_id, "the session reply", await ask(rpc, "session"))
    if sid is not None:
        rpc.session_token = sid
        # Uses the session, ending it; one already expired answers an error, and there
        # is nothing to end.
        with contextlib.suppress(Exception):
            await ask(rpc, "logoff", sid)
    await _logon(device_id, "session renewal", rpc)


async def setup(device_id: str, rpc: Any, timeout_s: float) -> tuple[dict[float, str], bool]:
    """The profiles (watts -> name; the presets a power target is rounded to) and whether
    ATM is on at the connect (unknown reads as on); each profile change reads it again
    (:func:`adapters.luxos_atm.set_profile`): it may be turned on or off at any time."""
    # Not pyasic's ``profiles``: its ``{}`` for a miner not reached would read as unreadable.
    reply = await contain(device_id, "profiles", ask(rpc, "profiles"), timeout_s)
    profiles = _profiles(device_id, reply)
    try:
        atm = await contain(device_id, "atm", ask(rpc, "atm"), timeout_s)
        return profiles, bool(atm["ATM"][0]["Enabled"])
    except (AdapterError, KeyError, IndexError, TypeError):
        return profiles, True
