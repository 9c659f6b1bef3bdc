"""The daemon's side of the GPU agent: a :class:`~adapters.nvml.GpuBackend` that reaches
one GPU server's NVML through its ``gridsched gpu-agent`` (protocol: :mod:`adapters.gpu_wire`).

Connections are kept and reused, a few at once, as the simulator's remote backend does. An
agent that does not answer makes its GPUs unreachable (``DeviceUnreachable`` or
``DeviceTimeout``), which the daemon counts at their last known power like any device it
cannot read; the next call opens a fresh connection, so the GPUs come back with the agent.
NVML's refusals come back by their codes and become the same errors as on the daemon's own
host (:func:`adapters.nvml.nvml_error`).
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from pathlib import Path
from typing import Any

from adapters import gpu_wire as wire
from adapters.aio import KeptConnections
from adapters.base import (
    AdapterError,
    BadReply,
    ControlRejected,
    DeviceTimeout,
    DeviceUnreachable,
    Unsupported,
)
from adapters.neterrors import describe
from adapters.nvml import nvml_error
from adapters.secrets import Secret, load_secret
from models.device_adapter import AdapterConfig
from models.errors import ConfigError

_CLASSES: dict[str, type[AdapterError]] = {
    c.__name__: c
    for c in (BadReply, ControlRejected, DeviceTimeout, DeviceUnreachable, Unsupported)
}
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.Channel]
# set while a request waits for an agent's hello: a time-out there is most often an agent
# started with --tls-cert reached without TLS (each side waits for the other to speak)
_AT_HELLO: contextvars.ContextVar[bool] = contextvars.ContextVar("at_hello", default=False)


class AgentBackend(KeptConnections[Conn]):
    """The GPUs of one host, through the GPU agent at ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: Secret | None = None,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = 3.0,
        connections: int = 4,
    ) -> None:
        if secret is not None and len(secret.reveal()) < wire.MIN_SECRET_CHARS:
            raise ConfigError(
                "gpu agent", [("secret", f"shorter than {wire.MIN_SECRET_CHARS} characters")]
            )
        super().__init__(connections)
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.secret, self.tls = secret, tls
        self.label = f"nvml@{host}:{port}"
        self.opened = 0  # connections opened so far

    def _where(self) -> str:
        return f"the GPU agent at {self.host}:{self.port}"

    async def _open(self, device: str) -> Conn:
        """A new connection, past the hello and (with a secret) the challenge-response."""
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self.tls,
            server_hostname=self.host if self.tls else None,
            limit=wire.MAX_LINE_BYTES,
        )
        self.opened += 1
        try:
            return reader, writer, await self._handshake(device, reader, writer)
        except BaseException:
            writer.close()
            raise

    async def _handshake(
        self, device: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> wire.Channel:
        plain = wire.Channel(None, "", "")
        _AT_HELLO.set(True)
        hello = await self._line(device, reader, plain, "the hello")
        _AT_HELLO.set(False)
        if hello.get("protocol") != wire.PROTOCOL:
            if hello.get("code") == "BUSY":
                raise DeviceUnreachable(device, f"{self._where()} is busy: {hello.get('error')}")
            msg = f"speaks {hello.get('protocol')!r}, not {wire.PROTOCOL}: is it a gpu-agent?"
            raise BadReply(device, f"{self._where()} {msg}")
        auth = hello.get("auth")
        if self.secret is None:
            if auth != "none":
                msg = "requires a shared secret; set agent_secret_env or agent_secret_file"
                raise Unsupported(device, f"{self._where()} {msg}")
            return plain
        if auth != "hmac-sha256" or not isinstance(hello.get("challenge"), str):
            # never talk to an agent that does not prove it holds the secret: an impostor
            # on the path could feed readings and take commands
            msg = f"offers auth {auth!r}, not hmac-sha256: refused (a secret is configured)"
            raise DeviceUnreachable(device, f"{self._where()} {msg}")
        secret, challenge = self.secret.reveal().encode(), str(hello["challenge"])
        client_nonce = wire.nonce()
        mac = wire.client_proof(secret, challenge, client_nonce)
        writer.write(plain.encode({"nonce": client_nonce, "mac": mac}))
        await writer.drain()
        answer = await self._line(device, reader, plain, "the authentication")
        if not answer.get("ok"):
            why = f"({answer.get('code')}: {answer.get('error')})"
            msg = f"refused our secret {why}: the agent's secret and the site file's must match"
            raise DeviceUnreachable(device, f"{self._where()} {msg}")
        if not wire.same(str(answer.get("mac")), wire.agent_proof(secret, challenge, client_nonce)):
            msg = "could not prove it holds the secret: refused (an impostor, another site's)"
            raise DeviceUnreachable(device, f"{self._where()} {msg}")
        return wire.Channel.session(secret, challenge, client_nonce, agent=False)

    async def _line(
        self, device: str, reader: asyncio.StreamReader, channel: wire.Channel, what: str
    ) -> dict[str, Any]:
        line = await reader.readline()
        if not line:
            raise DeviceUnreachable(device, f"{self._where()} closed the connection at {what}")
        try:
            return channel.decode(line)
        except wire.WireError as exc:
            raise BadReply(device, f"{self._where()}, {what}: {exc}") from None

    async def _ask(self, device: str, req: dict[str, Any]) -> dict[str, Any]:
        """One request on a kept connection (a fresh one when none is idle, or when the
        kept one turns out closed: the agent's idle timeout, an agent restarted)."""
        for reuse in (True, False):
            conn = self._idle.pop() if reuse and self._idle else None
            if conn is None:
                conn = await self._open(device)
                reuse = False
            reader, writer, channel = conn
            out: dict[str, Any] | None = None
            try:
                writer.write(channel.encode(req))
                await writer.drain()
                out = await self._line(device, reader, channel, "a request")
            except (ConnectionError, DeviceUnreachable):
                if not reuse:
                    raise
            finally:
                if out is not None:
                    self._idle.append(conn)
                else:  # closed, or left mid-request: never reused
                    writer.close()
            if out is not None:
                return out
        raise DeviceUnreachable(device, f"{self._where()} closed the connection")

    async def _request(self, device: str, req: dict[str, Any]) -> dict[str, Any]:
        _AT_HELLO.set(False)
        try:
            async with asyncio.timeout(self.timeout_s), self._pool():
                out = await self._ask(device, req)
        except TimeoutError:
            why = f"no answer from {self._where()} in {self.timeout_s:g} s"
            if _AT_HELLO.get() and self.tls is None:
                why += (": no hello came; an agent started with --tls-cert needs "
                        "agent_tls_ca_file in the site file")  # fmt: skip
            raise DeviceTimeout(device, why) from None
        except (ConnectionError, OSError) as exc:
            why = f"{describe(exc)}{_tls_hint(exc)}"
            raise DeviceUnreachable(device, f"{self._where()}: {why}") from None
        if not out.get("ok"):
            raise _error(device, str(req.get("call", req.get("op"))), out, self._where())
        return out

    async def count(self) -> int:
        out = await self._request("nvml", {"op": "count"})
        n = out.get("gpus")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            why = f"the answer has no 'gpus' count (a whole number expected): {str(out)[:120]}"
            raise BadReply("nvml", f"count: {why} (at {self._where()})")
        return n

    async def call(self, index: int, call: str, *args: float) -> Any:
        req = {"op": "gpu", "index": index, "call": call, "args": list(args)}
        out = await self._request(f"gpu{index}", req)
        if "result" not in out:
            why = f"the answer has no 'result' (NVML's answer expected): {str(out)[:120]}"
            raise BadReply(f"gpu{index}", f"{call}: {why} (at {self._where()})")
        result = out["result"]
        return tuple(result) if isinstance(result, list) else result


def _tls_hint(exc: BaseException) -> str:
    """What to change when the daemon cannot reach an agent, or TLS fails between them."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (" (agent_tls_ca_file must be the CA that signed the agent's --tls-cert, and the "
                "certificate must name the host as written in agents)")  # fmt: skip
    if isinstance(exc, ConnectionRefusedError):
        return " (is `gridsched gpu-agent` running there, listening on this port?)"
    if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc):
        return (" (the agent does not speak TLS: start it with --tls-cert/--tls-key, or remove "
                "agent_tls_ca_file)")  # fmt: skip
    return ""


def _error(device: str, call: str, out: dict[str, Any], where: str) -> AdapterError:
    """The adapter error an agent's error line stands for: NVML's codes as on a local GPU."""
    code, message = str(out.get("code")), str(out.get("error"))
    if code == "AGENT_ERROR":
        cls = _CLASSES.get(str(out.get("class")), BadReply)
        return cls(device, f"{call}: {message} (at {where})")
    if code == "NOT_ALLOWED":
        return Unsupported(device, f"{call}: {where} refused: {message}")
    if code == "BAD_REQUEST":
        return BadReply(device, f"{call}: {where} answered BAD_REQUEST: {message}")
    return nvml_error(device, call, code, message)


def agent_access(
    a: AdapterConfig, base_dir: str, key: str
) -> tuple[Secret | None, ssl.SSLContext | None]:
    """The agents' secret and TLS context as the site file and this host give them, or a
    ConfigError naming every key that cannot be used (``key.agent_secret_env`` or
    ``_file``: unset, unreadable, shorter than the agents need; ``key.agent_tls_ca_file``:
    not loadable). No message carries the secret. What ``gridsched run`` builds its agent
    connections with, and ``gridsched validate`` checks (one check, two doors)."""
    problems: list[tuple[str, str]] = []
    field = f"{key}.agent_secret_file" if a.agent_secret_file else f"{key}.agent_secret_env"
    secret = tls = None
    try:
        secret = load_secret(field, a.agent_secret_env, a.agent_secret_file, base_dir)
    except ConfigError as exc:  # a file's message names its path
        problems += exc.problems
    else:
        if secret is not None and len(secret.reveal()) < wire.MIN_SECRET_CHARS:
            problems.append((field, f"the agents' secret is shorter than "
                             f"{wire.MIN_SECRET_CHARS} characters; use a random one "
                             "(openssl rand -hex 32), the same as the agents'"))  # fmt: skip
    if a.agent_tls_ca_file is not None:
        ca_key = f"{key}.agent_tls_ca_file"
        try:
            tls = client_tls(str(Path(base_dir, a.agent_tls_ca_file)), ca_key)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError("environment", problems)
    return secret, tls


def agent_settings_problems(a: AdapterConfig, base_dir: str, key: str) -> list[tuple[str, str]]:
    """What would keep the daemon from reaching its GPU agents, found on this host without
    connecting (for ``gridsched validate``): :func:`agent_access`'s problems, each
    ``(key.field, message)``."""
    if not a.agents:
        return []
    try:
        agent_access(a, base_dir, key)
    except ConfigError as exc:
        return exc.problems
    return []


def client_tls(ca_file: str, key: str = "agent_tls_ca_file") -> ssl.SSLContext:
    """A TLS client context that trusts ``ca_file`` only, and checks the agent's name."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if type(exc) is not ssl.SSLError and exc.strerror else str(exc)
        raise ConfigError("site configuration", [(key, f"cannot load {ca_file}: {why}")]) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
