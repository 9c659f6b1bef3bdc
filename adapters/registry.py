"""Adapters from the site configuration: ``[devices.adapter] kind = "pyasic" | "nvml" | "sim"``.

Each kind registers a factory that turns one device class into its adapters, one per unit,
with stable ids (``CLASS/ADDRESS`` for miners, ``CLASS/gpuN`` for GPUs, ``CLASS/HOST/gpuN``
for GPUs reached through the GPU agent on HOST: ``adapters.gpu_remote``). A ``sim`` ASIC
class starts its own simulated miners on loopback, running the firmware ``sim_firmware``
names (LuxOS by default; returned in ``Built.simulators`` for the caller to run), and
reaches them through pyasic like real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.asic import PyasicMiner
from adapters.asic_rs import AsicRsMiner
from adapters.base import DeviceAdapter, ModeRequest
from adapters.gpu import GpuBackend, NvmlGpu, PynvmlBackend, ServingHook
from adapters.gpu_remote import AgentBackend, agent_access
from adapters.secrets import load_secret
from adapters.sim.fleet import SimFleet
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend, RemoteSimBackend
from models import catalog
from models.device_adapter import AdapterConfig, AdapterKind, expand_agents, expand_hosts
from models.devices import DeviceClass, DeviceKind
from models.errors import ConfigError
from models.inference_objectives import told_capacity_tokens_s
from models.site import Inference, SiteConfig


@dataclass
class Built:
    adapters: list[DeviceAdapter] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)  # device id -> class name
    simulators: list[SimFleet] = field(default_factory=list)


Factory = Callable[[DeviceClass, AdapterConfig, str, Built], None]
REGISTRY: dict[tuple[AdapterKind, DeviceKind], Factory] = {}


def register(kind: AdapterKind, device_kind: DeviceKind) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        REGISTRY[(kind, device_kind)] = fn
        return fn

    return deco


def _add(built: Built, dc: DeviceClass, adapter: DeviceAdapter) -> None:
    built.adapters.append(adapter)
    built.groups[adapter.device_id] = dc.name


def _password_key(dc: DeviceClass, a: AdapterConfig) -> str:
    """The key a miner password comes from, as the site file names it."""
    return f"devices.{dc.name}.adapter.password_{'file' if a.password_file else 'env'}"


@register(AdapterKind.PYASIC, DeviceKind.ASIC)
def _pyasic(dc: DeviceClass, a: AdapterConfig, base_dir: str, built: Built) -> None:
    password = load_secret(_password_key(dc, a), a.password_env, a.password_file, base_dir)
    as_str = {"auto": None, "string": True, "number": False}[a.miner_mode]
    for host in expand_hosts(a.hosts):
        miner = PyasicMiner(f"{dc.name}/{host}", host, a.timeout_s, a.username, password)
        miner.miner_mode_as_str = as_str
        miner.keep_session = a.luxos_sessions == "kept"
        miner.reboot_if_sleep_ignored = a.reboot_if_sleep_ignored
        _add(built, dc, miner)


@register(AdapterKind.ASIC_RS, DeviceKind.ASIC)
def _asic_rs(dc: DeviceClass, a: AdapterConfig, base_dir: str, built: Built) -> None:
    password = load_secret(_password_key(dc, a), a.password_env, a.password_file, base_dir)
    for host in expand_hosts(a.hosts):
        _add(built, dc, AsicRsMiner(f"{dc.name}/{host}", host, a.timeout_s, a.username, password))


@register(AdapterKind.SIM, DeviceKind.ASIC)
def _sim_asic(dc: DeviceClass, a: AdapterConfig, base_dir: str, built: Built) -> None:
    try:  # the catalog's full name is what a real miner reports ("Antminer S19j Pro")
        model = catalog.find_asic(dc.model or "").model
    except KeyError:
        model = "Antminer S19j Pro"
    sim = SimFleet.build(
        dc.count,
        base=a.sim_base,
        models=(model,),
        sleep_s=a.sim_sleep_s,
        wake_s=a.sim_wake_s,
        retune_s=min(3.0, a.sim_sleep_s),
        control_port=None,
        firmware=(a.sim_firmware,),
    )
    built.simulators.append(sim)
    for m in sim.miners:
        miner = PyasicMiner(f"{dc.name}/{m.host}", m.host, a.timeout_s)
        miner.keep_session = a.luxos_sessions == "kept"
        miner.reboot_if_sleep_ignored = a.reboot_if_sleep_ignored
        _add(built, dc, miner)


def _gpu_throughput(dc: DeviceClass) -> Callable[[float], float] | None:
    if dc.model is None:
        return None
    gpu = catalog.find_gpu(dc.model)
    full = catalog.gpu_full_throughput(gpu, dc.workload or "llama-3.1-70b")
    return lambda limit_w: full * catalog.cap_throughput_fraction(limit_w, gpu.tdp_w)


def _told_capacity(dc: DeviceClass, inf: Inference) -> Callable[[ModeRequest], float | None]:
    """What the serving hook tells the router a command's mode serves: the tokens/s
    counted for it under the latency objective (``told_capacity_tokens_s``, the plan's
    rule), so that the router sends no more than meets the objective. A mode is known by
    its power limit and clock lock together (a clock lock shares its limit with a cap);
    a command that is no mode of the class: None (the cap curve's figure)."""
    return _by_request(dc, told_capacity_tokens_s(dc, inf.itl_p95_s, inf.itl_p95_over_mean))


def _stated_tokens(dc: DeviceClass) -> Callable[[ModeRequest], float | None]:
    """The tokens/s per unit of the class mode a power limit and clock lock read back are
    (the mode's own figure), for the GPU's telemetry; None for a pair no mode has."""
    return _by_request(dc, {m.name: m.throughput_tokens_s for m in dc.modes})


def _by_request(
    dc: DeviceClass, by_mode: dict[str, float]
) -> Callable[[ModeRequest], float | None]:
    """``by_mode`` keyed by each mode's (power limit, clock lock); a limit matches within
    0.5 W (NVML takes and gives milliwatts); modes sharing a key: the lower figure."""
    known: dict[tuple[float, tuple[int, int] | None], float] = {}
    for m in dc.modes:
        request = mode_request(dc, m.name)
        if request.power_w is not None and m.name in by_mode:
            key = (request.power_w, request.clocks_mhz)
            known[key] = min(known.get(key, by_mode[m.name]), by_mode[m.name])

    def lookup(request: ModeRequest) -> float | None:
        if request.power_w is None:
            return None
        near = [
            tok
            for (w, clocks), tok in known.items()
            if clocks == request.clocks_mhz and abs(w - request.power_w) <= 0.5
        ]
        return min(near) if near else None

    return lookup


def _gpus(
    dc: DeviceClass,
    a: AdapterConfig,
    base_dir: str,
    built: Built,
    backend: GpuBackend,
    indexes: tuple[int, ...] | None = None,
    prefix: str = "",
) -> None:
    hook = None
    if a.serving_hook_url is not None:
        token = load_secret(
            f"devices.{dc.name}.adapter.serving_hook_token_env",
            a.serving_hook_token_env,
            None,
            base_dir,
        )
        hook = ServingHook(a.serving_hook_url, a.timeout_s, token)
    if indexes is None:
        indexes = a.gpus if a.gpus is not None else tuple(range(dc.count))
    fn = _gpu_throughput(dc)
    for i in indexes:
        gpu_id = f"{dc.name}/{prefix}gpu{i}"
        _add(built, dc, NvmlGpu(gpu_id, str(i), backend, i, a.timeout_s, fn, hook))


@register(AdapterKind.NVML, DeviceKind.GPU)
def _nvml(dc: DeviceClass, a: AdapterConfig, base_dir: str, built: Built) -> None:
    if not a.agents:
        _gpus(dc, a, base_dir, built, PynvmlBackend())
        return
    secret, tls = agent_access(a, base_dir, f"devices.{dc.name}.adapter")
    agents = expand_agents(a.agents)
    per_agent = a.gpus if a.gpus is not None else tuple(range(dc.count // len(agents)))
    for host, port in agents:  # the host in each id: stable, and says where the GPU is
        backend = AgentBackend(host, port, secret, tls, a.timeout_s)
        _gpus(dc, a, base_dir, built, backend, per_agent, f"{host}/")


@register(AdapterKind.SIM, DeviceKind.GPU)
def _sim_gpu(dc: DeviceClass, a: AdapterConfig, base_dir: str, built: Built) -> None:
    backend: GpuBackend
    if a.sim_control is not None:
        host, _, port = a.sim_control.rpartition(":")
        backend = RemoteSimBackend(host, int(port), a.timeout_s)
    else:
        model = dc.model or "H100 SXM"
        backend = LocalSimBackend([SimGpu(i, model=model) for i in range(dc.count)])
    _gpus(dc, a, base_dir, built, backend)


def build(config: SiteConfig) -> Built:
    """The adapters of every class that has an ``adapter`` table."""
    built = Built()
    problems: list[tuple[str, str]] = []
    for k, dc in enumerate(config.devices):
        if dc.adapter is None:
            continue
        factory = REGISTRY.get((dc.adapter.kind, dc.kind))
        if factory is None:
            valid = sorted(f"{ak.value} ({dk.value})" for ak, dk in REGISTRY)
            problems.append(
                (
                    f"devices[{k}].adapter.kind",
                    f"{dc.adapter.kind.value!r} cannot drive a {dc.kind.value}; valid: {valid}",
                )
            )
            continue
        first = len(built.adapters)
        try:
            factory(dc, dc.adapter, config.base_dir, built)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if dc.kind is DeviceKind.GPU:
            told = _told_capacity(dc, config.inference)
            stated = _stated_tokens(dc)
            for adapter in built.adapters[first:]:
                if isinstance(adapter, NvmlGpu):
                    adapter.capacity = told
                    adapter.mode_tokens_s = stated
    if problems:
        raise ConfigError("site configuration", problems)
    return built


def mode_request(dc: DeviceClass, mode: str) -> ModeRequest:
    """The device command for one unit of ``dc`` in plan mode ``mode`` (or sleep/idle)."""
    if mode in ("sleep", "idle", "off"):
        return ModeRequest("sleep")
    m = dc.mode(mode)
    clocks = m.sm_clock_mhz if m is not None else None
    return ModeRequest(
        "run", dc.device_target_w(mode), (clocks[0], clocks[1]) if clocks is not None else None
    )
