"""``gridsched fleet``: start a simulated fleet, inject faults into it, and connect to a
site's devices to show their live telemetry (what is printed:
:mod:`scheduler.cli.fleet_report`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from adapters import discovery, fds, registry
from adapters.aio import run_async
from adapters.asic import PyasicMiner
from adapters.base import Health
from adapters.fleet import freeze_heap
from adapters.fleet_shards import make_fleet
from models.site import SiteConfig, load_site
from scheduler.audit.chain import StoreError
from scheduler.audit.store import Store
from scheduler.cli.fleet_report import print_status
from scheduler.cli.options import seconds
from scheduler.cli.simulate import add_simulate_parser, count_at_least

log = logging.getLogger("gridsched.fleet")


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

    # a connection per device and per reading in flight (adapters/fds.py), as the daemon
    n = len(built.adapters)
    short = fds.short_of(fds.fleet_fds_needed(n, args.concurrency, args.concurrency))
    if short is not None:
        print(f"warning: {short}", file=sys.stderr)

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
                print_status(args, fleet, readings, connect_s, sweep_s)
        finally:
            await fleet.close()
            for sim in built.simulators:
                await sim.stop()
        return 0 if fleet.health_counts()[Health.UNREACHABLE] == 0 else 1

    return run_async(main())


def cmd_fault(args: argparse.Namespace) -> int:
    host, _, port = args.control.rpartition(":")
    host = host or "127.0.0.1"  # a port alone: the simulator on this host
    if not port.isdigit():
        print(f"gridsched: error: --control {args.control!r}: expected HOST:PORT", file=sys.stderr)
        return 2
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
    fa.add_argument(
        "--control",
        default="127.0.0.1:4029",
        help="HOST:PORT of the simulator's control port, or the port alone on this host "
        "(default: %(default)s)",
    )
    fa.add_argument(
        "--duration",
        type=seconds,
        help="how long the fault lasts (30, 30s, 10min; default: until cleared)",
    )
    fa.add_argument(
        "--delay",
        type=seconds,
        help="slow: time before each answer; slow-write: until applied (seconds, or 2s, 1min)",
    )
    fa.set_defaults(func=cmd_fault)

    st = fsub.add_parser("status", help="connect to a site's devices and show live telemetry")
    st.add_argument("--config", required=True, help="site TOML file")
    st.add_argument("--json", action="store_true", help="print every device as JSON")
    st.add_argument(
        "--all",
        action="store_true",
        help="list every device, not only unhealthy ones (at most --limit of them)",
    )
    st.add_argument(
        "--limit",
        type=count_at_least(0),
        default=50,
        help="most devices listed per sweep (default: %(default)s)",
    )
    st.add_argument(
        "--watch",
        type=seconds,
        default=5.0,
        help="time between sweeps with --count (seconds, or 5s, 1min)",
    )
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
