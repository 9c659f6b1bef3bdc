"""An admin installing gridsched from docs/operations.md and deploy/systemd, step by step."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "gridsched.service"


def _section(title: str) -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_service_install_builds_its_own_venv_not_a_copy_of_the_checkouts() -> None:
    """A copied .venv keeps the checkout's interpreter path in every script's first line:
    the unit's ExecStart would run ``#!/home/.../.venv/bin/python``, which ProtectHome=yes
    hides, and the service would not start."""
    shebang = Path(sys.executable).with_name("gridsched").read_text().splitlines()[0]
    assert shebang.startswith("#!/") and ".venv" in shebang  # absolute: why a copy breaks
    block = _section("5. Run it as a service").split("```sh", 1)[1].split("```", 1)[0]
    assert not re.search(r"\bcp -r \. ", block), block
    assert "python3 -m venv /opt/gridsched/.venv" in block
    assert "-c /opt/gridsched/constraints.txt" in block
    exec_start = re.search(r"^ExecStart=(\S+)", UNIT.read_text(), re.M)
    assert exec_start is not None and exec_start.group(1) == "/opt/gridsched/.venv/bin/gridsched"


def test_service_unit_says_how_to_let_nvml_set_power_limits(tmp_path: Path) -> None:
    """NVML's power-limit and clock-lock calls pass the driver's CAP_SYS_ADMIN check; the
    unit drops every capability, so a GPU host needs the commented lines, which verify."""
    text = UNIT.read_text()
    assert re.search(r"^CapabilityBoundingSet=$", text, re.M)
    for line in ("#CapabilityBoundingSet=CAP_SYS_ADMIN", "#AmbientCapabilities=CAP_SYS_ADMIN"):
        assert line in text, line
    assert "CAP_SYS_ADMIN" in _section("5. Run it as a service")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    here = str(Path(sys.executable).parent / "gridsched")
    gpu = (
        text.replace("#CapabilityBoundingSet=CAP_SYS_ADMIN", "CapabilityBoundingSet=CAP_SYS_ADMIN")
        .replace("#AmbientCapabilities=CAP_SYS_ADMIN", "AmbientCapabilities=CAP_SYS_ADMIN")
        .replace("/opt/gridsched/.venv/bin/gridsched", here)
        .replace("EnvironmentFile=/etc", "EnvironmentFile=-/etc")
    )
    (tmp_path / "gridsched.service").write_text(gpu)
    res = subprocess.run(
        [analyze, "verify", str(tmp_path / "gridsched.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0 and "gridsched" not in res.stdout + res.stderr, res.stderr
    # the later assignment adds to the emptied set rather than being lost after it
    assert gpu.index("CapabilityBoundingSet=CAP_SYS_ADMIN") > gpu.index("CapabilityBoundingSet=\n")


def test_container_build_context_leaves_out_the_venv() -> None:
    """compose builds with the checkout as context: without an ignore file the client sends
    the 800 MB .venv (and every cache) to the builder at each `up --build`."""
    ignore = ROOT / ".dockerignore"
    assert ignore.exists(), "no .dockerignore at the build context's root"
    patterns = [
        p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert ".venv" in patterns and "**/__pycache__" in patterns
    containerfile = (ROOT / "deploy" / "container" / "Containerfile").read_text()
    copied = [
        src
        for line in containerfile.splitlines()
        if line.startswith("COPY ")
        for src in line.split()[1:-1]
    ]
    assert copied and all((ROOT / src).exists() for src in copied), copied
    for src in copied:  # what the image needs is never ignored
        assert not any(src == p or src.startswith(p.rstrip("/") + "/") for p in patterns), src


def _healthcheck_cmd() -> str:
    text = (ROOT / "deploy" / "container" / "Containerfile").read_text()
    m = re.search(r"^HEALTHCHECK[^\n]*\\\n\s*CMD (.+)$", text, re.M)
    assert m is not None, "no HEALTHCHECK ... CMD in the Containerfile"
    return m.group(1)


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "127.0.0.1:{port}", "[::]:{port}"])
def test_the_container_health_check_asks_the_port_the_api_listens_on(listen: str) -> None:
    """The image's HEALTHCHECK asked 127.0.0.1:8080 whatever GRIDSCHED_LISTEN said, so a
    container told to listen on another port was marked unhealthy (and restarted by an
    orchestrator) while it served. The check is run as the image runs it, against a real
    /healthz on a port the OS chose."""
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Healthz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        env = {**os.environ, "GRIDSCHED_LISTEN": listen.format(port=port)}
        cmd = _healthcheck_cmd().replace("python -c", f"{sys.executable} -c", 1)
        ok = subprocess.run(cmd, shell=True, env=env, timeout=30, capture_output=True, check=False)
        assert ok.returncode == 0, ok.stderr.decode()
        env["GRIDSCHED_LISTEN"] = "127.0.0.1:1"  # nothing there: unhealthy
        bad = subprocess.run(cmd, shell=True, env=env, timeout=30, capture_output=True, check=False)
        assert bad.returncode != 0
    finally:
        server.shutdown()
