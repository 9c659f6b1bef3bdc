"""How the daemon reaches a device class's units: the site file's ``[devices.adapter]``
(its kind, the miners' addresses, the GPUs' indexes or their hosts' agents, credentials
and simulator settings), and the address lists it takes (ranges, CIDR blocks)."""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import re
from collections import Counter
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.errors import at_key


class AdapterKind(StrEnum):
    PYASIC = "pyasic"  # ASICs on the network, any firmware pyasic drives
    ASIC_RS = "asic-rs"  # ASICs through pyasic-rs (optional package; fewer families)
    NVML = "nvml"  # GPUs in this host, or on GPU servers through their agents (`agents`)
    SIM = "sim"  # the simulator: miners on loopback, or simulated GPUs


def expand_hosts(entries: tuple[str, ...]) -> list[str]:
    """Addresses from entries that are an IP, a range ``a.b.c.d-a.b.c.e`` or a CIDR block.
    A site file's entries are expanded once (the adapter's check, the class's count, the
    classes' overlap and the build each ask): about 60 ms for 30,000 addresses."""
    return list(_expanded(tuple(entries)))


@functools.lru_cache(maxsize=32)
def _expanded(entries: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for e in entries:
        try:
            if "/" in e:
                net = ipaddress.ip_network(e, strict=False)
                if net.num_addresses > 65536 + 2:  # counted, not listed: a /8 took minutes
                    raise ValueError(f"block of {net.num_addresses:,} addresses, more than 65536")
                out.extend(str(h) for h in (net.hosts() if net.num_addresses > 2 else net))
            elif "-" in e:
                lo_s, hi_s = e.split("-", 1)
                lo, hi = ipaddress.IPv4Address(lo_s.strip()), ipaddress.IPv4Address(hi_s.strip())
                if hi < lo:
                    raise ValueError("range ends before it starts")
                if int(hi) - int(lo) >= 65536:
                    raise ValueError("range longer than 65536 addresses")
                out.extend(str(ipaddress.IPv4Address(k)) for k in range(int(lo), int(hi) + 1))
            else:
                out.append(str(ipaddress.ip_address(e.strip())))
        except ValueError as exc:
            raise ValueError(
                f"host entry {e!r}: {exc}; valid: 10.0.0.5, 10.0.0.1-10.0.0.200 or 10.0.1.0/24"
            ) from None
    dup = sorted(h for h, n in Counter(out).items() if n > 1)  # one pass, any length
    if dup:
        raise ValueError(f"addresses listed twice: {dup[:5]}")
    return tuple(out)


def compact_hosts(hosts: list[str]) -> list[str]:
    """The entries of :func:`expand_hosts` that give back ``hosts`` in the same order: each
    run of consecutive IPv4 addresses as one range ``a.b.c.d-a.b.c.e``, anything else as
    it is (a site file of 30,000 simulated miners lists about 120 ranges, not 30,000)."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            lo, hi = ipaddress.IPv4Address(run[0]), ipaddress.IPv4Address(run[-1])
            out.append(str(lo) if len(run) == 1 else f"{lo}-{hi}")
            run.clear()

    for h in hosts:
        try:
            n = int(ipaddress.IPv4Address(h))
        except ValueError:
            flush()
            out.append(h)
            continue
        if run and (n != run[-1] + 1 or n - run[0] >= 65535):
            flush()
        run.append(n)
    flush()
    return out


_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def expand_agents(entries: tuple[str, ...]) -> list[tuple[str, int]]:
    """(host, port) of each GPU agent from entries ``HOST:PORT``, HOST a name, an address, a
    range ``a.b.c.d-a.b.c.e`` or a CIDR block (as :func:`expand_hosts`)."""
    out: list[tuple[str, int]] = []
    for e in entries:
        host, sep, port = e.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"entry {e!r}: expected HOST:PORT, e.g. 10.0.0.7:7731, "
                "gpu-07.site:7731 or 10.0.0.1-10.0.0.8:7731"
            )
        lo, dash, hi = host.partition("-")
        if "/" in host or (dash and _is_ip(lo) and _is_ip(hi)) or _is_ip(host):
            hosts = expand_hosts((host,))
        elif _HOSTNAME.match(host):
            hosts = [host]
        else:
            raise ValueError(f"entry {e!r}: {host!r} is no host name or address")
        out.extend((h, int(port)) for h in hosts)
    dup = sorted(h for h, n in Counter(h for h, _ in out).items() if n > 1)
    if dup:  # a GPU's id names its host: two agents on one host would share ids
        raise ValueError(f"hosts listed twice: {dup[:5]}")
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


class AdapterConfig(BaseModel):
    """How the daemon reaches a class's units (ignored by ``gridsched plan``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AdapterKind
    hosts: tuple[str, ...] = ()  # pyasic: one address per unit
    gpus: tuple[Annotated[int, Field(ge=0)], ...] | None = None  # nvml: indexes, None = all
    sim_control: str | None = None  # sim GPUs in a `gridsched fleet simulate` process
    sim_base: str = "127.1.0.0"  # sim miners: loopback addresses after this one
    sim_sleep_s: Annotated[float, Field(gt=0, le=600)] = 5.0  # sim miners: time to sleep
    sim_wake_s: Annotated[float, Field(gt=0, le=600)] = 12.0  # sim miners: time to wake
    #: sim miners: the firmware they run (adapters.sim.fleet.FIRMWARE; 80 needs root)
    sim_firmware: Literal[
        "luxos", "antminer", "braiins", "whatsminer", "vnish", "whatsminer3", "auradine"
    ] = "luxos"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    #: pyasic, stock Antminer firmware: the JSON type of ``miner-mode`` in its config writes
    #: (firmware versions differ). auto: pyasic's setting, switched after a write that is
    #: accepted and never shows; string / number: always that type.
    miner_mode: Literal["auto", "string", "number"] = "auto"
    #: pyasic, LuxOS: kept, the daemon holds each miner's session and renews it every 30 s
    #: so that a curtail needs no logon of its own (another client's logon is refused while
    #: it is held, unless that client adopts the active session as pyasic does); on-demand,
    #: it logs on when a command needs a session and lets LuxOS end it a minute after the
    #: last one (Luxor's own advice), each command after an idle minute costing a logon.
    luxos_sessions: Literal["kept", "on-demand"] = "kept"
    #: pyasic (or sim), stock Antminer firmware: reboot a miner once when its configuration
    #: reads asleep after our sleep and it still hashes past the read-back deadline (some
    #: builds apply a sleep only on a reboot: asic-rs issue 245). Off by default: a reboot
    #: stops the miner for minutes. Without it the sleep stays unconfirmed and is re-sent.
    reboot_if_sleep_ignored: Annotated[bool, Field(strict=True)] = False
    serving_hook_url: str | None = None
    serving_hook_token_env: str | None = None
    #: nvml: the GPU agents (`gridsched gpu-agent`) on the GPU servers, "HOST:PORT" each
    #: (HOST a name, an address, a range or a CIDR block), with the GPUs `gpus` lists on
    #: each (none: count / agents, from 0); none given: the GPUs of the daemon's own host
    agents: tuple[str, ...] = ()
    agent_secret_env: str | None = None  # the agents' shared secret (needed beyond loopback)
    agent_secret_file: str | None = None
    agent_tls_ca_file: str | None = None  # TLS to the agents, their certificates from this CA

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.hosts:
            try:
                expand_hosts(self.hosts)
            except ValueError as exc:  # named at its key, as every other adapter error
                raise at_key("hosts", str(exc)) from None
        if self.kind in (AdapterKind.PYASIC, AdapterKind.ASIC_RS) and not self.hosts:
            raise ValueError(f"kind = '{self.kind.value}' needs `hosts` (one address per unit)")
        if self.kind is AdapterKind.ASIC_RS and importlib.util.find_spec("pyasic_rs") is None:
            raise ValueError(
                "kind = 'asic-rs' needs the pyasic-rs package, not installed here: "
                "pip install -c constraints.txt pyasic-rs (or use kind = 'pyasic')"
            )
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        if self.luxos_sessions != "kept" and self.kind not in (AdapterKind.PYASIC, AdapterKind.SIM):
            raise at_key(
                "luxos_sessions",
                f"luxos_sessions = {self.luxos_sessions!r} applies to kind = 'pyasic' (and "
                f"'sim'), not {self.kind.value!r}",
            )
        self._check_reboot()
        self._check_agents()
        if self.sim_control is not None:
            host, _, port = self.sim_control.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sim_control {self.sim_control!r}: expected HOST:PORT")
        return self

    def _check_reboot(self) -> None:
        if not self.reboot_if_sleep_ignored:
            return
        stock = self.kind is AdapterKind.PYASIC or (
            self.kind is AdapterKind.SIM and self.sim_firmware == "antminer"
        )
        if not stock:
            sim = self.kind is AdapterKind.SIM
            what = (
                f"kind = 'sim' with sim_firmware = {self.sim_firmware!r}"
                if sim
                else f"kind = {self.kind.value!r}"
            )
            raise at_key(
                "reboot_if_sleep_ignored",
                f"reboot_if_sleep_ignored applies to stock Antminer firmware driven by kind = "
                f"'pyasic' (or kind = 'sim' with sim_firmware = 'antminer'), not {what}",
            )

    def _check_agents(self) -> None:
        named = [
            n
            for n in ("agent_secret_env", "agent_secret_file", "agent_tls_ca_file")
            if getattr(self, n) is not None
        ]
        if not self.agents:
            if named:
                raise at_key(named[0], f"{', '.join(named)}: only with `agents` (GPU agents)")
            return
        if self.kind is not AdapterKind.NVML:
            raise at_key("agents", f"GPU agents serve kind = 'nvml', not {self.kind.value!r}")
        if self.agent_secret_env is not None and self.agent_secret_file is not None:
            raise at_key(
                "agent_secret_file", "give one of agent_secret_env or agent_secret_file, not both"
            )
        try:
            remote = [h for h, _ in expand_agents(self.agents) if not is_loopback_host(h)]
        except ValueError as exc:
            raise at_key("agents", str(exc)) from None
        if remote and self.agent_secret_env is None and self.agent_secret_file is None:
            raise at_key(
                "agents",
                f"{remote[:3]} are other hosts; give agent_secret_env or agent_secret_file, "
                "the secret the agents are started with (an agent refuses to serve beyond "
                "loopback without one)",
            )
