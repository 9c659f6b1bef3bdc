"""``gridsched fleet simulate``: miners and GPUs simulated on loopback, in one process or,
past ``--per-process`` miners, in forked workers behind one control port."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.aio import run_async
from adapters.fds import fd_limit
from adapters.fleet import freeze_heap
from adapters.sim.fleet import FIRMWARE, MinerSpec, SimFleet, plan_miners
from adapters.sim.gpu import SimGpu
from adapters.sim.miner import presets_for
from adapters.sim.shards import DEFAULT_PER_PROCESS, ShardedFleet, ShardFailed, max_per_process
from adapters.sim.variants import VARIANTS, parse_option
from models.device_adapter import compact_hosts
from models.errors import GridschedError
from scheduler.cli.options import seconds


def _port(text: str) -> int:
    """A TCP port, 0-65535 (a larger one was taken modulo 65536 by the OS: 99999 bound
    34463 without a word)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n}: a port is 0-65535 (0: any free port)")
    return n


def site_for_simulator(
    miners: Sequence[MinerSpec], gpus: Sequence[SimGpu], control: str | None
) -> str:
    """A site TOML that drives this simulated fleet through pyasic (and its GPUs)."""
    by_model: dict[str, list[str]] = {}
    for m in miners:
        by_model.setdefault(m.model, []).append(m.host)
    watts = {
        model: next(p.watts for p in presets_for(model) if p.name == "default")
        for model in by_model
    }
    power_kw = sum(watts[m.model] for m in miners) / 1000.0
    power_kw += 0.85 * len(gpus)
    lines = [
        "# Written by `gridsched fleet simulate`: the simulated miners on loopback, reached",
        "# through pyasic exactly like real ones, and the simulator's GPUs.",
        "[site]",
        'name = "Simulated fleet"',
        'timezone = "America/Chicago"',
        f"interconnect_kw = {max(100.0, round(power_kw * 1.1)):g}",
        "pue = 1.05",
        "",
        "[mining]",
        "hashprice_usd_per_ths_day = 0.05",
        "",
        "[tariff.dr_levels_kw]",
        f'"1" = {round(power_kw * 0.6):g}',
        f'"2" = {round(power_kw * 0.3):g}',
        f'"3" = {round(power_kw * 0.1):g}',
    ]
    for model, hosts in by_model.items():
        name = model.lower().replace("antminer ", "").replace(" ", "")
        lines += [
            "",
            "[[devices]]",
            f'name = "{name}"',
            'kind = "asic"',
            f'model = "{model}"',
            f"count = {len(hosts)}",
            "min_on_s = 600",
            "[devices.adapter]",
            'kind = "pyasic"',
            "hosts = [" + ", ".join(f'"{h}"' for h in compact_hosts(hosts)) + "]",
        ]
    if gpus:
        lines += [
            "",
            "[inference]",
            f"committed_tokens_s = {round(len(gpus) * 150)}",
            "committed_usd_per_mtok = 0.6",
            "",
            "[[devices]]",
            'name = "h100"',
            'kind = "gpu"',
            f'model = "{gpus[0].model}"',
            "power_caps_w = [700, 500, 350]",
            f"count = {len(gpus)}",
            "[devices.adapter]",
            'kind = "sim"',
        ]
        if control:
            lines.append(f'sim_control = "{control}"')
    return "\n".join(lines) + "\n"


def _firmware_list(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in FIRMWARE]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"firmware {', '.join(bad) or repr(text)}: valid are {', '.join(FIRMWARE)}"
        )
    return names


