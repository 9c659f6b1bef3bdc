"""The GPU agent's docs walked as a newcomer would (docs/hardware.md, "Try it without
GPUs"; docs/operations.md): the site file the docs show loads, and each mistake a newcomer
makes (a busy port, ``--sim 0``, TLS on one side only) is answered naming the option and
what to do, never with a traceback or a simulator's advice."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from adapters.base import DeviceTimeout, DeviceUnreachable
from adapters.gpu_agent import GpuAgent, server_tls
from adapters.gpu_remote import AgentBackend, client_tls
from adapters.secrets import Secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from tests.support.cli import run_main
from tests.support.ports import closed_port
from tests.test_gpu_agent_cli import _self_signed

ROOT = Path(__file__).resolve().parents[1]
SECRET = "walk-agent-test-secret-0123456789"


def _try_it_toml() -> str:
    text = (ROOT / "docs" / "hardware.md").read_text()
    section = text.split("**Try it without GPUs:**", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found, "no site file under 'Try it without GPUs'"
    return found.group(1)


def test_the_site_file_the_docs_show_validates_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "in another shell, with the same GRIDSCHED_GPU_AGENT_SECRET exported": validate reads it
    monkeypatch.setenv("GRIDSCHED_GPU_AGENT_SECRET", SECRET)
    site = tmp_path / "site.toml"
    site.write_text(_try_it_toml())
    res = run_main("validate", "--config", str(site))
    assert res.returncode == 0, res.stderr
    assert "h100" in res.stdout


def test_a_port_in_use_names_the_listen_address_not_the_simulators() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_main("gpu-agent", "--sim", "1", "--listen", f"127.0.0.1:{port}")
    assert res.returncode == 1, res.stderr  # 1: systemd tries again (an old agent stopping)
    assert f"--listen 127.0.0.1:{port}" in res.stderr and "in use" in res.stderr, res.stderr
    assert "sim_base" not in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("n", ["0", "-1"])
def test_sim_needs_one_gpu_at_least_and_never_falls_back_to_nvml(n: str) -> None:
    res = run_main("gpu-agent", "--sim", n, "--listen", "127.0.0.1:0")
    assert res.returncode == 2, res.stderr
    assert "--sim" in res.stderr and "1 or more" in res.stderr, res.stderr
    assert "NVML" not in res.stderr and "Traceback" not in res.stderr


def test_tls_on_one_side_only_says_which_setting_is_missing(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    async def main() -> None:
        sims = [SimGpu(0)]
        tls_agent = GpuAgent(
            LocalSimBackend(sims), "127.0.0.1", 0, Secret(SECRET), server_tls(cert, key)
        )
        plain_agent = GpuAgent(LocalSimBackend(sims), "127.0.0.1", 0, Secret(SECRET))
        await tls_agent.start()
        await plain_agent.start()
        try:
            plain = AgentBackend("127.0.0.1", tls_agent.port, Secret(SECRET), timeout_s=0.5)
            with pytest.raises(DeviceTimeout, match=r"no answer.*agent_tls_ca_file"):
                await plain.call(0, "limit_w")  # the agent waits for TLS, we for a hello
            tls = AgentBackend("127.0.0.1", plain_agent.port, Secret(SECRET), client_tls(cert))
            with pytest.raises(DeviceUnreachable, match="--tls-cert"):
                await tls.call(0, "limit_w")  # a plain hello where TLS was expected
        finally:
            await tls_agent.stop()
            await plain_agent.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def _site_with(tmp_path: Path, adapter: str) -> Path:
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nname = "t"\ninterconnect_kw = 100\n[[devices]]\nname = "h100"\nkind = "gpu"\n'
        f'model = "H100 SXM"\ncount = 8\n[devices.adapter]\nkind = "nvml"\n{adapter}\n'
    )
    return site


@pytest.mark.parametrize(
    ("adapter", "words"),
    [
        (
            'agents = ["127.0.0.1:7731"]\nagent_secret_env = "X"\nagent_secret_file = "y"',
            "agent_secret_file: give one of agent_secret_env or agent_secret_file, not both",
        ),
        (
            'agents = ["127.0.0.1:7731"]\ngpus = [0, 1, 2]',
            "adapter.gpus: lists 3 GPUs on each of 1 agents, 3 in all, for count = 8; "
            "count must be 3, or gpus list 8 indexes",
        ),
    ],
)
def test_a_site_file_mistake_names_the_key_and_what_is_valid(
    tmp_path: Path, adapter: str, words: str
) -> None:
    res = run_main("validate", "--config", str(_site_with(tmp_path, adapter)))
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_an_agent_not_listening_says_to_check_the_agent_and_its_port() -> None:
    port = closed_port()  # nothing listens there

    async def main() -> None:
        backend = AgentBackend("127.0.0.1", port, Secret(SECRET), timeout_s=5.0)
        with pytest.raises(DeviceUnreachable, match="is `gridsched gpu-agent` running"):
            await backend.call(0, "limit_w")

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--listen", "0.0.0.0:0"], {}, "--listen: refusing to serve NVML on '0.0.0.0'"),
        (
            ["--listen", "0.0.0.0:0", "--secret-env", "WALK_SECRET"],
            {"WALK_SECRET": "short"},
            "--secret-env/--secret-file: the secret is shorter than 16 characters",
        ),
        (
            ["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/k"],
            {},
            "--tls-cert/--tls-key: cannot load /nonexistent.pem",
        ),
    ],
)
def test_the_agents_refusals_name_its_command_line_options(
    argv: list[str], env: dict[str, str], words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    res = run_main("gpu-agent", "--sim", "1", *argv)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("gridsched: error: gpu-agent: invalid configuration")
    assert words in res.stderr and "Traceback" not in res.stderr, res.stderr
