"""What ``gridsched run`` checks before it touches a device: each check that fails is a
:class:`Refusal`, one line naming what is wrong and how to fix it, with its exit code.

The order matters: secrets first (nothing opened yet), then the HTTP port (bound here and
handed to the server, so that a second instance fails before it plans or commands
anything), then the OpenADR VEN's settings (its callback URL may name that port), then the
state file's lock, integrity and owner, then the simulated devices' addresses.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.registry import Built
from models.site import SiteConfig
from scheduler.audit.identity import StateInUse, lock_state
from scheduler.service.security import read_secret_list, secret_problems

#: Exit codes of a refused start (systemd's RestartPreventExitStatus= can name 2 and 3:
#: restarting does not fix them; 4 may clear once the other process is gone).
EXIT_CONFIG = 2  # a secret or setting cannot work: fix the configuration
EXIT_STATE = 3  # the state file is corrupt or another site's
EXIT_BUSY = 4  # the state file or the port is taken by another process


@dataclass
class Refusal(Exception):
    code: int
    lines: list[str]

    def __str__(self) -> str:
        return "; ".join(self.lines)


SECRETS = (
    ("GRIDSCHED_WEBHOOK_SECRET", "GRIDSCHED_WEBHOOK_SECRET_FILE", True),
    ("GRIDSCHED_OPENADR_TOKENS", "GRIDSCHED_OPENADR_TOKENS_FILE", False),
    ("GRIDSCHED_READ_TOKENS", "GRIDSCHED_READ_TOKENS_FILE", False),
)


def check_secrets(config: SiteConfig, environ: Mapping[str, str] | None = None) -> None:
    """Every configured secret must be usable: readable, not a placeholder, well formed."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    for env, file_env, webhook in SECRETS:
        problems += secret_problems(env, file_env, webhook, environ)
    no_read_tokens = not problems and not read_secret_list(
        "GRIDSCHED_READ_TOKENS", "GRIDSCHED_READ_TOKENS_FILE", environ
    )
    if config.daemon.require_read_token and no_read_tokens:
        problems.append(
            "[daemon] require_read_token is set but GRIDSCHED_READ_TOKENS (or _FILE) is "
            "not: every read would be refused; set the tokens, or require_read_token = false"
        )
    if problems:
        raise Refusal(EXIT_CONFIG, problems)


def check_measurable(config: SiteConfig) -> None:
    """Something must read the site's power: a meter, or at least one class of devices
    with an adapter. Without either every figure the daemon shows would be the plan's."""
    if config.site.meter is None and all(dc.adapter is None for dc in config.devices):
        raise Refusal(
            EXIT_CONFIG,
            ["nothing can measure this site's import: no [site.meter] and no class has a "
             "[devices.adapter]; add one (docs/adapters.md; kind = \"sim\" to try it "
             "simulated), or use `gridsched plan` for planning without devices"],
        )  # fmt: skip


def check_ven(config: SiteConfig, listen_port: int) -> None:
    """The VEN's settings (``GRIDSCHED_VTN_*`` with the site's ``[openadr]``) hold together
    now: read only once the daemon had planned and commanded the fleet, a typo in them had
    it exit 2 through its shutdown posture, every miner asleep (docs walk, session 23)."""
    from scheduler.service.ven_daemon import ven_config_from_env

    try:
        ven_config_from_env(config.openadr, None, listen_port)
    except ValueError as exc:
        raise Refusal(EXIT_CONFIG, [f"OpenADR VEN: {exc}"]) from None


def check_tls(cert_file: str | None, key_file: str | None) -> None:
    """The API's certificate and key load now: uvicorn would load them only once the devices
    were commanded, and its traceback (exit 1) had systemd start the daemon again and again."""
    if cert_file is None and key_file is None:
        return
    if cert_file is None:
        raise Refusal(EXIT_CONFIG, ["--tls-key without --tls-cert: give both, or neither"])
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Refusal(
            EXIT_CONFIG,
            [f"--tls-cert {cert_file} / --tls-key {key_file}: cannot load them: {why}; give "
             "a readable PEM certificate chain and its private key"],
        ) from None  # fmt: skip


def lock_state_file(db: Path) -> int:
    """The state file's exclusive lock (:func:`scheduler.audit.identity.lock_state`)."""
    try:
        return lock_state(db)
    except StateInUse as exc:
        raise Refusal(EXIT_BUSY, [str(exc)]) from None
    except OSError as exc:
        raise Refusal(
            EXIT_CONFIG,
            [f"cannot open the state file {db}: {exc.strerror}; check its folder exists and "
             "the daemon's user may write there, or choose --db / [daemon] state_dir"],
        ) from None  # fmt: skip


def bind_listen(where: str) -> socket.socket:
    """Bind the API's address, ``HOST:PORT``, now (the server listens on it later)."""
    fix = "choose another address with --listen (or $GRIDSCHED_LISTEN) or [daemon] listen"
    host, _, port_text = where.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise Refusal(EXIT_CONFIG, [f"listen address {where!r} is not HOST:PORT; {fix}"])
    port = int(port_text)
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise Refusal(EXIT_CONFIG, [f"cannot listen on {where}: {exc.strerror}; {fix}"]) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Refusal(
                EXIT_BUSY,
                [f"{where} is already in use (another gridsched, or another service); stop it, "
                 f"or {fix}"],
            ) from None  # fmt: skip
        raise Refusal(EXIT_CONFIG, [f"cannot listen on {where}: {exc.strerror}; {fix}"]) from None
    return sock


def check_sim_addresses(built: Built) -> None:
    """Simulated miners listen on fixed loopback addresses (``sim_base``): name the first one
    taken, and its class, instead of failing half-way through the start."""
    for sim in built.simulators:
        for m in sim.miners:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the simulator
                try:
                    s.bind((m.host, m.port))
                except OSError as exc:
                    group = next(
                        (g for d, g in built.groups.items() if d.endswith(f"/{m.host}")), "?"
                    )
                    raise Refusal(
                        EXIT_BUSY,
                        [f"simulated miner address {m.host}:{m.port} of class {group!r} is "
                         f"taken ({exc.strerror}): another simulator or gridsched uses it; stop "
                         f"it, or set that class's [devices.adapter] sim_base to a free "
                         f"loopback base (e.g. 127.{m.host.split('.')[1]}.100.0)"],
                    ) from None  # fmt: skip
