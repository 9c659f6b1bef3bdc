"""``gridsched``: the root parser, one sub-command group per module, and the exit codes.

Errors in input print one clear message (what, where, what is valid) and exit with status 2;
a solver that fails exits with status 3; a simulator address already in use, 4.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from models.errors import GridschedError
from scheduler.cli import audit, backtest, docs, fleet, plan, run
from scheduler.planner.solvers import SolverError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridsched",
        description="Grid-aware scheduling of miners and inference: dry-run plans and "
        "backtests, the daemon, the simulated fleet, the audit log.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    plan.add_parsers(sub)
    backtest.add_parsers(sub)
    fleet.add_parsers(sub)
    run.add_parsers(sub)
    audit.add_parsers(sub)
    docs.add_parsers(sub)
    plan.add_solvers_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`gridsched plan --json | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (GridschedError, SolverError) as exc:
        print(f"gridsched: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # durations, resolution specs, JSON options
        print(f"gridsched: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # simulators listen on fixed loopback addresses: say which, and how to move them
        print(
            f"gridsched: error: {exc.strerror or exc}: {exc}; another simulator or gridsched "
            "uses it: stop it, or move the simulated devices to a free loopback base "
            "([devices.adapter] sim_base, or fleet simulate --base)",
            file=sys.stderr,
        )
        return 4


if __name__ == "__main__":
    sys.exit(main())
