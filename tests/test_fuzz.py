"""Property-based requests from the published OpenAPI schema, signed where the endpoint
needs a signature: no 5xx anywhere, and the signal endpoint fuzzed past its 401."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_daemon import OADR_TOKEN, SECRET, DaemonProc

HOOKS = Path(__file__).resolve().parent / "support" / "schemathesis_hooks.py"


def test_schemathesis_signed_finds_no_server_error(tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    d = DaemonProc(tmp_path)  # its own daemon: fuzzed signals stay here
    d.start()
    log = tmp_path / "answers.log"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "GRIDSCHED_WEBHOOK_SECRET": SECRET,
        "GRIDSCHED_FUZZ_LOG": str(log),
        "PYTHONPATH": str(HOOKS.parent.parent.parent),
    }
    try:
        res = subprocess.run(
            [str(st), "run", d.url + "/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", os.environ.get("GRIDSCHED_SCHEMATHESIS_EXAMPLES", "25"),
             "--header", f"Authorization: Bearer {OADR_TOKEN}", "--request-timeout", "20"],
            capture_output=True, text=True, timeout=600, check=False, env=env,
            cwd=tmp_path,  # schemathesis writes .schemathesis/ into its working directory
        )  # fmt: skip
    finally:
        d.stop()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    answers = collections.Counter(
        tuple(line.split()) for line in log.read_text().splitlines() if line.strip()
    )
    signals = {status for (method, path, status), _ in answers.items() if path == "/v1/signals"}
    assert signals, f"no request reached /v1/signals: {answers}"
    # signed bodies got past authentication: the handler answered on what they said
    assert signals - {"401"}, f"every signed signal was refused at authentication: {answers}"
    assert not any(s.startswith("5") for (_, _, s) in answers), answers
