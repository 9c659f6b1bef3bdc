"""GPU agents in the site file (``[devices.adapter] kind = "nvml"`` with ``agents``): the
adapters built from it, the errors that name the key at fault, and the daemon over an agent
started by the test on loopback, serving simulated GPUs: an agent that dies leaves its GPUs
unreachable and counted at their last known power, never 0 kW, until it comes back."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from adapters import registry
from adapters.gpu import NvmlGpu
from adapters.gpu_agent import GpuAgent
from adapters.gpu_remote import AgentBackend
from adapters.secrets import Secret
from adapters.sim.gpu import SimGpu
from adapters.sim.gpu_backend import LocalSimBackend
from models.errors import ConfigError
from models.site import parse_site
from tests.support.clock import FakeClock
from tests.support.sitefile import device_classes, site_text

SECRET = "agents-site-test-secret-0123456789"


def site(adapter: str, count: int = 4) -> str:
    h100s = device_classes({"name": "h100", "kind": "gpu", "model": "H100 SXM", "count": count})
    return site_text(
        "agents",
        site={"base_load_kw": 0},
        hashprice=1.0,
        inference={"committed_tokens_s": 0, "committed_usd_per_mtok": 0.6},
        daemon={"horizon": "2h", "step": "5min"},
        devices=h100s + f'[devices.adapter]\nkind = "nvml"\n{adapter}\n',
    )


def parse(text: str, tmp_path: Path) -> registry.Built:
    return registry.build(parse_site(tomllib.loads(text), "site.toml", str(tmp_path)))


def problems(text: str, tmp_path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        parse(text, tmp_path)
    return err.value.problems


def test_ids_name_the_host_and_each_agent_has_its_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SECRET", SECRET)
    text = site(
        'agents = ["10.20.0.1-10.20.0.3:7731", "gpu-07.site:7732"]\n'
        'agent_secret_env = "AGENT_SECRET"\ngpus = [0, 1]',
        count=8,
    )
    built = parse(text, tmp_path)
    ids = [a.device_id for a in built.adapters]
    assert ids[:3] == ["h100/10.20.0.1/gpu0", "h100/10.20.0.1/gpu1", "h100/10.20.0.2/gpu0"]
    assert ids[-1] == "h100/gpu-07.site/gpu1" and len(set(ids)) == 8
    backends = {}
    for a in built.adapters:
        assert isinstance(a, NvmlGpu) and isinstance(a.backend, AgentBackend)
        backends[a.backend.label] = a.backend
    assert sorted(backends) == [
        "nvml@10.20.0.1:7731", "nvml@10.20.0.2:7731", "nvml@10.20.0.3:7731",
        "nvml@gpu-07.site:7732",
    ]  # fmt: skip
    assert all(b.secret == Secret(SECRET) for b in backends.values())


@pytest.mark.parametrize(
    ("adapter", "count", "key", "words"),
    [
        ('agents = ["10.0.0.7"]', 4, "agents", "expected HOST:PORT"),
        ('agents = ["10.0.0.7:99999"]', 4, "agents", "expected HOST:PORT"),
        ('agents = ["bad_name!:7731"]', 4, "agents", "no host name or address"),
        ('agents = ["10.0.0.7:7731", "10.0.0.7:7732"]', 4, "agents", "listed twice"),
        ('agents = ["10.0.0.7:7731"]', 4, "agents", "give agent_secret_env"),
        ('agents = ["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"]', 4, "agents", "split evenly"),
        ('agents = ["127.0.0.1:1", "127.0.0.2:1"]\ngpus = [0]', 4, "gpus", "2 in all"),
        ('agent_secret_env = "X"', 4, "agent_secret_env", "only with `agents`"),
    ],
)
def test_agent_settings_that_cannot_work_name_the_key(
    tmp_path: Path, adapter: str, count: int, key: str, words: str
) -> None:
    found = problems(site(adapter, count), tmp_path)
    assert len(found) == 1, found
    where, message = found[0]
    assert where.startswith("devices[0]") and where.endswith(key), found
    assert words in message


def test_a_secret_that_is_unset_or_short_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = site('agents = ["10.0.0.7:7731"]\nagent_secret_env = "AGENT_SECRET"', 4)
    monkeypatch.delenv("AGENT_SECRET", raising=False)
    [(where, message)] = problems(text, tmp_path)
    assert where == "devices.h100.adapter.agent_secret_env" and "not set" in message
    monkeypatch.setenv("AGENT_SECRET", "short")
    [(where, message)] = problems(text, tmp_path)
    assert "shorter than 16" in message and "'short'" not in message  # the value unsaid


def test_the_daemon_counts_a_dead_agents_gpus_at_their_last_power_until_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.service.daemon import Daemon

    monkeypatch.setenv("AGENT_SECRET", SECRET)
    gpus = [SimGpu(i, settle_s=0.01) for i in range(4)]

    async def main() -> None:
        agent = GpuAgent(LocalSimBackend(gpus), "127.0.0.1", 0, Secret(SECRET))
        await agent.start()
        port = agent.port
        text = site(f'agents = ["127.0.0.1:{port}"]\nagent_secret_env = "AGENT_SECRET"', 4)
        text += "timeout_s = 2\n"
        config = parse_site(tomllib.loads(text), "site.toml", str(tmp_path))
        d = Daemon(config, tmp_path / "state.db", clock=FakeClock(), built=registry.build(config))
        await d.open()  # connects every GPU through the agent, and polls once
        try:
            before = d.measured()
            assert before["devices_unread"] == 0 and before["gpu_kw"] > 1.0
            await agent.stop()
            for _ in range(3):
                await d.poll(dispatch=False)
            health = d.status()["classes"]["h100"]["health"]
            assert health["unreachable"] == 4 and health["ok"] == 0
            after = d.measured()
            assert after["devices_unread"] == 4
            assert after["gpu_kw"] == pytest.approx(before["gpu_kw"])  # not 0 kW
            agent = GpuAgent(LocalSimBackend(gpus), "127.0.0.1", port, Secret(SECRET))
            await agent.start()
            async with asyncio.timeout(20):  # the fleet probes again after 1 s (backoff)
                while d.status()["classes"]["h100"]["health"]["ok"] < 4:
                    await asyncio.sleep(0.1)
                    await d.poll(dispatch=False)
            assert d.measured()["devices_unread"] == 0
        finally:
            await d.close()
            await agent.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_tls_ca_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    text = site('agents = ["127.0.0.1:7731"]\nagent_tls_ca_file = "missing-ca.pem"', 4)
    [(where, message)] = problems(text, tmp_path)
    assert where == "devices.h100.adapter.agent_tls_ca_file"
    assert "cannot load" in message and "missing-ca.pem" in message
