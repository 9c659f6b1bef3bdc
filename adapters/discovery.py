"""Which miner answers at each address: pyasic's discovery, remembered and re-checked cheaply.

pyasic's discovery (``pyasic.get_miner``) probes an address over HTTP 80 and 443 and the RPC
port 4028 (``version`` and ``devdetails``), builds an HTTP client for it, then asks the
model: five to seven connections per miner. On the 2-core development host 7,500 simulated
LuxOS miners took about 180 s to connect, most of it discovery. A miner whose ``version``
answer names its firmware (:data:`NAMED_BY_VERSION`) is now identified from that answer and
pyasic's own model step, without the web probe (the class pyasic would choose). What
discovery found is kept as
plain data (:class:`MinerIdentity`): the pyasic class it chose, the identity the adapter
reported, and a fingerprint of the miner's answer to ``version`` (pyasic's own socket
classification of that answer and its ``VERSION`` table).

A process that has an address's identity (:class:`IdentityBook`, filled and persisted by the
service layer: the daemon's state file) builds pyasic's miner object from it after one
``version`` call, sent exactly as pyasic's discovery sends it, whose fingerprint must be the
one recorded. A device that answers as something else (other firmware, another model, a
firmware upgrade), or does not answer that call, is discovered afresh and its new identity
recorded. A miner whose ``version`` answer cannot be fingerprinted is not cached: it is
discovered on every start, as before.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from adapters.base import DeviceUnreachable, contain

__all__ = ["IdentityBook", "MinerIdentity", "discover", "fingerprint"]


@dataclass(frozen=True)
class MinerIdentity:
    """What discovery found at one address; plain data, stored as JSON."""

    address: str
    miner_class: str  # pyasic's class, as its factory's table names it ("LUX_OS/S19J PRO")
    check: str  # fingerprint of the miner's ``version`` answer (:func:`fingerprint`)
    make: str = ""
    model: str = ""
    firmware: str = ""
    firmware_version: str = ""
    family: str = ""  # models.firmware.Family value
    found_at: float = 0.0  # unix seconds of the discovery

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> MinerIdentity:
        """Raises ValueError naming the field for a document this code cannot use."""
        for key in ("address", "miner_class", "check"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ValueError(f"miner identity: {key} missing or not a string")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass
class IdentityBook:
    """The identities known to this process, by address, and those found or changed since
    :meth:`changes` was last called (for the service layer to persist)."""

    known: dict[str, MinerIdentity] = field(default_factory=dict)
    #: full discoveries made (a cached identity re-checked is not one)
    discoveries: int = 0
    #: cached identities the device still matched
    reused: int = 0
    _changed: dict[str, MinerIdentity | None] = field(default_factory=dict, init=False)

    @classmethod
    def from_docs(cls, docs: Mapping[str, Mapping[str, Any]]) -> IdentityBook:
        """From stored documents; one this code cannot read is skipped (rediscovered)."""
        book = cls()
        for address, doc in docs.items():
            try:
                book.known[address] = MinerIdentity.from_doc(doc)
            except (ValueError, TypeError):
                continue
        return book

    def get(self, address: str) -> MinerIdentity | None:
        return self.known.get(address)

    def put(self, ident: MinerIdentity) -> None:
        if self.known.get(ident.address) != ident:
            self.known[ident.address] = ident
            self._changed[ident.address] = ident

    def forget(self, address: str) -> None:
        if self.known.pop(address, None) is not None:
            self._changed[address] = None

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """Documents to store (None: to delete) since the last call; clears them."""
        out = {a: (i.to_doc() if i is not None else None) for a, i in self._changed.items()}
        self._changed.clear()
        return out


@functools.cache
def _classes() -> tuple[dict[str, type], dict[type, str], dict[str, str]]:
    """pyasic's miner classes by "TYPE/MODEL" (its factory's table: ``MinerTypes`` name and
    model key, "" for the family's unknown model); that name by class, and by class name."""
    from pyasic.miners.factory import MINER_CLASSES

    by_name: dict[str, type] = {}
    by_class: dict[type, str] = {}
    by_class_name: dict[str, str] = {}
    for kind, models in MINER_CLASSES.items():
        for model, cls in models.items():
            name = f"{kind.name}/{model or ''}"
            by_name[name] = cls
            by_class.setdefault(cls, name)
            by_class_name.setdefault(cls.__name__, name)
    return by_name, by_class, by_class_name


def class_name(miner: Any) -> str:
    """The factory's name of ``miner``'s class ("": none that can be built again)."""
    from pyasic.miners.backends.btminer import BTMinerV2

    by_class, by_class_name = _classes()[1:]
    if type(miner) in by_class:
        return by_class[type(miner)]
    # pyasic's BTMiner makes a class per miner, on API v2 or v3 by the firmware version
    # given to it; the table's class built without a version is the v2 one.
    if isinstance(miner, BTMinerV2):
        return by_class_name.get(type(miner).__name__, "")
    return ""


