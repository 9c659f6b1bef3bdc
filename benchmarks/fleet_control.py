"""Command a mixed fleet of simulated miners through the daemon's controller, per family.

The simulated miners run in a process of their own (each family's protocol simulator from
``adapters.sim``, every miner on its own loopback address), the controller in this one: a
``Fleet`` of ``PyasicMiner`` adapters with the daemon's bounds on commands and readings in
flight, its verdicts taken from the fleet's read-back (``Fleet.on_outcome``) as the daemon
takes them. Every round: a telemetry sweep; curtail (sleep) every miner; read back until
no command is pending (each is confirmed, or unconfirmed past its family's deadline,
``models.firmware``); stage the coming wake where the firmware can (``Fleet.stage``); wake
every miner at a power target, a different one from the last round's; read back again.

Per family and overall it prints, for each round's curtail (sleep) and wake:

- received: from the start of the round's commands until the last of them reached its
  simulated miner (the simulator's own clock of the write's arrival: ``commanded_at``,
  stamped when a sleep, wake or profile change reaches the simulated hardware); a
  command whose miner never got it is counted as "not received" instead;
- acknowledged: from the start until the last answer came back to the controller (per
  family: the slowest acknowledgement of the family's miners; overall: the whole
  ``Fleet.apply``); one command's latency;
- the verdicts: confirmed within the family's deadline, confirmed late, unconfirmed,
  failed or rejected; first attempts that failed (the fleet retried them);
- false "done": a command confirmed whose miner, asked through the simulator's control
  port after the read-back, is not in that mode (phase, and the preset's watts where a
  target was set); and "accepted, not in effect": the same question for every accepted
  command, which is what "done" meant before read-back;
- the controller's CPU seconds per command (``time.process_time``: this process only).

``--ignore-share`` gives that share of each family's miners the simulator's ``ignore`` fault
(commands answered as done, nothing changes). ``--deadline-scale`` shortens the families'
deadlines in step with the simulator's shortened reactions. ``--session-ttl-s`` makes the
simulated LuxOS sessions expire when unused that long (LuxOS: about 60 s); the adapter then
renews an idle session at half of it (30 s of 60 s in the daemon), ``--gap-s`` spaces the
commands beyond the expiry and the fleet is polled every quarter of it (15 s of 60 s).

The fleet's bring-up is ``benchmarks/fleet_setup.py``, the counting of what came back
``benchmarks/fleet_tally.py``, the printed tables ``benchmarks/fleet_report.py``.

    .venv/bin/python benchmarks/fleet_control.py --rounds 20
    .venv/bin/python benchmarks/fleet_control.py --mix luxos:20 --rounds 100 \\
        --session-ttl-s 0.5 --gap-s 0.6
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.aio import run_async  # noqa: E402
from adapters.asic import PyasicMiner  # noqa: E402
from adapters.base import ModeRequest  # noqa: E402
from adapters.fleet import Fleet, Outcome  # noqa: E402
from adapters.sim.fleet import FIRMWARE, MinerSpec  # noqa: E402
from benchmarks.fleet_report import report  # noqa: E402
from benchmarks.fleet_setup import connect  # noqa: E402
from benchmarks.fleet_sim import (  # noqa: E402
    DEFAULT_MIX,
    parse_mix,
    plan,
    start_sim,
    truth,
)
from benchmarks.fleet_sim import profile as sim_profiler  # noqa: E402
from benchmarks.fleet_tally import Tallies  # noqa: E402
from benchmarks.measure import cpu_sample, steal_pct  # noqa: E402
from models.catalog import find_asic  # noqa: E402
from models.config_daemon import Daemon  # noqa: E402
from models.firmware import CAPABILITIES, SIM_FIRMWARE_FAMILY  # noqa: E402

TARGETS_W = (3000.0, 3500.0)  # wake targets, in turn


def wake_target_w(firmware: str, model: str, want_w: float) -> float:
    """``want_w``, or the highest target the miner's firmware takes where that is lower
    (``Capabilities.target_max_share``: a Whatsminer's limit is held at its standard
    power, so a wake above it never reads back; the plan offers none)."""
    family = SIM_FIRMWARE_FAMILY.get(firmware)
    share = CAPABILITIES[family].target_max_share if family is not None else None
    if share is None:
        return want_w
    return min(want_w, share * find_asic(model).power_w)


class Bench:
    def __init__(self, args: argparse.Namespace, specs: list[MinerSpec], port: int) -> None:
        self.args, self.port = args, port
        self.family = {f"{s.firmware}/{s.host}": s.firmware for s in specs}
        self.host = {f"{s.firmware}/{s.host}": s.host for s in specs}
        self.model = {f"{s.firmware}/{s.host}": s.model for s in specs}
        self.tallies = Tallies(self.family, self.host)
        self.tally = self.tallies.by_family
        self.errors = self.tallies.errors
        self.verdicts: list[Outcome] = []
        #: The controller's CPU per command, each round's mean, by action (sleep, wake).
        self.cpu_per_command_s: dict[str, list[float]] = defaultdict(list)
        #: The simulator's, the same way (its process's CPU while the commands were in
        #: flight, over the commands; to one clock tick, 10 ms, over the round's commands).
        self.sim_cpu_per_command_s: dict[str, list[float]] = defaultdict(list)
        self.read_cpu_s = 0.0  # the controller's CPU in the read-back polls
        self.readings = 0  # readings asked for in them
        self.sweep_s: list[float] = []
        self.steal: list[float | None] = []
        #: The event loop's lag while commands were in flight (a 10 ms sleep's overshoot):
        #: how long a ready callback, a command's next step, waited for the CPU.
        self.loop_lag_s: list[float] = []
        #: CPU seconds per wall second while commands were in flight, of this process and
        #: of the simulator's (one core each at most): well below 1 while calls time out
        #: says the processes waited for a CPU the host gave to others.
        self.cpu_share: dict[str, list[float]] = defaultdict(list)
        renew_s = args.session_ttl_s / 2 if math.isfinite(args.session_ttl_s) else None
        if args.renew_s is not None:
            renew_s = args.renew_s
        miners = []
        for s in specs:
            m = PyasicMiner(f"{s.firmware}/{s.host}", s.host, timeout_s=args.timeout_s)
            if renew_s is not None:
                m.session_renew_s = renew_s
            miners.append(m)
        self.fleet = Fleet(
            miners,
            self.family,
            concurrency=args.concurrency,
            read_concurrency=args.read_concurrency,
            on_outcome=self.verdicts.append,
        )
        self.order = command_order(self.family, args.order)
        self.deadline_s: dict[str, float] = {}
        self.last_command = -math.inf
        self.min_spacing_s = math.inf  # shortest time between two rounds of commands
        #: With --profile: the controller's commands (not the readings) under cProfile.
        self.profile = cProfile.Profile(time.process_time) if args.profile else None

    async def connect(self) -> None:
        await connect(self)

    async def settle(self) -> None:
        """Poll as the daemon does until no command is pending and ``--gap-s`` has passed
        since the last one: the commands' miners while any is pending, the whole fleet while
        the gap runs (a reading renews an idle LuxOS session)."""
        gap_s, poll_s = self.args.gap_s, self.args.poll_s
        while self.fleet.pending or time.monotonic() - self.last_command < gap_s:
            await asyncio.sleep(poll_s)
            ids = list(self.fleet.pending) if self.fleet.pending and not gap_s else None
            c0 = time.process_time()
            await self.fleet.read_all(ids)
            self.read_cpu_s += time.process_time() - c0
            self.readings += len(ids) if ids is not None else len(self.family)

    def _spaced(self) -> None:
        self.min_spacing_s = min(self.min_spacing_s, time.monotonic() - self.last_command)

    async def command(self, action: str, requests: dict[str, ModeRequest]) -> float:
        """Send, then settle; tally the verdicts against the simulator's own state."""
        self.verdicts.clear()
        if self.args.sim_profile:  # on before the clocks start: its round trip not counted
            await sim_profiler(self.port, on=True)
        w0 = time.time()  # the simulator stamps arrivals in unix time
        c0, t0 = time.process_time(), time.perf_counter()
        cpu0 = cpu_sample()
        self._spaced()
        if self.profile is not None:
            self.profile.enable()
        lag = asyncio.ensure_future(self._sample_lag())
        sim0 = proc_cpu_s(self.args.sim_pid)
        try:
            outs = await self.fleet.apply(requests)
        finally:
            lag.cancel()
        apply_s = time.perf_counter() - t0
        self.cpu_share["controller"].append((time.process_time() - c0) / apply_s)
        sim_s = proc_cpu_s(self.args.sim_pid) - sim0
        if self.args.sim_profile:
            await sim_profiler(self.port, on=False)
        self.cpu_share["simulator"].append(sim_s / apply_s)
        self.sim_cpu_per_command_s[action].append(sim_s / max(1, len(requests)))
        if self.profile is not None:
            self.profile.disable()
        wall_s = time.perf_counter() - t0
        self.cpu_per_command_s[action].append((time.process_time() - c0) / max(1, len(outs)))
        if action == "sleep":
            self.steal.append(steal_pct(cpu0, cpu_sample()))
        self.last_command = time.monotonic()
        self.tallies.answered(action, outs, w0, wall_s)
        await self.settle()
        rows = await truth(self.port)
        self.tallies.received(action, w0, outs, rows)
        self.tallies.judged(action, outs, self.verdicts, rows, self.deadline_s)
        return wall_s

    async def _sample_lag(self) -> None:
        """The loop's lag, sampled every 10 ms while the commands are in flight."""
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.loop_lag_s.append(time.perf_counter() - t - 0.01)

    async def round(self, r: int) -> str:
        ids = self.order
        t = time.perf_counter()
        readings = await self.fleet.read_all()
        self.sweep_s.append(time.perf_counter() - t)
        sleep_s = await self.command("sleep", {i: ModeRequest("sleep") for i in ids})
        wake = {
            i: ModeRequest("run", wake_target_w(self.family[i], self.model[i], TARGETS_W[r % 2]))
            for i in ids
        }
        staged_ms = ""
        if self.args.stage:
            t = time.perf_counter()
            staged = await self.fleet.stage(wake)
            staged_ms = f"staged {len(staged)} in {(time.perf_counter() - t) * 1000:.0f} ms; "
            if staged:
                self._spaced()
                self.last_command = time.monotonic()
            for o in staged:
                for tl in self.tallies.both(o.device_id):
                    tl.stage_failed += not o.ok or o.attempts > 1
            await self.settle()
        wake_s = await self.command("wake", wake)
        st = self.steal[-1]
        return (
            f"round {r + 1:3d}: sweep {self.sweep_s[-1] * 1000:5.0f} ms ({len(readings)} read), "
            f"sleep commanded {sleep_s * 1000:5.0f} ms; {staged_ms}"
            f"wake commanded {wake_s * 1000:5.0f} ms"
            + ("" if st is None else f"; host steal {st:.0f} %")
        )


