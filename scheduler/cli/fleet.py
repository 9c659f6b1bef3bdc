"""``gridsched fleet``: start a simulated fleet, and show a site's live telemetry."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from adapters import registry
from adapters.base import Health, Telemetry
from adapters.fleet import Fleet, freeze_heap
from adapters.sim.fleet import FIRMWARE, MinerSpec, SimFleet, fd_limit, plan_miners
from adapters.sim.gpu import SimGpu
from adapters.sim.miner import presets_for
from adapters.sim.shards import DEFAULT_PER_PROCESS, ShardedFleet, ShardFailed, max_per_process
from models.errors import GridschedError
from models.site import load_site
from scheduler.cli.report import table

T = TypeVar("T")
log = logging.getLogger("gridsched.fleet")


def _quiet_orphans(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Library tasks nobody awaited (pyasic's discovery probes) fail on odd device replies;
    one line in the log says so instead of a traceback per task."""
    exc = context.get("exception")
    task = context.get("future") or context.get("task")
    name = getattr(getattr(task, "get_coro", lambda: None)(), "__qualname__", "?")
    log.warning("background task %s failed: %s: %s", name, type(exc).__name__, exc)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (about 2x less CPU per device call)."""

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(_quiet_orphans)
        return await coro

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


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
            "hosts = [" + ", ".join(f'"{h}"' for h in hosts) + "]",
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


KINDS = {
    "luxos": "LuxOS",
    "antminer": "stock Antminer",
    "braiins": "Braiins OS+",
    "whatsminer": "Whatsminer",
}


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

    async def main() -> None:
        await sim.start()
        freeze_heap()
        control = f"127.0.0.1:{sim.control_port}" if sim.control_port else None
        first, last = (
            sim.miners[0].host if sim.miners else "-",
            sim.miners[-1].host if sim.miners else "-",
        )
        what = " and ".join(KINDS[f] for f in args.firmware)
        print(
            f"simulating {len(sim.miners)} {what} miners on {first} .. {last} port 4028"
            f"{' and 80' if 'antminer' in args.firmware else ''}, "
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
            control = f"127.0.0.1:{sim.control_port}" if sim.control_port else None
            what = " and ".join(KINDS[f] for f in args.firmware)
            print(
                f"simulating {len(specs)} {what} miners on {specs[0].host} .. {specs[-1].host}"
                f" port 4028{' and 80' if 'antminer' in args.firmware else ''}, "
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


def _identity(fleet: Fleet, device_id: str) -> dict[str, str]:
    """What discovery found: make, model, firmware (family) and its version."""
    info = fleet.by_id[device_id].info
    if info is None:
        return {}
    return {
        "make": info.make,
        "model": info.model,
        "firmware": info.firmware,
        "firmware_version": info.firmware_version,
        "family": info.family,
    }


def _firmware_label(fleet: Fleet, ids: list[str]) -> str:
    """The firmware of a class's devices, in words ("Stock 2023-12-14 ...", or a count)."""
    seen: dict[str, int] = {}
    for i in ids:
        info = fleet.by_id[i].info
        if info is not None and (info.firmware or info.make):
            label = " ".join(x for x in (info.make, info.firmware, info.firmware_version) if x)
            seen[label] = seen.get(label, 0) + 1
    if not seen:
        return "-"
    if len(seen) == 1:
        return next(iter(seen))[:48]
    return f"{len(seen)} kinds"


