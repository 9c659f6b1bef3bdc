"""The TCP server of a simulated miner's JSON API, with injected faults.

The wire protocol is the cgminer one that LuxOS, bmminer (stock Antminer), BOSminer
(Braiins OS+) and btminer (Whatsminer) all serve on port 4028: the client writes one JSON
object ``{"command": "summary", "parameter": "..."}``, the miner answers one JSON object
(NUL-terminated) and closes the connection. What each command answers is the family's
command table (:mod:`adapters.sim.luxos`, :mod:`adapters.sim.antminer`, ...); this module
serves it, and takes the miner off the network or mangles its answers on demand. The web
ports' HTTP is :mod:`adapters.sim.web_port`.

Faults are injected per miner (:class:`Fault`): connection refused, hanging, slow replies,
malformed JSON, a reboot in the middle of a command, dropping out for a while; and, of the
firmware itself, a command answered as done that does nothing, a valid answer in a shape
the client cannot parse, and a setting that takes effect late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from adapters.sim.api_port import ApiConnection
from adapters.sim.physics import MinerPhysics

#: What ends a client's connection quietly: it went away, or timed out.
_DROPPED: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncio.IncompleteReadError,
    TimeoutError,
)
#: And on a web port: what it sent is no HTTP request (or too long a line).
_NOT_HTTP: tuple[type[BaseException], ...] = (ValueError, asyncio.LimitOverrunError)


class FaultKind(StrEnum):
    REFUSE = "refuse"  # nothing listens: connection refused
    HANG = "hang"  # accepts and reads, never answers
    SLOW = "slow"  # answers after `delay_s`
    MALFORMED = "malformed"  # answers with broken JSON
    REBOOT = "reboot"  # the next command drops the connection and the miner reboots
    DROPOUT = "dropout"  # gone from the network for `duration_s`, then back as it was
    IGNORE = "ignore"  # control commands are answered success and change nothing
    GARBLE = "garble"  # answers valid JSON in a shape the client cannot parse
    SLOW_WRITE = "slow-write"  # a setting takes effect `delay_s` after the write's answer


@dataclass
class Fault:
    kind: FaultKind
    until: float = math.inf  # monotonic time the fault ends
    delay_s: float = 2.0  # for SLOW


@dataclass
class MinerServer(MinerPhysics):
    """A simulated miner's API on ``host:port``, answering from its family's command table:
    a method ``_cmd_<command>(params)`` per command, in a subclass."""

    port: int = 4028
    faults: list[Fault] = field(default_factory=list)
    commands_seen: int = 0
    last_curtail: tuple[str, float] | None = None  # (sleep|wakeup, unix time received)

    #: The ``Description`` every ``STATUS`` carries (the API daemon and its version).
    description: ClassVar[str] = "cgminer"
    #: Whether ``a+b`` multicommands are answered (bmminer refuses them).
    multicommand: ClassVar[bool] = True
    #: The ``Code`` of the answer to a request that is not JSON.
    bad_json_code: ClassVar[int] = 14

    def __post_init__(self) -> None:
        super().__post_init__()
        self._server: asyncio.AbstractServer | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._active: set[asyncio.Task[None]] = set()
        self._conns: set[ApiConnection] = set()  # API connections open (stop ends them)
        self._pending: asyncio.TimerHandle | None = None  # a write's effect, delayed

    # -- the cgminer API: framing, multicommands, status envelopes ---------------------------

    def answer(self, raw: bytes) -> dict[str, Any]:
        """The reply to one request, as the miner would send it."""
        try:
            req = json.loads(raw.decode("utf-8").rstrip("\x00"))
        except (ValueError, UnicodeDecodeError):
            return self._invalid_json()
        if not isinstance(req, dict):
            return self._invalid_json()
        return self._request(req)

    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        if "command" not in req:
            return self._invalid_json()
        command = str(req["command"])
        param = req.get("parameter")
        params = [] if param in (None, "") else str(param).split(",")
        if "+" in command and not self.multicommand:
            return self._status("E", 14, "Invalid command")
        if self._fault(FaultKind.GARBLE) is not None:
            return {"STATUS": "S", command.upper(): {"0": "?"}, "id": 1}
        if "+" in command:
            out: dict[str, Any] = {c: [self._one(c, [])] for c in command.split("+")}
            out["id"] = 1
            return out
        return self._one(command, params)

    def _one(self, command: str, params: list[str]) -> dict[str, Any]:
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            return self._unknown(command)
        result: dict[str, Any] = handler(params)
        return result

    def _invalid_json(self) -> dict[str, Any]:
        return self._status("E", self.bad_json_code, "Invalid JSON")

    def _unknown(self, command: str) -> dict[str, Any]:
        return self._status("E", 14, "Invalid command")

    def _status(self, code: str, num: int, msg: str) -> dict[str, Any]:
        return {
            "STATUS": [
                {
                    "STATUS": code,
                    "When": int(time.time()),
                    "Code": num,
                    "Msg": msg,
                    "Description": self.description,
                }
            ],
            "id": 1,
        }

    def _ok(self, num: int, msg: str, key: str, body: list[dict[str, Any]]) -> dict[str, Any]:
        out = self._status("S", num, msg)
        out[key] = body
        return out

    def _pool(self) -> dict[str, Any]:
        """The one pool every simulated miner mines on, as cgminer's ``pools`` lists it."""
        return {
            "POOL": 0,
            "URL": "stratum+tcp://127.0.0.1:3333",
            "User": "gridsched.sim",
            "Status": "Alive",
            "Stratum Active": True,
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Get Failures": 0,
            "Remote Failures": 0,
        }

    # -- faults -----------------------------------------------------------------------------

    def inject(
        self, kind: FaultKind | str, duration_s: float = math.inf, delay_s: float = 2.0
    ) -> None:
        """Start a fault now; ``duration_s`` bounds it (a reboot ends by itself)."""
        kind = FaultKind(kind)
        until = self.clock() + duration_s
        if kind is FaultKind.DROPOUT or kind is FaultKind.REFUSE:
            self.faults = [
                f for f in self.faults if f.kind not in (FaultKind.DROPOUT, FaultKind.REFUSE)
            ]
            self.faults.append(Fault(kind, until))
            self._stop_listening(duration_s)
            return
        self.faults = [f for f in self.faults if f.kind is not kind]
        self.faults.append(Fault(kind, until, delay_s))

    def clear_faults(self) -> None:
        self.faults.clear()
        if self._server is None:
            self._restart_listening()

    def _fault(self, kind: FaultKind) -> Fault | None:
        now = self.clock()
        self.faults = [f for f in self.faults if f.until > now]
        return next((f for f in self.faults if f.kind is kind), None)

    def _reboot(self) -> None:
        self._power_off()
        self._stop_listening(self.reboot_s, after=self._boot)

    def _reboot_soon(self) -> None:
        """Reboot just after the answer has gone out (a web or API ``reboot``)."""
        asyncio.get_running_loop().call_later(0.05, self._reboot)

    def _restart_mining(self) -> None:
        """The mining service restarts (not the host): hashing ramps up again from cold."""
        self._advance()
        self._boot()

    def _later(self, fn: Callable[[], None]) -> None:
        """Do a write's effect ``fn`` now, or ``delay_s`` after the answer under a
        ``slow-write`` fault (a later write replaces one still waiting)."""
        slow = self._fault(FaultKind.SLOW_WRITE)
        if slow is None:
            fn()
            return
        if self._pending is not None:
            self._pending.cancel()

        def run() -> None:
            self._pending = None
            fn()

        self._pending = asyncio.get_running_loop().call_later(slow.delay_s, run)

    # -- serving ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: ApiConnection(self), self.host, self.port, reuse_address=True, backlog=64
        )
        try:
            await self._open_more()
        except OSError:
            await self.stop()
            raise

    async def _open_more(self) -> None:
        """Open the family's other listeners (a web CGI, gRPC) beside the API."""

    def _close_more(self) -> None:
        """Close what :meth:`_open_more` opened; the faults that take the miner off the
        network take all of its listeners."""

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._close_more()
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.close()
        for task in list(self._active):
            task.cancel()
        if self._active:
            await asyncio.gather(*self._active, return_exceptions=True)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _stop_listening(self, duration_s: float, after: Callable[[], None] | None = None) -> None:
        self._close_more()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if math.isfinite(duration_s):
            loop = asyncio.get_running_loop()

            def reopen() -> None:
                self._reopen = None
                if after is not None:
                    after()
                self._restart_listening()

            self._reopen = loop.call_later(duration_s, reopen)

    def _restart_listening(self) -> None:
        async def go() -> None:
            with contextlib.suppress(OSError):
                await self.start()

        asyncio.get_running_loop().create_task(go())

    @contextlib.asynccontextmanager
    async def _connection(
        self, writer: asyncio.StreamWriter, http: bool = False
    ) -> AsyncIterator[None]:
        """One client's connection: counted in (:meth:`stop` ends it), ended quietly when the
        client goes away (on a web port also when it sends no HTTP request), always closed."""
        self._track()
        quiet = _DROPPED + _NOT_HTTP if http else _DROPPED
        try:
            yield
        except quiet:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _track(self) -> None:
        """Count the running connection handler in, so that :meth:`stop` can end it."""
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
            task.add_done_callback(self._active.discard)

    async def _hang_or_slow(self, alive: Callable[[], bool]) -> bool:
        """Apply HANG and SLOW to one request; False when it hung (drop it unanswered)
        until the fault ended or the listener (``alive``) closed."""
        if self._fault(FaultKind.HANG) is not None:
            while self._fault(FaultKind.HANG) is not None and alive():
                await asyncio.sleep(0.05)
            return False
        slow = self._fault(FaultKind.SLOW)
        if slow is not None:
            await asyncio.sleep(slow.delay_s)
        return True

    def _serve_api(self, conn: ApiConnection, raw: bytes) -> None:
        """Answer one API request.

        Without a fault, on the spot: the reply is written and the connection closed from
        the protocol's callback, with no task, stream or timer per request (what the
        simulator's CPU per request is mostly made of, which shares the host with the
        controller under test). Under a fault, the same steps as before, in a task."""
        self.commands_seen += 1
        if self.faults:
            task = asyncio.get_running_loop().create_task(self._serve_faulty(conn, raw))
            self._active.add(task)
            task.add_done_callback(self._active.discard)
            return
        conn.reply(self._encoded(raw))

    def _encoded(self, raw: bytes) -> bytes:
        # From the raw bytes again (a JSON parse of some dozens of bytes): tests replace
        # ``answer`` to make a miner answer otherwise.
        return _encode(self.answer(raw)).encode() + b"\x00"

    async def _serve_faulty(self, conn: ApiConnection, raw: bytes) -> None:
        try:
            if self._fault(FaultKind.REBOOT) is not None:
                self.faults = [f for f in self.faults if f.kind is not FaultKind.REBOOT]
                self._reboot()
                return  # connection dropped without an answer
            if not await self._hang_or_slow(lambda: self._server is not None):
                return  # the fault ended or the miner stopped: drop the connection unanswered
            if self._fault(FaultKind.MALFORMED) is not None:
                conn.reply(b'{"STATUS":[{"STATUS":"S","When":' + b"\xff\xfe" + b'"Msg":')
            else:
                conn.reply(self._encoded(raw))
        finally:
            conn.close()


#: JSON as the simulated miners send it (compact); one encoder, not one per reply.
_encode = json.JSONEncoder(separators=(",", ":")).encode
