"""``gridsched fleet``: start a simulated fleet, and show a site's live telemetry."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from adapters import discovery, registry
from adapters.aio import run_async
from adapters.asic import PyasicMiner
from adapters.base import CLOCKS_UNKNOWN, Health, Telemetry
from adapters.fleet import Fleet, freeze_heap
from adapters.fleet_shards import make_fleet
from models.site import SiteConfig, load_site
from scheduler.audit.chain import StoreError
from scheduler.audit.store import Store
from scheduler.cli.report import table
from scheduler.cli.simulate import add_simulate_parser, count_at_least

log = logging.getLogger("gridsched.fleet")


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
        "serial": info.serial,
        "family": info.family,
    }


def make_model(make: str, model: str) -> str:
    """ "NVIDIA H100 SXM", not "NVIDIA NVIDIA H100 SXM": NVML's and most firmware's model
    names already begin with the make."""
    if make and model.lower().startswith(make.lower()):
        return model
    return " ".join(x for x in (make, model) if x) or "-"


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
        # Stock firmware reports no power: those units are not at 0 kW, just not metered;
        # nor are the units this sweep could not read (unreachable, unreadable).
        unmetered = sum(t.power_w is None for t in ts)
        unread = len(ids) - len(ts)
        kw = f"{power:,.1f}" + (f" +{unmetered} unmetered" if unmetered else "")
        if unread:
            kw = f"{kw} +{unread} unread" if ts else f"- ({unread} unread)"
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
                kw,
                f"{ths:,.0f}",
                f"{tok:,.0f}",
                _firmware_label(fleet, ids),
            ]
        )
    return rows


class Progress:
    """``what: done/total (seconds)`` on one line of a terminal's stderr, rewritten at most
    every ``every_s``; nothing when stderr is not a terminal (a log, a pipe)."""

    def __init__(self, what: str, stream: Any = None, every_s: float = 0.5) -> None:
        self.what, self.stream, self.every_s = what, stream or sys.stderr, every_s
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.on or (done < total and now - self.last < self.every_s):
            return
        self.last = now
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.what}: {done:,}/{total:,} ({now - self.t0:.0f} s){end}")
        self.stream.flush()


def _state_file(args: argparse.Namespace, config: SiteConfig) -> Store | None:
    """The state file whose discovery cache ``fleet status`` reads and fills: ``--db``, or
    the daemon's own when it exists; None without one, or when it cannot be opened."""
    path = args.db or config.resolve(config.daemon.state_dir) / "gridsched.db"
    if args.db is None and not path.exists():
        return None
    try:
        return Store(path)
    except StoreError as exc:
        print(f"gridsched: warning: {exc}; discovering every miner", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    config = load_site(args.config)
    built = registry.build(config)
    if not built.adapters:
        print(f"{args.config}: no device class has an [devices.adapter] table", file=sys.stderr)
        return 2
    for a in built.adapters:
        if isinstance(a, PyasicMiner):
            a.sessions = False  # read only: the LuxOS session of a daemon is left alone
    store = _state_file(args, config)
    book = discovery.IdentityBook.from_docs(store.device_identities() if store else {})
    discovery.attach(built.adapters, book)

    async def main() -> int:
        for sim in built.simulators:
            await sim.start()
        # sharded as the daemon is ([daemon] fleet_workers; 1 and "auto" on 2 cores: not)
        workers = config.daemon.fleet_workers
        fleet = make_fleet(built.adapters, built.groups, workers, concurrency=args.concurrency)
        t0 = time.perf_counter()
        await fleet.connect_all(Progress(f"connecting {len(built.adapters):,} devices"))
        connect_s = time.perf_counter() - t0
        freeze_heap()  # connected: what lives on leaves the collector's full passes
        if book.discoveries or book.reused:
            where = f"; cache in {store.path}" if store is not None else ""
            print(
                f"discovery: {book.discoveries} miners probed, {book.reused} known{where}",
                file=sys.stderr,
            )
        if store is not None:  # not through the daemon's writer: it may be running
            try:
                store.put_device_identities_now(book.changes())
            finally:
                store.close()
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
                    **_gpu_fields(fleet, st.device_id, readings.get(st.device_id)),
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
                    make_model(ident.get("make", ""), ident.get("model", "")),
                    " ".join(x for x in (ident.get("firmware"), ident.get("firmware_version")) if x)
                    or "-",
                    st.health.value,
                    t.state if t else "-",
                    f"{t.power_w:,.0f}" if t and t.power_w is not None else "-",
                    f"{t.target_w:,.0f}" if t and t.target_w is not None else "-",
                    _lock_text(t) if _is_gpu(fleet, st.device_id) else "-",
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
                    "target/limit W",  # a miner's power target, a GPU's power limit
                    "SM lock",
                    "TH/s",
                    "°C",
                    "last error",
                ],
                rows,
            )
        )
        if len(shown) > args.limit:
            print(f"... {len(shown) - args.limit} more (--limit)")


def _is_gpu(fleet: Fleet, device_id: str) -> bool:
    adapter = fleet.by_id.get(device_id)
    return adapter is not None and adapter.kind == "gpu"


def _lock_text(t: Telemetry | None) -> str:
    """A GPU's SM clock lock as read back: its range, "none" (the driver's clocks) or
    "unknown" (NVML cannot read a lock back, and a reader sets none)."""
    if t is None:
        return "-"
    lock = t.sm_clock_lock_mhz
    if lock is None:
        return "none"
    if lock == CLOCKS_UNKNOWN:
        return "unknown"
    return f"{lock[0]}-{lock[1]} MHz"


def _gpu_fields(fleet: Fleet, device_id: str, t: Telemetry | None) -> dict[str, Any]:
    """A GPU's power limit and SM clock lock read back, by name (``--json``)."""
    if t is None or not _is_gpu(fleet, device_id):
        return {}
    return {"power_limit_w": t.target_w, "sm_clock_lock": _lock_text(t).removesuffix(" MHz")}


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

    add_simulate_parser(fsub)

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
        help="the fault (docs/adapters.md, simulator faults); clear: remove every fault",
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
    st.add_argument("--config", required=True, help="site TOML file")
    st.add_argument("--json", action="store_true", help="print every device as JSON")
    st.add_argument("--all", action="store_true", help="list every device, not only unhealthy ones")
    st.add_argument(
        "--limit",
        type=count_at_least(0),
        default=50,
        help="most devices listed per sweep (default: %(default)s)",
    )
    st.add_argument("--watch", type=float, default=5.0, help="seconds between sweeps with --count")
    st.add_argument("--count", type=count_at_least(1), default=1, help="number of sweeps")
    st.add_argument(
        "--concurrency",
        type=count_at_least(1),
        default=256,
        help="devices read at once (default: %(default)s)",
    )
    st.add_argument(
        "--db",
        type=Path,
        help="state file whose discovery cache is read and filled (default: the daemon's, "
        "[daemon] state_dir/gridsched.db, when it exists)",
    )
    st.set_defaults(func=cmd_status)