def _summary(fleet: Fleet, readings: dict[str, Telemetry]) -> list[list[str]]:
    rows = []
    for group in sorted({st.group for st in fleet.status.values()}):
        ids = fleet.ids(group)
        health = {h: 0 for h in Health}
        for i in ids:
            health[fleet.status[i].health] += 1
        other = health[Health.REJECTED] + health[Health.UNCONFIRMED]
        ts = [readings[i] for i in ids if i in readings]
        power = sum(t.power_w or 0.0 for t in ts) / 1000.0
        # Stock firmware reports no power: those units are not at 0 kW, just not metered.
        unmetered = sum(t.power_w is None for t in ts)
        ths = sum(t.hashrate_ths or 0.0 for t in ts)
        tok = sum(t.tokens_s or 0.0 for t in ts)
        running = sum(t.state == "running" for t in ts)
        sleeping = sum(t.state == "sleeping" for t in ts)
        rows.append(
            [
                group,
                str(len(ids)),
                str(health[Health.OK]),
                str(health[Health.DEGRADED]),
                str(health[Health.UNREACHABLE]),
                str(health[Health.UNREADABLE]),
                str(other),
                str(running),
                str(sleeping),
                f"{power:,.1f}" + (f" +{unmetered} unmetered" if unmetered else ""),
                f"{ths:,.0f}",
                f"{tok:,.0f}",
                _firmware_label(fleet, ids),
            ]
        )
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    config = load_site(args.config)
    built = registry.build(config)
    if not built.adapters:
        print(f"{args.config}: no device class has an [devices.adapter] table", file=sys.stderr)
        return 2

    async def main() -> int:
        for sim in built.simulators:
            await sim.start()
        fleet = Fleet(built.adapters, built.groups, concurrency=args.concurrency)
        t0 = time.perf_counter()
        await fleet.connect_all()
        connect_s = time.perf_counter() - t0
        try:
            for n in range(max(1, args.count)):
                if n:
                    await asyncio.sleep(args.watch)
                t0 = time.perf_counter()
                readings = await fleet.read_all()
                sweep_s = time.perf_counter() - t0
                _print_status(args, fleet, readings, connect_s, sweep_s)
        finally:
            await fleet.close()
            for sim in built.simulators:
                await sim.stop()
        return 0 if fleet.health_counts()[Health.UNREACHABLE] == 0 else 1

    return run_async(main())


def _print_status(
    args: argparse.Namespace,
    fleet: Fleet,
    readings: dict[str, Telemetry],
    connect_s: float,
    sweep_s: float,
) -> None:
    if args.json:
        doc = {
            "at": time.time(),
            "sweep_s": round(sweep_s, 4),
            "devices": [
                {
                    "id": st.device_id,
                    "class": st.group,
                    "health": st.health.value,
                    "error": st.last_error,
                    **_identity(fleet, st.device_id),
                    **(
                        {
                            k: v
                            for k, v in readings[st.device_id].__dict__.items()
                            if k not in ("device_id",)
                        }
                        if st.device_id in readings
                        else {}
                    ),
                }
                for st in fleet.status.values()
            ],
        }
        json.dump(doc, sys.stdout, default=list)
        sys.stdout.write("\n")
        return
    head = [
        "class",
        "units",
        "ok",
        "degraded",
        "unreachable",
        "unreadable",
        "rejected/unconfirmed",
        "running",
        "sleeping",
        "kW",
        "TH/s",
        "tokens/s",
        "firmware",
    ]
    print(table(head, _summary(fleet, readings)))
    print(f"connected in {connect_s:.2f} s; telemetry sweep {sweep_s * 1000:.0f} ms")
    shown = [st for st in fleet.status.values() if args.all or st.health is not Health.OK]
    if shown:
        rows = []
        for st in shown[: args.limit]:
            t = readings.get(st.device_id)
            ident = _identity(fleet, st.device_id)
            rows.append(
                [
                    st.device_id,
                    " ".join(x for x in (ident.get("make"), ident.get("model")) if x) or "-",
                    " ".join(x for x in (ident.get("firmware"), ident.get("firmware_version")) if x)
                    or "-",
                    st.health.value,
                    t.state if t else "-",
                    f"{t.power_w:,.0f}" if t and t.power_w is not None else "-",
                    f"{t.target_w:,.0f}" if t and t.target_w is not None else "-",
                    f"{t.hashrate_ths:,.1f}" if t and t.hashrate_ths is not None else "-",
                    f"{t.max_temp_c:.0f}" if t and t.max_temp_c is not None else "-",
                    (st.last_error or "")[:80],
                ]
            )
        print(
            table(
                [
                    "device",
                    "make/model",
                    "firmware",
                    "health",
                    "state",
                    "W",
                    "target W",
                    "TH/s",
                    "°C",
                    "last error",
                ],
                rows,
            )
        )
        if len(shown) > args.limit:
            print(f"... {len(shown) - args.limit} more (--limit)")


