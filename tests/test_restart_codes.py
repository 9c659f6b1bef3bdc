"""Exit codes a service manager acts on: what a restart cannot fix (no NVML on the host, a
configuration refused) ends with a code the systemd units name in RestartPreventExitStatus=,
with one message saying what is missing and what to do; what may clear by itself (a driver
still loading, a port still held) keeps its restart."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from adapters.nvml import PynvmlBackend, nvml_error
from scheduler.cli import gpu_agent, startup
from tests.support.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


def test_an_agent_on_a_host_without_nvml_exits_78_once_saying_what_to_do() -> None:
    if _nvml_works():
        pytest.skip("this host has a working NVML: the agent would serve its GPUs")
    res = run_main("gpu-agent", "--listen", "127.0.0.1:0")
    assert res.returncode == gpu_agent.EXIT_NO_NVML == 78, res.stderr
    assert "Traceback" not in res.stderr
    [line] = res.stderr.strip().splitlines()  # one message, not a log of retries
    assert "NVML" in line and "install the NVIDIA driver" in line, line
    assert "not restarted" in line


def test_a_driver_still_loading_exits_1_for_systemd_to_try_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no real host can be made to have its driver half-loaded: the backend says so
    async def count(self: PynvmlBackend) -> int:
        raise nvml_error("nvml", "nvmlInit", "DRIVER_NOT_LOADED", "Driver Not Loaded")

    monkeypatch.setattr(PynvmlBackend, "count", count)
    res = run_main("gpu-agent", "--listen", "127.0.0.1:0")
    assert res.returncode == 1, res.stderr
    assert "DRIVER_NOT_LOADED" in res.stderr and "tried again" in res.stderr


def _service(unit: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / unit).read_text())
    return parser["Service"]


def _prevented(unit: str) -> set[int]:
    return {int(w) for w in _service(unit)["RestartPreventExitStatus"].split()}


def test_the_units_do_not_restart_what_a_restart_cannot_fix() -> None:
    agent = _prevented("gridsched-gpu-agent.service")
    assert {2, gpu_agent.EXIT_NO_NVML} <= agent and 1 not in agent
    daemon = _prevented("gridsched.service")
    assert {startup.EXIT_CONFIG, startup.EXIT_STATE} <= daemon
    assert startup.EXIT_BUSY not in daemon and 1 not in daemon
    for unit in ("gridsched-gpu-agent.service", "gridsched.service"):
        # 203: the binary is not where ExecStart says; 243: LoadCredential's file is missing
        assert {203} <= _prevented(unit), unit
        assert _service(unit)["Restart"] == "on-failure"
    assert 243 in agent  # only the agent loads a credential


def test_the_docs_name_each_exit_code_of_the_units() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("### Exit codes") :]
    for code in ("`1`", "`2`", "`3`", "`4`", "`78`", "`203`", "`243`"):
        assert re.search(rf"\| {re.escape(code)} ", section), code


def test_run_refuses_a_tls_certificate_it_cannot_load_before_touching_a_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler.cli import run

    def opened(*args: object) -> None:
        raise AssertionError("the daemon was opened before the TLS files were checked")

    monkeypatch.setattr(run, "_open_daemon", opened)
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", "a-webhook-secret-of-32-characters-xx")
    site = ROOT / "deploy" / "examples" / "simulated-site.toml"
    missing = tmp_path / "missing-cert.pem"
    res = run_main(
        "run", "--config", str(site), "--db", str(tmp_path / "g.db"),
        "--listen", "127.0.0.1:0", "--tls-cert", str(missing), "--tls-key", str(missing),
    )  # fmt: skip
    assert res.returncode == startup.EXIT_CONFIG, res.stderr
    assert "--tls-cert" in res.stderr and str(missing) in res.stderr
    assert "No such file" in res.stderr and "Traceback" not in res.stderr


def test_a_certificate_and_key_that_load_pass_the_tls_check(tmp_path: Path) -> None:
    from tests.test_gpu_agent_cli import _self_signed

    cert, key = _self_signed(tmp_path)
    startup.check_tls(cert, key)  # uvicorn loads these as this check does
    with pytest.raises(startup.Refusal, match="--tls-key without --tls-cert"):
        startup.check_tls(None, key)


@pytest.mark.parametrize(
    ("listen", "code", "words"),
    [
        # TEST-NET-1 (RFC 5737): never an address of this host; may come up later (DHCP)
        ("192.0.2.1:0", 1, "not available on this host"),
        ("gpu-agent-host.invalid:0", 2, "does not resolve"),  # RFC 6761: never resolves
    ],
)
def test_an_address_the_agent_cannot_listen_on_is_said_without_a_traceback(
    listen: str, code: int, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H4_AGENT_SECRET", "restart-codes-secret-0123456789")
    res = run_main("gpu-agent", "--sim", "1", "--listen", listen, "--secret-env", "H4_AGENT_SECRET")
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and f"--listen {listen}" in res.stderr
    assert words in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GRIDSCHED_VTN_URL": "http://127.0.0.1:9"}, "GRIDSCHED_VTN_CLIENT_ID"),
        (
            {
                "GRIDSCHED_VTN_URL": "http://127.0.0.1:9",
                "GRIDSCHED_VTN_CLIENT_ID": "ven-1",
                "GRIDSCHED_VTN_CLIENT_SECRET": "a-client-secret",
                "GRIDSCHED_VTN_POLL_S": "soon",
            },
            "GRIDSCHED_VTN_POLL_S='soon'",
        ),
    ],
    ids=["no credentials", "poll not seconds"],
)
def test_run_refuses_a_ven_it_cannot_start_before_touching_a_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    """The docs walk (session 23): a VEN misconfigured in the environment was found only
    after the daemon had connected, planned and commanded the fleet; it then exited 2
    through its shutdown posture, every miner asleep, and systemd does not restart on 2."""
    from scheduler.cli import run

    def opened(*args: object) -> None:
        raise AssertionError("the daemon was opened before the VEN's settings were checked")

    monkeypatch.setattr(run, "_open_daemon", opened)
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", "a-webhook-secret-of-32-characters-xx")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    site = ROOT / "deploy" / "examples" / "simulated-site.toml"
    res = run_main(
        "run", "--config", str(site), "--db", str(tmp_path / "g.db"),
        "--listen", "127.0.0.1:0",
    )  # fmt: skip
    assert res.returncode == startup.EXIT_CONFIG, res.stderr
    assert named in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_the_stop_line_says_when_the_shutdown_posture_is_not_complete() -> None:
    """The SRE's walk (session 24, D6): 7 of 20 devices failed the shutdown posture and 2
    miners were left hashing, and the line still began "safe posture" (exit 0, which
    operations.md reads as "devices in the shutdown posture")."""
    from scheduler.cli.run import stop_line

    whole = {
        "told": 20,
        "confirmed": 20,
        "unconfirmed": 0,
        "failed": 0,
        "limit_s": 40,
        "waited_s": 5.1,
    }
    assert stop_line(whole).startswith("gridsched: stopped; safe posture: 20 devices told, 20 ")
    part = {**whole, "confirmed": 13, "failed": 7}
    said = stop_line(part)
    assert said.startswith("gridsched: stopped; shutdown posture NOT complete: 20 devices told, 13")
    assert "7 failed" in said and "may still draw power" in said, said