def fingerprint(reply_text: str | None) -> str:
    """The miner's answer to ``version`` reduced to what identifies it: pyasic's socket
    classification of the text and the ``VERSION`` table (firmware and API versions, model
    type). "" when it cannot be fingerprinted."""
    if not reply_text:
        return ""
    from pyasic.miners.factory import MinerFactory

    kind = MinerFactory._parse_socket_type(reply_text)
    try:
        doc = json.loads(reply_text.rstrip("\x00"))
        table = doc["VERSION"][0]
    except (ValueError, LookupError, TypeError, AttributeError):
        return ""
    if not isinstance(table, dict):
        return ""
    return f"{kind.name if kind is not None else '-'}|{json.dumps(table, sort_keys=True)}"


async def version_fingerprint(address: str) -> str:
    """One ``version`` call on port 4028, as pyasic's discovery sends it."""
    from pyasic.miners.factory import MinerFactory

    return fingerprint(await MinerFactory._socket_ping(address, "version"))


@dataclass
class Found:
    miner: Any
    check: str  # the fingerprint seen now ("" when none)
    cached: MinerIdentity | None  # the identity the miner was built from, if any


async def discover(
    device_id: str, address: str, timeout_s: float, book: IdentityBook | None
) -> Found:
    """pyasic's miner object for ``address``: from the book's identity when the device
    still answers ``version`` as recorded, by pyasic's discovery otherwise. Raises
    DeviceUnreachable when no miner is identified (AdapterError on a timeout)."""
    cached = book.get(address) if book is not None else None
    check = ""
    if cached is not None:
        cls = _classes()[0].get(cached.miner_class)
        check = await contain(device_id, "version", version_fingerprint(address), timeout_s)
        if cls is not None and check and check == cached.check:
            if book is not None:
                book.reused += 1
            return Found(cls(address), check, cached)
    if book is not None:
        book.discoveries += 1
    _identification_waits(timeout_s)
    miner, seen = await contain(device_id, "discovery", _identify(address), timeout_s * 3)
    if miner is None:
        why = await _why_unidentified(address, min(timeout_s, 2.0))
        raise DeviceUnreachable(
            device_id,
            f"no miner identified at {address} (pyasic tried HTTP 80/443 and RPC 4028): {why}",
        )
    check = seen or check
    if book is not None and not check:
        try:
            check = await contain(device_id, "version", version_fingerprint(address), timeout_s)
        except Exception:  # only the cache misses it: rediscovered on the next start
            check = ""
    return Found(miner, check, None)


#: Firmware whose answer to ``version`` names it (pyasic's ``_parse_socket_type``: "LUXMINER",
#: "BOSMINER"/"BOSER", "BTMINER"/"BITMICRO", "VNISH"), and for which pyasic's web probe can
#: only find the same: its identification by ``version`` alone is the one pyasic's whole
#: discovery makes. Stock Antminer firmware is not here: an answer naming "Antminer" may
#: come from other firmware on Antminer hardware, which pyasic tells apart by the web page
#: (Marathon's, VNish's AnthillOS).
NAMED_BY_VERSION = ("LUX_OS", "BRAIINS_OS", "WHATSMINER", "VNISH")


#: How long the identification by ``version`` runs alone before pyasic's whole discovery
#: starts beside it: a miner that answers in time is asked nothing more, and one slow to
#: answer ``version``, or silent, or a dead address, is found (or not) about as soon as by
#: pyasic's discovery alone, whose web probe may still find it.
HEAD_START_S = 1.0


async def _identify(address: str) -> tuple[Any, str]:
    """(pyasic's miner object or None, the fingerprint of the miner's ``version`` answer or
    ""): by :func:`_by_version` where it names the firmware, else by ``pyasic.get_miner``,
    started once ``_by_version`` has said it cannot or HEAD_START_S has passed, whichever
    first; the first of the two to find a miner wins, the other is cancelled."""
    import pyasic

    first: asyncio.Future[tuple[Any, str]] = asyncio.ensure_future(_by_version(address))
    whole: asyncio.Future[Any] | None = None
    try:
        done, _ = await asyncio.wait({first}, timeout=HEAD_START_S)
        if not done:
            whole = asyncio.ensure_future(pyasic.get_miner(address))
            done, _ = await asyncio.wait({first, whole}, return_when=asyncio.FIRST_COMPLETED)
        if first in done:
            miner, seen = first.result()
            if miner is None:
                miner = await (whole if whole is not None else pyasic.get_miner(address))
            return miner, seen
        assert whole is not None  # only it can be done without the first
        return (whole.result(), "") if whole.result() is not None else await first
    finally:
        for task in (first, whole):
            if task is not None and not task.done():
                task.cancel()


