"""The daemon's demo: the shipped simulated site, a signed curtail signal, the fleet shedding.

    .venv/bin/python -m scheduler.cli.demo [--config deploy/examples/simulated-site.toml]

Starts the real daemon (``gridsched run``) as a child process on a free loopback port with a
throwaway state file; its 120 miners and 16 GPUs are simulated in-process and reached
through pyasic. Then it sends a signed curtail signal (``gridsched signal``), shows import
against the cap before and after, a few Prometheus metrics, verifies the decision log's
hash chain, and stops the daemon (which puts the miners to sleep). Touches no hardware.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

#: the checkout: scheduler/cli/demo.py is three levels below it (``parent.parent`` was
#: scheduler/, so the default --config named a file that does not exist)
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(url + "/v1/status", timeout=10).json()
    return out


def _settled(url: str, within: float = 0.03, wait_s: float = 40.0) -> dict[str, Any]:
    """Status once the measured import has reached the plan's (miners take seconds to
    sleep or wake), or after ``wait_s``."""
    end = time.monotonic() + wait_s
    while True:
        status = _status(url)
        plan = httpx.get(url + "/v1/plan", timeout=10).json()
        planned = float(plan["steps"]["import_kw"][0])
        if abs(status["import_kw"] - planned) <= within * max(planned, 1.0):
            return status
        if time.monotonic() > end:
            return status
        time.sleep(1.0)


def _line(s: dict[str, Any]) -> str:
    modes = ", ".join(
        f"{c}: " + " ".join(f"{n} {m}" for m, n in sorted(v["modes"].items()))
        for c, v in s["classes"].items()
    )
    cap = "none" if s["cap_kw"] is None else f"{s['cap_kw']:,.0f} kW"
    return f"import {s['import_kw']:,.1f} kW, cap {cap} | {modes}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "deploy" / "examples" / "simulated-site.toml"))
    ap.add_argument("--limit-kw", type=float, default=150.0)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gridsched-demo-"))
    db = tmp / "gridsched.db"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {**os.environ, "GRIDSCHED_WEBHOOK_SECRET": secret}
    cli = [sys.executable, "-m", "scheduler.cli"]
    print(f"$ gridsched run --config {args.config} --db {db} --listen 127.0.0.1:{port}")
    daemon = subprocess.Popen(
        [*cli, "run", "--config", args.config, "--db", str(db), "--listen", f"127.0.0.1:{port}",
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while True:
            if daemon.poll() is not None:
                out = daemon.stdout.read() if daemon.stdout else ""
                print(out[-3000:], file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 120:
                print("the daemon did not become healthy in 120 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(
            f"healthy after {time.monotonic() - t0:.1f} s (discovered the fleet, planned, applied)"
        )
        before = _settled(url)
        print("before: " + _line(before))
        print(
            f"$ gridsched signal curtail --limit-kw {args.limit_kw:g} --duration 30min --url {url}"
        )
        res = subprocess.run(
            [*cli, "signal", "curtail", "--limit-kw", str(args.limit_kw), "--duration", "30min",
             "--url", url],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        print(res.stdout.strip() or res.stderr.strip())
        t1 = time.monotonic()
        after = _status(url)
        while time.monotonic() - t1 < 40 and after["import_kw"] > args.limit_kw:
            time.sleep(0.5)
            after = _status(url)
        print(f"after {time.monotonic() - t1:.1f} s: " + _line(after))
        metrics = httpx.get(url + "/metrics", timeout=10).text
        wanted = (
            "gridsched_site_power_watts",
            "gridsched_site_import_cap_watts",
            "gridsched_signals_active",
        )
        print("metrics:")
        for line in metrics.splitlines():
            if line.startswith(wanted):
                print("  " + line)
        verify = subprocess.run(
            [*cli, "audit", "verify", "--db", str(db)], capture_output=True, text=True, check=False
        )
        print(verify.stdout.strip())
        ok = res.returncode == 0 and after["import_kw"] <= args.limit_kw and verify.returncode == 0
        return 0 if ok else 1
    finally:
        daemon.terminate()
        try:
            out, _ = daemon.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            out, _ = daemon.communicate()
        last = [line for line in out.splitlines() if line.startswith("gridsched: stopped")]
        print(last[-1] if last else "daemon stopped")
        print(json.dumps({"state": str(db)}))


if __name__ == "__main__":
    sys.exit(main())