def _variant(text: str) -> tuple[str, str, Any]:
    try:
        return parse_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _variant_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The control requests that set ``--variant``s; a firmware not simulated is an error."""
    missing = sorted({fw for fw, _, _ in args.variant} - set(args.firmware))
    if missing:
        raise ValueError(
            f"--variant for {', '.join(missing)}, which --firmware does not simulate "
            f"({', '.join(args.firmware)})"
        )
    return [
        {"op": "variant", "firmware": fw, "name": name, "value": value}
        for fw, name, value in args.variant
    ]


KINDS = {
    "luxos": "LuxOS",
    "antminer": "stock Antminer",
    "braiins": "Braiins OS+",
    "whatsminer": "Whatsminer",
    "vnish": "VNish",
    "whatsminer3": "Whatsminer (API v3)",
    "auradine": "Auradine",
}


def _more_ports(firmware: Sequence[str]) -> str:
    """The listening ports besides 4028 that a user must reach: 80, 4433 (API v3), 8080."""
    ports = (
        (["80"] if {"antminer", "vnish"} & set(firmware) else [])
        + (["4433"] if "whatsminer3" in firmware else [])
        + (["8080"] if "auradine" in firmware else [])
    )
    return "".join(f" and {p}" for p in ports)


def cmd_simulate(args: argparse.Namespace) -> int:
    per_process = args.per_process
    if per_process is None:  # as many as the open-files limit allows, up to the default
        per_process = max(
            1, min(DEFAULT_PER_PROCESS, max_per_process(args.firmware, fd_limit()[1]))
        )
    if per_process < 1:
        raise ValueError(f"--per-process {per_process}: must be at least 1")
    if args.miners > per_process:
        return _simulate_sharded(args, per_process)
    sim = SimFleet.build(
        args.miners,
        args.gpus,
        base=args.base,
        sleep_s=args.sleep_s,
        wake_s=args.wake_s,
        reboot_s=args.reboot_s,
        control_port=args.control_port,
        firmware=args.firmware,
    )

    requests = _variant_requests(args)

    async def main() -> None:
        await sim.start()
        for req in requests:
            sim.handle(req)
        freeze_heap()
        control = f"127.0.0.1:{sim.control_port}" if sim.control_port else None
        first, last = (
            sim.miners[0].host if sim.miners else "-",
            sim.miners[-1].host if sim.miners else "-",
        )
        what = " and ".join(KINDS[f] for f in args.firmware)
        print(
            f"simulating {len(sim.miners)} {what} miners on {first} .. {last} port 4028"
            f"{_more_ports(args.firmware)}, "
            f"{len(sim.gpus)} GPUs; control {control or 'off'}",
            flush=True,
        )
        if args.write_site:
            specs = [MinerSpec(m.host, sim.firmware_of(m), m.model) for m in sim.miners]
            Path(args.write_site).write_text(site_for_simulator(specs, sim.gpus, control))
            print(f"wrote {args.write_site}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await stop.wait()
        await sim.stop()

    run_async(main())
    return 0


def _simulate_sharded(args: argparse.Namespace, per_process: int) -> int:
    """More miners than one process should hold: forked workers, one control port here."""
    requests = _variant_requests(args)
    specs = plan_miners(args.miners, args.base, firmware=args.firmware)
    sim = ShardedFleet(
        specs,
        [SimGpu(i) for i in range(args.gpus)],
        per_process,
        {"sleep_s": args.sleep_s, "wake_s": args.wake_s, "reboot_s": args.reboot_s},
        control_port=args.control_port,
    )
    t0 = time.perf_counter()
    sim.spawn()  # before any event loop runs here

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        starting = asyncio.create_task(sim.start())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # SIGINT/SIGTERM while the workers were still binding
                starting.cancel()
                return 0
            try:
                starting.result()
            except (ShardFailed, GridschedError, OSError) as exc:
                print(f"gridsched: error: {exc}; stopping the fleet", file=sys.stderr)
                return 2
            for req in requests:
                answer = await sim.handle(req)
                if not answer.get("ok"):
                    print(f"gridsched: error: --variant: {answer}", file=sys.stderr)
                    return 2
            control = f"127.0.0.1:{sim.control_port}" if sim.control_port else None
            what = " and ".join(KINDS[f] for f in args.firmware)
            print(
                f"simulating {len(specs)} {what} miners on {specs[0].host} .. {specs[-1].host}"
                f" port 4028{_more_ports(args.firmware)}, "
                f"{len(sim.gpus)} GPUs; control {control or 'off'}; "
                f"{len(sim.shards)} worker processes of up to {per_process} miners; "
                f"started in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            for sh in sim.shards:
                assert sh.process is not None
                print(
                    f"worker {sh.index}: pid {sh.process.pid}, {len(sh.specs)} miners "
                    f"{sh.span}, control 127.0.0.1:{sh.control_port}",
                    flush=True,
                )
            if args.write_site:
                Path(args.write_site).write_text(site_for_simulator(specs, sim.gpus, control))
                print(f"wrote {args.write_site}", flush=True)
            if args.duration:
                loop.call_later(args.duration, stop.set)
            failed = asyncio.create_task(sim.wait_failure())
            await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                print(f"gridsched: error: {failed.result()}; stopping the fleet", file=sys.stderr)
                return 1
            failed.cancel()
            return 0
        finally:
            stopped.cancel()
            await sim.stop()

    return run_async(main())


def count_at_least(least: int) -> Any:
    """An argparse type: a whole number >= ``least``, refused by name otherwise (a negative
    fleet simulated nothing; a concurrency of 0 waited forever)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value

    return parse


def add_simulate_parser(fsub: Any) -> None:
    si = fsub.add_parser("simulate", help="run miner and GPU simulators on loopback")
    si.add_argument(
        "--miners",
        type=count_at_least(0),
        default=1000,
        help="simulated miners (default: %(default)s)",
    )
    si.add_argument(
        "--gpus", type=count_at_least(0), default=0, help="simulated GPUs (default: %(default)s)"
    )
    si.add_argument("--base", default="127.1.0.0", help="miners get loopback addresses after this")
    si.add_argument(
        "--control-port",
        type=_port,
        default=4029,
        help="port of the control API on 127.0.0.1 (GPUs, faults, state); 0: any free port "
        "(default: %(default)s)",
    )
    si.add_argument("--sleep-s", type=float, default=5.0, help="time to reach sleep")
    si.add_argument("--wake-s", type=float, default=12.0, help="time to wake to full hashrate")
    si.add_argument(
        "--reboot-s",
        type=float,
        default=30.0,
        help="time a simulated reboot takes (default: %(default)s)",
    )
    si.add_argument(
        "--firmware",
        type=_firmware_list,
        default=("luxos",),
        help=f"comma-separated, spread over the miners in blocks: {', '.join(FIRMWARE)} "
        "(a stock Antminer also serves its web CGI on port 80: needs root or "
        "CAP_NET_BIND_SERVICE)",
    )
    si.add_argument(
        "--per-process",
        type=int,
        help="miners per worker process: a larger fleet is split over forked workers "
        f"(default {DEFAULT_PER_PROCESS}, fewer when the open-files limit needs it)",
    )
    si.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="FIRMWARE:NAME=VALUE",
        help="a firmware build variant on every miner of that firmware, repeatable: "
        + "; ".join(f"{fw}: {', '.join(fields)}" for fw, fields in VARIANTS.items())
        + " (docs/adapters.md, 'Build variants')",
    )
    si.add_argument("--write-site", help="write a site TOML that drives this fleet")
    si.add_argument("--duration", type=seconds, help="stop after this long (30, 30s, 10min)")
    si.set_defaults(func=cmd_simulate)
