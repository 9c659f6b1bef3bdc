"""A ``gridsched`` command run by its ``main`` in the test's own process, its output
captured: what a test of a command's output and exit code needs, without an interpreter to
start for it (about 3 s of CPU each: the imports). A test of the command as a program (its
signals, its process, what it leaves when killed) still starts one."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess

import pytest


def run_main(*argv: str) -> subprocess.CompletedProcess[str]:
    """``gridsched *argv`` in this process: its exit code, stdout and stderr."""
    from scheduler.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logging, "basicConfig", lambda **kw: None)  # the test run's logging stays
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's refusals
                code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())