def cmd_fault(args: argparse.Namespace) -> int:
    host, _, port = args.control.rpartition(":")
    if args.kind == "clear":
        req: dict[str, Any] = {"op": "clear", "hosts": args.hosts or "all"}
    else:
        req = {"op": "fault", "hosts": args.hosts or "all", "kind": args.kind}
        if args.duration is not None:
            req["duration_s"] = args.duration
        if args.delay is not None:
            req["delay_s"] = args.delay

    async def send() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
        writer.close()
        out: dict[str, Any] = json.loads(line)
        return out

    try:
        out = asyncio.run(send())
    except (OSError, ValueError) as exc:
        print(f"gridsched: error: simulator control {args.control}: {exc}", file=sys.stderr)
        return 2
    if not out.get("ok"):
        print(f"gridsched: error: {out.get('error')}", file=sys.stderr)
        return 2
    print(f"{args.kind}: {', '.join(args.hosts) if args.hosts else 'all miners'}")
    return 0


def add_parsers(sub: Any) -> None:
    fl = sub.add_parser("fleet", help="simulated fleet and live telemetry")
    fsub = fl.add_subparsers(dest="fleet_command", required=True)

    si = fsub.add_parser("simulate", help="run miner and GPU simulators on loopback")
    si.add_argument("--miners", type=int, default=1000)
    si.add_argument("--gpus", type=int, default=0)
    si.add_argument("--base", default="127.1.0.0", help="miners get loopback addresses after this")
    si.add_argument("--control-port", type=int, default=4029)
    si.add_argument("--sleep-s", type=float, default=5.0, help="time to reach sleep")
    si.add_argument("--wake-s", type=float, default=12.0, help="time to wake to full hashrate")
    si.add_argument("--reboot-s", type=float, default=30.0)
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
    si.add_argument("--write-site", help="write a site TOML that drives this fleet")
    si.add_argument("--duration", type=float, help="stop after this many seconds")
    si.set_defaults(func=cmd_simulate)

    fa = fsub.add_parser("fault", help="inject or clear a fault on simulated miners")
    fa.add_argument(
        "kind",
        choices=[
            "refuse",
            "hang",
            "slow",
            "malformed",
            "reboot",
            "dropout",
            "ignore",
            "garble",
            "slow-write",
            "clear",
        ],
    )
    fa.add_argument("hosts", nargs="*", help="miner addresses (default: all)")
    fa.add_argument("--control", default="127.0.0.1:4029", help="the simulator's control port")
    fa.add_argument(
        "--duration", type=float, help="seconds the fault lasts (default: until cleared)"
    )
    fa.add_argument(
        "--delay", type=float, help="slow: seconds before each answer; slow-write: until applied"
    )
    fa.set_defaults(func=cmd_fault)

    st = fsub.add_parser("status", help="connect to a site's devices and show live telemetry")
    st.add_argument("--config", required=True)
    st.add_argument("--json", action="store_true")
    st.add_argument("--all", action="store_true", help="list every device, not only unhealthy ones")
    st.add_argument("--limit", type=int, default=50)
    st.add_argument("--watch", type=float, default=5.0, help="seconds between sweeps with --count")
    st.add_argument("--count", type=int, default=1, help="number of sweeps")
    st.add_argument("--concurrency", type=int, default=256)
    st.set_defaults(func=cmd_status)
