"""``gridsched validate`` on a site whose GPUs are reached through agents: what would keep
the daemon from reaching them (the secret's variable unset, its file missing or unreadable,
a short secret, the CA file missing) is said before the daemon is started, naming the key,
never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run_main
from tests.support.sitefile import device_classes, site_text

SECRET = "validate-agents-secret-0123456789abcdef"
SITE = site_text(
    "agents",
    site={"base_load_kw": 0},
    hashprice=1.0,
    inference={"committed_tokens_s": 0, "committed_usd_per_mtok": 0.6},
    daemon=None,
    devices=device_classes(
        {
            "name": "h100",
            "kind": "gpu",
            "model": "H100 SXM",
            "count": 2,
            "modes": [{"name": "full", "power_kw": 0.7, "throughput_tokens_s": 1000}],
        }
    )
    # the adapter last: each test adds its own settings to it
    + '[devices.adapter]\nkind = "nvml"\nagents = ["10.20.0.1:7731"]\n',
)


def validate(tmp_path: Path, adapter: str) -> tuple[int, str, str]:
    path = tmp_path / "site.toml"
    path.write_text(SITE + adapter + "\n")
    res = run_main("validate", str(path))
    assert "Traceback" not in res.stderr
    return res.returncode, res.stdout, res.stderr


def test_an_unset_secret_variable_is_named_by_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("H4_AGENT_SECRET", raising=False)
    code, out, err = validate(tmp_path, 'agent_secret_env = "H4_AGENT_SECRET"')
    assert code == 2, out + err
    assert "devices[0].adapter.agent_secret_env" in err
    assert "H4_AGENT_SECRET is not set" in err and "valid" not in out


def test_a_secret_file_missing_or_unreadable_is_named_with_its_path(tmp_path: Path) -> None:
    code, _, err = validate(tmp_path, 'agent_secret_file = "agent.secret"')
    assert code == 2 and "devices[0].adapter.agent_secret_file" in err, err
    assert str(tmp_path / "agent.secret") in err and "No such file" in err
    (tmp_path / "agent.secret").mkdir()  # unreadable as a file, even for root
    code, _, err = validate(tmp_path, 'agent_secret_file = "agent.secret"')
    assert code == 2 and "devices[0].adapter.agent_secret_file" in err, err
    assert "Is a directory" in err


def test_a_short_secret_is_refused_without_being_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H4_AGENT_SECRET", "shortish-secret")
    code, out, err = validate(tmp_path, 'agent_secret_env = "H4_AGENT_SECRET"')
    assert code == 2 and "devices[0].adapter.agent_secret_env" in err, err
    assert "shorter than 16" in err and "shortish-secret" not in out + err


def test_a_missing_ca_file_and_an_unset_secret_are_both_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("H4_AGENT_SECRET", raising=False)
    code, _, err = validate(
        tmp_path, 'agent_secret_env = "H4_AGENT_SECRET"\nagent_tls_ca_file = "ca.pem"'
    )
    assert code == 2, err
    assert "devices[0].adapter.agent_secret_env" in err
    assert "devices[0].adapter.agent_tls_ca_file" in err and str(tmp_path / "ca.pem") in err


def test_reachable_settings_pass_and_the_secret_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H4_AGENT_SECRET", SECRET)
    code, out, err = validate(tmp_path, 'agent_secret_env = "H4_AGENT_SECRET"')
    assert code == 0 and "valid" in out, out + err
    assert SECRET not in out + err
    (tmp_path / "agent.secret").write_text(SECRET + "\n")
    code, out, err = validate(tmp_path, 'agent_secret_file = "agent.secret"')
    assert code == 0 and SECRET not in out + err, out + err


def test_the_daemon_names_the_secret_file_key_when_the_file_is_missing(tmp_path: Path) -> None:
    import tomllib

    from adapters import registry
    from models.errors import ConfigError
    from models.site import parse_site

    text = SITE + 'agent_secret_file = "agent.secret"\n'
    config = parse_site(tomllib.loads(text), "site.toml", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        registry.build(config)
    [(key, message)] = err.value.problems
    assert key == "devices.h100.adapter.agent_secret_file", (key, message)  # not ..._env
    assert "No such file" in message
