"""The GPU agent: one host's NVML served to the daemon over TCP (``gridsched gpu-agent``).

It serves any :class:`~adapters.nvml.GpuBackend` (real NVML on a GPU server, the simulator
in tests and demos) through the protocol of :mod:`adapters.gpu_wire`: only the calls the
daemon's GPU adapter makes, NVML's refusals carried back by their NVML codes, a bad line
answered with an error and never the end of the agent, a time limit on every read.

Security: it refuses to listen beyond loopback without a shared secret (a TLS server
certificate alone does not say who the client is); with one, every connection proves it
holds the secret by HMAC challenge-response and every line after carries a MAC. TLS
(``tls``) adds secrecy of what crosses the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from adapters import gpu_wire as wire
from adapters.base import AdapterError
from adapters.neterrors import describe
from adapters.nvml import GpuBackend, nvml_parts
from adapters.replywords import our_bug, said
from adapters.secrets import Secret
from models.device_adapter import is_loopback_host
from models.errors import ConfigError

log = logging.getLogger("gridsched.gpu_agent")

#: How long a client has to prove it holds the secret after the hello.
AUTH_TIMEOUT_S = 10.0
#: How long a kept connection may stay silent before the agent closes it (the daemon polls
#: every 15 s by default and opens a fresh connection when a kept one was closed).
IDLE_TIMEOUT_S = 300.0
#: How long one NVML call may take before the client is told it timed out (NVML calls
#: take milliseconds; one that hangs is a driver in trouble).
CALL_TIMEOUT_S = 10.0
MAX_CLIENTS = 64


def check_secret(field_name: str, secret: Secret | None) -> None:
    if secret is not None and len(secret.reveal()) < wire.MIN_SECRET_CHARS:
        raise ConfigError(
            "gpu agent",
            [(field_name, f"the secret is shorter than {wire.MIN_SECRET_CHARS} characters; "
              "use a random one (openssl rand -hex 32)")],
        )  # fmt: skip


@dataclass
class GpuAgent:
    """Serves ``backend`` on ``host:port`` (port 0: one the OS picks, in ``port`` after
    :meth:`start`)."""

    backend: GpuBackend
    host: str = "127.0.0.1"
    port: int = wire.DEFAULT_PORT
    secret: Secret | None = None
    tls: ssl.SSLContext | None = None
    auth_timeout_s: float = AUTH_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    call_timeout_s: float = CALL_TIMEOUT_S
    max_clients: int = MAX_CLIENTS
    gpus: int = field(default=0, init=False)
    _server: asyncio.AbstractServer | None = field(default=None, init=False)
    _clients: dict[asyncio.StreamWriter, asyncio.Task[None]] = field(
        default_factory=dict, init=False
    )

    def __post_init__(self) -> None:
        # a name may resolve anywhere, and "" is every address: only loopback is let be
        if self.secret is None and not is_loopback_host(self.host.strip("[]")):
            raise ConfigError(
                "gpu agent",
                [("listen", f"refusing to serve NVML on {self.host or 'every address'!r} "
                  "without authentication: anyone who reaches the port could set power "
                  "limits; give a shared secret (--secret-env or --secret-file), or listen "
                  "on 127.0.0.1")],
            )  # fmt: skip
        check_secret("secret", self.secret)

    async def start(self) -> None:
        """Ask the backend how many GPUs it has (NVML missing fails here, not at the first
        client), then listen."""
        self.gpus = await self.backend.count()
        self._server = await asyncio.start_server(
            self._serve,
            self.host or None,
            self.port,
            ssl=self.tls,
            limit=wire.MAX_LINE_BYTES,
            reuse_address=True,
            ssl_handshake_timeout=self.auth_timeout_s if self.tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "serving %d GPUs (%s) on %s:%d, auth %s, TLS %s", self.gpus, self.backend.label,
            self.host, self.port, "hmac-sha256" if self.secret else "none",
            "on" if self.tls else "off",
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        handlers = list(self._clients.values())
        for writer, task in list(self._clients.items()):
            writer.close()
            task.cancel()  # one waiting on NVML (a hung driver) would hold the stop
        if handlers:
            await asyncio.wait(handlers, timeout=5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        task = asyncio.current_task()
        if len(self._clients) >= self.max_clients:
            log.warning("client %s refused: %d clients connected already", peer, len(self._clients))
            writer.write(wire.Channel(None, "", "").encode(
                {"ok": False, "code": "BUSY", "error": f"{self.max_clients} clients at most"}
            ))  # fmt: skip
            await _close(writer)
            return
        if task is not None:
            self._clients[writer] = task
        log.info("client %s connected", peer)
        served, why = 0, "closed by the client"
        try:
            channel = await self._handshake(reader, writer, peer)
            if channel is None:
                why = "authentication failed"
                return
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        line = await reader.readline()
                except TimeoutError:
                    why = f"idle for {self.idle_timeout_s:g} s"
                    return
                if not line:
                    return
                try:
                    req = channel.decode(line)
                except wire.WireError as exc:
                    if channel.key is not None:  # the session cannot be trusted any more
                        why = f"protocol error: {exc}"
                        log.warning("client %s: %s", peer, why)
                        return
                    out = {"ok": False, "code": "BAD_REQUEST", "error": str(exc)}
                else:
                    out = await self._answer(req)
                    served += 1
                writer.write(channel.encode(out))
                await writer.drain()
        except ValueError:  # a line over MAX_LINE_BYTES: the stream cannot be resynchronised
            why = f"a line over {wire.MAX_LINE_BYTES} bytes"
            with contextlib.suppress(Exception):
                error = {"ok": False, "code": "BAD_REQUEST", "error": why}
                writer.write(wire.Channel(None, "", "").encode(error))
        except (ConnectionError, ssl.SSLError) as exc:
            why = describe(exc)
        except asyncio.CancelledError:  # stop(): the handler ends here, not as cancelled
            why = "the agent stopped"  # (asyncio's server callback logs a cancelled one)
        finally:
            self._clients.pop(writer, None)
            await _close(writer)
            log.info("client %s disconnected (%s) after %d requests", peer, why, served)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> wire.Channel | None:
        """The hello, and with a secret the challenge-response; the channel, or None when
        the client failed to prove it holds the secret (said in the log)."""
        challenge = wire.nonce() if self.secret is not None else None
        hello = {
            "protocol": wire.PROTOCOL,
            "auth": "hmac-sha256" if challenge else "none",
            "challenge": challenge,
        }
        plain = wire.Channel(None, "", "")
        writer.write(plain.encode(hello))
        await writer.drain()
        if self.secret is None or challenge is None:
            return plain
        secret = self.secret.reveal().encode()
        try:
            async with asyncio.timeout(self.auth_timeout_s):
                line = await reader.readline()
            if not line:
                raise wire.WireError("the client closed the connection")
            answer = wire.parse_json(line)
            client_nonce, mac = str(answer.get("nonce", "")), str(answer.get("mac", ""))
            if len(client_nonce) < 32:
                raise wire.WireError("no nonce of 32 hex characters or more")
            if not wire.same(mac, wire.client_proof(secret, challenge, client_nonce)):
                raise wire.WireError("wrong MAC: the client's secret is not this agent's")
        except (TimeoutError, wire.WireError, ValueError) as exc:  # ValueError: a long line
            why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("client %s: authentication failed: %s", peer, why)
            with contextlib.suppress(Exception):
                writer.write(plain.encode({"ok": False, "code": "AUTH_FAILED", "error": why}))
                await writer.drain()
            return None
        proof = wire.agent_proof(secret, challenge, client_nonce)
        writer.write(plain.encode({"ok": True, "mac": proof}))
        await writer.drain()
        return wire.Channel.session(secret, challenge, client_nonce, agent=True)

    async def _answer(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request's answer: never raises (a bad request is an error line)."""
        op = req.get("op")
        if op == "count":
            return {"ok": True, "gpus": self.gpus}
        if op != "gpu":
            return {"ok": False, "code": "BAD_REQUEST", "error": f"unknown op {op!r}: count, gpu"}
        try:
            index, call, args = wire.check_request(req, self.gpus)
        except wire.NotAllowed as exc:
            return {"ok": False, "code": "NOT_ALLOWED", "error": str(exc)}
        except ValueError as exc:
            return {"ok": False, "code": "BAD_REQUEST", "error": str(exc)}
        try:
            async with asyncio.timeout(self.call_timeout_s):
                result = await self.backend.call(index, call, *args)
        except TimeoutError:
            return _agent_error(
                "DeviceTimeout", f"{call}: NVML did not answer in {self.call_timeout_s:g} s"
            )
        except AdapterError as exc:
            parts = nvml_parts(exc)
            if parts is not None:
                return {"ok": False, "code": parts[0], "error": parts[1]}
            return _agent_error(type(exc).__name__, exc.reason)
        except Exception as exc:  # said, and the agent carries on
            why = said(exc, f"the GPU agent's {call} on GPU {index}")  # a bug: logged once
            if not our_bug(exc):  # a library choking on what NVML answered: one line
                log.error("%s on GPU %d failed: %s", call, index, why)
            return _agent_error("BadReply", f"{call}: {why}")
        return {"ok": True, "result": list(result) if isinstance(result, tuple) else result}


def _agent_error(cls: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": "AGENT_ERROR", "class": cls, "error": message}


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def server_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later) from a certificate chain and its key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "gpu agent", [("tls-cert/tls-key", f"cannot load {cert_file} / {key_file}: {exc}")]
        ) from None
    return ctx