async def _by_version(address: str) -> tuple[Any, str]:
    """pyasic's miner object for a miner whose ``version`` answer names its firmware (one of
    NAMED_BY_VERSION), or None for any other (pyasic's whole discovery then decides); with
    the fingerprint of the answer ("" for none), which the identity keeps either way.
    pyasic's own discovery probes HTTP 80 and 443 (a new HTTP client, TLS included) and RPC
    ``version`` and ``devdetails`` at once and keeps the first type found; for these
    families every probe finds the same type, so this asks ``version`` first, as pyasic
    sends it, and then pyasic's own model and version steps and its class table: the same
    class, without the web probe's client (about a third of the CPU per miner;
    docs/performance.md, "Discovery with an empty state file")."""
    from pyasic.miners.factory import MinerFactory, MinerTypes, miner_factory

    text = await MinerFactory._socket_ping(address, "version")
    kind = MinerFactory._parse_socket_type(text) if text else None
    if kind is None or kind.name not in NAMED_BY_VERSION:
        return None, fingerprint(text)
    model_of = {
        MinerTypes.LUX_OS: miner_factory.get_miner_model_luxos,
        MinerTypes.BRAIINS_OS: miner_factory.get_miner_model_braiins_os,
        MinerTypes.WHATSMINER: miner_factory.get_miner_model_whatsminer,
        MinerTypes.VNISH: miner_factory.get_miner_model_vnish,
    }[kind]
    model = await _step(model_of(address))
    version = None
    if kind is MinerTypes.WHATSMINER:
        version = await _step(miner_factory.get_miner_version_whatsminer(address))
    miner = miner_factory._select_miner_from_classes(
        address, miner_type=kind, miner_model=model, version=version
    )
    return miner, fingerprint(text)


async def _why_unidentified(address: str, timeout_s: float) -> str:
    """Why pyasic identified nothing at ``address``, in words: what a plain connection to
    its RPC port (4028) and web port (80) meets. pyasic's discovery keeps no cause, and an
    operator who typed an address wrong was told only that nothing was identified."""

    async def one(port: int) -> str | None:  # None: it accepts connections
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout_s)
        except TimeoutError:
            return f"port {port}: no answer within {timeout_s:g} s"
        except ConnectionRefusedError:
            return f"port {port}: connection refused"
        except OSError as exc:
            return f"port {port}: {exc.strerror or type(exc).__name__}"
        writer.close()
        return None

    rpc, web = await asyncio.gather(one(4028), one(80))
    if rpc is None or web is None:
        open_ = " and ".join(str(p) for p, r in ((4028, rpc), (80, web)) if r is None)
        return f"port {open_} accepts connections, but no firmware pyasic knows answered there"
    return f"{rpc}; {web}"


async def _step(step: Coroutine[Any, Any, str | None]) -> str | None:
    """One of pyasic's identification steps, given up as pyasic gives it up: None after its
    ``factory_get_timeout``."""
    from pyasic import settings

    try:
        return await asyncio.wait_for(step, timeout=settings.get("factory_get_timeout", 3))
    except TimeoutError:
        return None


def _identification_waits(timeout_s: float) -> None:
    """Let pyasic's identification wait ``timeout_s`` for each of its three steps (type,
    model, version). It gives up after its own ``factory_get_timeout`` (3 s) whatever the
    adapter's timeout, and a miner slower than that (a loaded host, a congested link) read
    as "no miner identified", unreachable. The setting is process-wide: raised, never
    lowered; ``contain`` still bounds each device by its own timeout."""
    from pyasic import settings

    wait_s = math.ceil(timeout_s)  # pyasic's setting is whole seconds
    if settings.get("factory_get_timeout", 3) < wait_s:
        settings.update("factory_get_timeout", wait_s)


def attach(adapters: Iterable[object], book: IdentityBook) -> int:
    """Give ``book`` to each adapter that discovers (has ``identities``) and has none yet;
    returns how many took it."""
    n = 0
    for a in adapters:
        if hasattr(a, "identities") and a.identities is None:
            a.identities = book
            n += 1
    return n


def log_in_as(miner: Any, username: str | None, password: str | None) -> None:
    """Set the credentials on pyasic's web and RPC clients of ``miner`` (None: its own)."""
    for api in (getattr(miner, "web", None), getattr(miner, "rpc", None)):
        if api is None:
            continue
        if username is not None and hasattr(api, "username"):
            api.username = username
        if password is not None and hasattr(api, "pwd"):
            api.pwd = password


def record(book: IdentityBook, found: Found, address: str, info: Any) -> None:
    """After a connect: record what a discovery found (an identity reused stays as it
    was); forget an address whose device can no longer be fingerprinted."""
    if found.cached is not None:
        return
    if not found.check or not class_name(found.miner):
        book.forget(address)
        return
    book.put(
        MinerIdentity(
            address=address,
            miner_class=class_name(found.miner),
            check=found.check,
            make=str(getattr(info, "make", "")),
            model=str(getattr(info, "model", "")),
            firmware=str(getattr(info, "firmware", "")),
            firmware_version=str(getattr(info, "firmware_version", "")),
            family=str(getattr(info, "family", "")),
            found_at=time.time(),
        )
    )


async def port_open(address: str, port: int, timeout_s: float) -> bool:
    """Whether ``address:port`` takes a TCP connection within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(address, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
