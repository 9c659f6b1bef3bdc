"""``gridsched gpu-agent`` as a command and a service: its refusals, a run as a program
serving simulated GPUs to the daemon's backend, TLS with a certificate made by the test,
the systemd unit and the conformance loop over the agent."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters.base import DeviceTimeout, DeviceUnreachable, ModeRequest
from adapters.gpu import NvmlGpu
from adapters.gpu_agent import GpuAgent, server_tls
from adapters.gpu_remote import AgentBackend, client_tls
from adapters.secrets import Secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from tests.support.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
SECRET = "cli-agent-test-secret-0123456789"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--listen", "0.0.0.0:0"], "without authentication"),
        (["--listen", "nonsense"], "--listen: 'nonsense': expected HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--tls-cert", "x.pem"], "--tls-cert/--tls-key"),
    ],
)
def test_the_agent_refuses_what_it_cannot_serve_safely(argv: list[str], words: str) -> None:
    res = run_main("gpu-agent", "--sim", "1", *argv)
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_the_agent_command_serves_until_sigterm(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    argv = ["gpu-agent", "--sim", "3", "--listen", "127.0.0.1:0", "--secret-file", str(secret_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    watchdog = threading.Timer(60, proc.kill)  # a readline that never returns ends here
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "gpu-agent: serving 3 GPUs on 127.0.0.1:PORT"
        assert "serving 3 GPUs" in line, line
        port = int(line.rsplit(":", 1)[1])

        async def use() -> None:
            backend = AgentBackend("127.0.0.1", port, Secret(SECRET), timeout_s=10.0)
            dev = NvmlGpu("g/127.0.0.1/gpu2", "2", backend, 2, 10.0)
            await dev.connect()
            await dev.apply(ModeRequest("run", 400.0))
            assert (await dev.read()).target_w == 400.0
            await backend.close()

        asyncio.run(use())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log = proc.stderr.read() if proc.stderr else ""
        assert "client 127.0.0.1:" in log and "connected" in log
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-agent test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = tmp_path / "agent.pem", tmp_path / "agent.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_pem), str(key_pem)


def test_tls_with_the_agents_certificate_and_refused_without_it(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = _self_signed(tmp_path / "other")  # another CA's

    async def main() -> None:
        agent = GpuAgent(
            LocalSimBackend([SimGpu(0)]), "127.0.0.1", 0, Secret(SECRET), server_tls(cert, key)
        )
        await agent.start()
        try:
            good = AgentBackend("127.0.0.1", agent.port, Secret(SECRET), client_tls(cert))
            assert await good.call(0, "limit_w") == 700.0
            await good.close()
            wrong_ca = AgentBackend("127.0.0.1", agent.port, Secret(SECRET), client_tls(other))
            with pytest.raises(DeviceUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                await wrong_ca.call(0, "limit_w")
            plain = AgentBackend("127.0.0.1", agent.port, Secret(SECRET), timeout_s=0.3)
            with pytest.raises(DeviceTimeout, match="no answer"):
                await plain.call(0, "limit_w")  # plain TCP to a TLS port: no hello comes
        finally:
            await agent.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_agents_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "deploy" / "systemd" / "gridsched-gpu-agent.service").read_text()
    assert "--secret-file ${CREDENTIALS_DIRECTORY}/gpu-agent-secret" in unit
    assert "LoadCredential=gpu-agent-secret:" in unit
    gridsched = Path(sys.executable).with_name("gridsched")
    path = tmp_path / "gridsched-gpu-agent.service"
    path.write_text(unit.replace("/opt/gridsched/.venv/bin/gridsched", str(gridsched)))
    res = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, check=False
    )
    problems = [
        line for line in (res.stdout + res.stderr).splitlines() if "gridsched-gpu-agent" in line
    ]
    assert res.returncode == 0 and not problems, problems
