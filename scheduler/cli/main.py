"""``gridsched``: the root parser, one sub-command group per module, and the exit codes.

Errors in input print one clear message (what, where, what is valid) and exit with status 2;
a solver that fails exits with status 3; a simulator address already in use, 4.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from models.errors import GridschedError

# The modules that define the sub-commands, in the order --help lists them, and which
# module defines each command. A command imports only its own module: the others pull in
# pandas, HiGHS and pyasic, seconds of start-up that `gridsched signal` or `audit verify`
# do not need. --help and a mistyped command build the whole parser.
MODULES = ("plan", "backtest", "fleet", "run", "audit", "docs", "gpu_agent")
COMMANDS = {
    "plan": "plan",
    "validate": "plan",
    "solvers": "plan",
    "backtest": "backtest",
    "fleet": "fleet",
    "run": "run",
    "signal": "run",
    "audit": "audit",
    "docs": "docs",
    "gpu-agent": "gpu_agent",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The root parser with every sub-command, or only the module that defines ``command``."""
    p = argparse.ArgumentParser(
        prog="gridsched",
        description="Grid-aware scheduling of miners and inference: dry-run plans and "
        "backtests, the daemon, the simulated fleet, the audit log.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    names = (COMMANDS[command],) if command in COMMANDS else MODULES
    for name in names:
        importlib.import_module(f"scheduler.cli.{name}").add_parsers(sub)
    if "plan" in names:  # listed last, as it always was
        importlib.import_module("scheduler.cli.plan").add_solvers_parser(sub)
    return p


def _chosen(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The sub-command parser the words of ``argv`` select (``audit verify``), for its usage."""
    current = parser
    for word in argv:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and word in subs[0].choices:
            current = subs[0].choices[word]
    return current


def _solver_error() -> type[Exception]:
    """The planner's solver failure, where the planner was loaded (else none can occur)."""
    solvers = sys.modules.get("scheduler.planner.solvers")
    error: type[Exception] = getattr(solvers, "SolverError", GridschedError)
    return error


def _plain_logging() -> None:
    """A command's warnings as Python prints them unconfigured (the message alone, on
    stderr), set up before pyasic's import can put its own multi-line format there, and
    pyasic's per-attempt lines kept out (:mod:`adapters.library_logs`). Only where nothing
    configured logging yet (``gridsched run`` configures its own; a host process, such as
    a test runner, keeps its)."""
    from adapters.library_logs import StderrHandler, keep_daemon_logging

    root = logging.getLogger()
    if root.handlers:
        return
    handler = StderrHandler(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    keep_daemon_logging(logging.WARNING)


def parse(parser: argparse.ArgumentParser, args_in: list[str]) -> argparse.Namespace:
    """The command line read; what is left over is said by the command's own parser. A
    command's positional list (``fleet fault``'s hosts) also takes what follows its options:
    argparse's ``nargs='*'`` takes nothing once an option came between."""
    args, extra = parser.parse_known_args(args_in)
    hosts = getattr(args, "hosts", None)
    if extra and isinstance(hosts, list) and not any(e.startswith("-") for e in extra):
        args.hosts, extra = [*hosts, *extra], []
    if extra:  # argparse would answer from the root, whose usage shows none of these flags
        _chosen(parser, args_in).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    _plain_logging()  # before a command's module can import pyasic
    args = parse(build_parser(args_in[0] if args_in else None), args_in)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`gridsched plan --json | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (GridschedError, _solver_error()) as exc:
        print(f"gridsched: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # durations, resolution specs, JSON options
        print(f"gridsched: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            if exc.filename is None:
                raise
            # a file a command reads or writes (--json-out a directory, an unwritable
            # path): its name and the system's words, not a traceback (bad-input walk,
            # session 23)
            print(f"gridsched: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            return 2
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
