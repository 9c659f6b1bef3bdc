"""``gridsched gpu-agent``: serve this host's GPUs (NVML) to the daemon on another host.

Runs on each GPU server (deploy/systemd/gridsched-gpu-agent.service); the daemon reaches
it through ``[devices.adapter] kind = "nvml"`` with ``agents``. The serving code and its
protocol are in ``adapters.gpu_agent`` and ``adapters.gpu_wire``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import socket
import sys
from typing import Any

from adapters.aio import run_async
from adapters.base import AdapterError, Unsupported
from adapters.gpu_wire import DEFAULT_PORT
from adapters.neterrors import describe
from adapters.nvml import nvml_parts
from models.errors import ConfigError


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(
            "gpu-agent",
            [("--listen", f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT} "
              f"or 0.0.0.0:{DEFAULT_PORT} (with a secret)")],
        )  # fmt: skip
    return host.strip("[]"), int(port)


# the serving code names its settings as a library does; the command names its options
_OPTIONS = {
    "listen": "--listen",
    "secret": "--secret-env/--secret-file",
    "tls-cert/tls-key": "--tls-cert/--tls-key",
}


def _as_options(exc: ConfigError) -> ConfigError:
    return ConfigError("gpu-agent", [(_OPTIONS.get(k, k), m) for k, m in exc.problems])


#: The exit code when this host cannot serve NVML at all (no NVIDIA driver or library, no
#: nvidia-ml-py): EX_CONFIG of sysexits.h, which the unit's RestartPreventExitStatus= names,
#: so systemd does not start the agent again every 10 s and fill the journal.
EXIT_NO_NVML = 78
#: NVML's refusals at start that may clear by themselves: the kernel module still loading at
#: boot. Exit 1, which systemd restarts.
_TRANSIENT = {"DRIVER_NOT_LOADED"}


def _start_failure(exc: AdapterError) -> tuple[int, str]:
    """The exit code of a failed start and what the operator should do about it."""
    parts = nvml_parts(exc)
    if isinstance(exc, Unsupported) and (parts is None or parts[0] not in _TRANSIENT):
        return EXIT_NO_NVML, (
            "install the NVIDIA driver and nvidia-ml-py on this host (nvidia-smi must work), "
            "or run the agent only on GPU servers; exit 78, not restarted by systemd"
        )
    return 1, "exit 1: the unit's agent is tried again in 10 s (the driver may still be loading)"


def _listen_failure(exc: OSError) -> tuple[int, str]:
    """The exit code when the agent cannot listen, and why in words. 1 (restarted): a port
    in use may be an old agent still stopping, an address may come up later (DHCP). 2 (not
    restarted): a name that does not resolve, a port only root may use."""
    if exc.errno == errno.EADDRINUSE:
        in_use = "the address is in use by another process (another gpu-agent?): stop it, or "
        return 1, in_use + "give another port"
    words = describe(exc)
    no_name = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME
    if no_name or exc.errno == errno.EACCES:
        return (
            2,
            f"{words}; give an address of this host (0.0.0.0: all of them) and a port above 1023",
        )
    return 1, f"{words}; exit 1: the unit tries again in 10 s"


def cmd_gpu_agent(args: argparse.Namespace) -> int:
    from adapters.gpu_agent import GpuAgent, server_tls
    from adapters.nvml import GpuBackend, PynvmlBackend
    from adapters.secrets import load_secret
    from adapters.sim.gpu import SimGpu
    from adapters.sim.gpu_backend import LocalSimBackend
    from scheduler.cli.run import configure_logging

    configure_logging(args.log_level)
    host, port = _listen(args.listen)
    secret = load_secret("--secret-env/--secret-file", args.secret_env, args.secret_file)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("gpu-agent", [("--tls-cert/--tls-key", "give both, or neither")])
    try:
        tls = server_tls(args.tls_cert, args.tls_key) if args.tls_cert else None
    except ConfigError as exc:
        raise _as_options(exc) from None
    if args.sim is not None and args.sim < 1:  # 0 must not fall back to the real NVML
        raise ConfigError("gpu-agent", [("--sim", f"{args.sim}: expected 1 or more GPUs")])
    backend: GpuBackend
    if args.sim is not None:
        backend = LocalSimBackend([SimGpu(i, model=args.sim_model) for i in range(args.sim)])
    else:
        backend = PynvmlBackend()
    try:
        agent = GpuAgent(backend, host, port, secret, tls, max_clients=args.max_clients)
    except ConfigError as exc:
        raise _as_options(exc) from None

    async def main() -> int:
        try:
            await agent.start()
        except AdapterError as exc:
            code, what_to_do = _start_failure(exc)
            print(f"gridsched: error: cannot serve the GPUs: {exc}; {what_to_do}", file=sys.stderr)
            return code
        except OSError as exc:
            code, what = _listen_failure(exc)
            print(f"gridsched: error: --listen {host}:{port}: {what}", file=sys.stderr)
            return code
        print(f"gpu-agent: serving {agent.gpus} GPUs on {host}:{agent.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await agent.stop()
        return 0

    return run_async(main())


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "gpu-agent",
        help="serve this host's GPUs (NVML) to a gridsched daemon on another host",
        description="Serve this host's NVML to the daemon: the calls its GPU adapter makes "
        "and nothing else. Beyond loopback it needs a shared secret (HMAC "
        "challenge-response; the secret never crosses the wire). See docs/hardware.md.",
    )
    p.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address to listen on (default 127.0.0.1:{DEFAULT_PORT}; 0.0.0.0 needs a secret)",
    )
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--secret-env", metavar="NAME", help="environment variable of the secret")
    secret.add_argument("--secret-file", metavar="PATH", help="file holding the secret")
    p.add_argument("--tls-cert", metavar="PATH", help="TLS certificate chain (PEM)")
    p.add_argument("--tls-key", metavar="PATH", help="its private key (PEM)")
    p.add_argument("--max-clients", type=int, default=64, help="connections at once (64)")
    p.add_argument(
        "--sim", type=int, default=None, metavar="N", help="serve N simulated GPUs, not NVML"
    )
    p.add_argument("--sim-model", default="H100 SXM", help="the simulated GPUs' model")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="INFO (default) logs each client's connect and disconnect; WARNING only failures",
    )
    p.set_defaults(func=cmd_gpu_agent)