async def run(args: argparse.Namespace, specs: list[MinerSpec], port: int) -> Bench:
    b = Bench(args, specs, port)
    await b.connect()
    for r in range(args.rounds):
        print(await b.round(r), flush=True)
    await b.fleet.close()
    return b


def command_order(family: dict[str, str], order: str) -> list[str]:
    """The order the round's commands are handed to ``Fleet.apply``: the mix's
    (``grouped``: every miner of its first family, then the next family's), or one of each
    family in turn (``interleaved``), so that no stretch of the batch is one family's alone."""
    ids = list(family)
    if order == "grouped":
        return ids
    by_family: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        by_family[family[i]].append(i)
    out: list[str] = []
    for k in range(max(map(len, by_family.values()), default=0)):
        out += [members[k] for members in by_family.values() if k < len(members)]
    return out


def proc_cpu_s(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` (/proc/PID/stat); NaN if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> Bench:
    d = Daemon()
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--mix",
        type=parse_mix,
        default=parse_mix(DEFAULT_MIX),
        help=f"FIRMWARE:COUNT,... (default {DEFAULT_MIX}); firmware: " + ", ".join(FIRMWARE),
    )
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=d.command_concurrency,
        help="commands in flight (the daemon's command_concurrency)",
    )
    ap.add_argument(
        "--read-concurrency",
        type=int,
        default=d.read_concurrency,
        help="readings in flight (the daemon's read_concurrency)",
    )
    ap.add_argument(
        "--order",
        choices=("grouped", "interleaved"),
        default="grouped",
        help="commands handed to the fleet family by family (the mix's order) or one of each "
        "family in turn (default grouped)",
    )
    ap.add_argument("--timeout-s", type=float, default=3.0, help="adapter timeout per call")
    ap.add_argument("--sleep-s", type=float, default=1.0, help="simulated time to sleep")
    ap.add_argument("--wake-s", type=float, default=2.0, help="simulated time to wake")
    ap.add_argument("--base", default="127.20.0.0")
    ap.add_argument(
        "--no-stage",
        dest="stage",
        action="store_false",
        help="do not stage the wake's profile while the miners sleep",
    )
    ap.add_argument(
        "--ignore-share",
        type=float,
        default=0.0,
        help="share of each family's miners with the 'ignore' fault",
    )
    ap.add_argument(
        "--deadline-scale",
        type=float,
        default=1.0,
        help="multiply each family's read-back deadline by this",
    )
    ap.add_argument(
        "--session-ttl-s",
        type=float,
        default=math.inf,
        help="simulated LuxOS sessions end unused this long (default never)",
    )
    ap.add_argument(
        "--renew-s",
        type=float,
        help="adapter renews an idle LuxOS session after this (default: half the TTL; inf: never)",
    )
    ap.add_argument(
        "--gap-s",
        type=float,
        default=0.0,
        help="at least this long between commands (the fleet polled meanwhile)",
    )
    ap.add_argument("--poll-s", type=float, help="read-back poll (default 0.1 s; TTL/4 with a TTL)")
    ap.add_argument("--profile", help="write a cProfile of the controller's commands here")
    ap.add_argument(
        "--sim-profile",
        help="write a cProfile of the simulator's process while the commands are in flight here",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.ignore_share <= 1:
        ap.error(f"--ignore-share {args.ignore_share}: between 0 and 1")
    if args.poll_s is None:
        args.poll_s = args.session_ttl_s / 4 if math.isfinite(args.session_ttl_s) else 0.1
    specs = plan(args.mix, args.base)
    timings = {"sleep_s": args.sleep_s, "wake_s": args.wake_s, "session_ttl_s": args.session_ttl_s}
    print(
        f"load average {os.getloadavg()}; {len(specs)} miners: "
        + ", ".join(f"{fw} {n}" for fw, n in args.mix)
    )
    sim_profile = str(Path(args.sim_profile).resolve()) if args.sim_profile else None
    proc, port = start_sim(specs, timings, sim_profile)
    args.sim_pid = proc.pid
    try:
        b = run_async(run(args, specs, port))
    finally:
        proc.terminate()
        proc.join(30)
    report(b, args.rounds)
    print(
        "simulator CPU per command: "
        + ", ".join(
            f"{k} p50 {statistics.median(xs) * 1000:.2f} ms"
            for k, xs in b.sim_cpu_per_command_s.items()
        )
    )
    if b.profile is not None:
        b.profile.dump_stats(args.profile)
        print(f"profile of the commands in {args.profile} (python -m pstats {args.profile})")
    if sim_profile is not None:
        print(f"profile of the simulator while the commands were in flight in {sim_profile}")
    return b


if __name__ == "__main__":
    main()
