"""deploy/: Prometheus config and alert rules (promtool), a real Prometheus scraping the
daemon, the systemd unit, the compose file and the Grafana dashboard.

Prometheus and promtool come from Debian's ``prometheus`` package; the fixture installs it
when it is missing and this user may (root with apt-get), and skips with the reason
otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.child import Child
from tests.support.cli import run_main
from tests.support.daemon import free_loopback_base
from tests.support.wait import readline
from tests.test_daemon import DaemonProc, now_iso, post_signal, serving, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
#: the line Prometheus logs once its web server listens, with the port it got
PROM_LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


@pytest.fixture(scope="session")
def prometheus_bins() -> tuple[str, str]:
    promtool, prom = shutil.which("promtool"), shutil.which("prometheus")
    if promtool and prom:
        return promtool, prom
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip(
            "Prometheus is not installed and cannot be installed here (needs root and apt-get)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    res = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
    if res.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(
            [apt, "update", "-q"], env=env, capture_output=True, timeout=600, check=False
        )
        res = subprocess.run(
            install, env=env, capture_output=True, text=True, timeout=900, check=False
        )
    promtool, prom = shutil.which("promtool"), shutil.which("prometheus")
    if res.returncode != 0 or not (promtool and prom):
        pytest.skip(f"installing Debian's prometheus failed: {res.stderr.strip()[-300:]}")
    return promtool, prom


def run_ok(*cmd: str, cwd: Path | None = None) -> str:
    res = subprocess.run(
        list(cmd), capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def alert_names() -> set[str]:
    rules = yaml.safe_load((PROM / "gridsched.rules.yml").read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"]}


def test_promtool_checks_config_and_rules(prometheus_bins: tuple[str, str]) -> None:
    promtool, _ = prometheus_bins
    assert "SUCCESS" in run_ok(promtool, "check", "config", str(PROM / "prometheus.yml"))
    checked = run_ok(promtool, "check", "rules", str(PROM / "gridsched.rules.yml"))
    assert f"{len(alert_names())} rules found" in checked
    assert "SUCCESS" in run_ok(promtool, "test", "rules", "gridsched.rules.test.yml", cwd=PROM)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = alert_names()
    tests = yaml.safe_load((PROM / "gridsched.rules.test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
            # a case that fires also shows the alert quiet for the other series of the test
            if case["exp_alerts"] and len(t["input_series"]) > len(case["exp_alerts"]):
                quiet.add(case["alertname"])
    assert fired == alerts, alerts - fired
    assert quiet == alerts, alerts - quiet


def test_compose_prometheus_config(prometheus_bins: tuple[str, str], tmp_path: Path) -> None:
    promtool, _ = prometheus_bins
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(PROM / "gridsched.rules.yml", tmp_path / "gridsched.rules.yml")
    assert "SUCCESS" in run_ok(promtool, "check", "config", str(tmp_path / "prometheus.yml"))


def test_real_prometheus_scrapes_the_daemon_and_sees_a_curtailment(
    prometheus_bins: tuple[str, str], tmp_path: Path
) -> None:
    _, prom = prometheus_bins
    d = DaemonProc(tmp_path)
    d.mining_at_every_hour()
    d.start()
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROM / "gridsched.rules.yml")],
        "scrape_configs": [
            {"job_name": "gridsched", "static_configs": [{"targets": [f"127.0.0.1:{d.port}"]}]}
        ],
    }
    (tmp_path / "prom.yml").write_text(yaml.safe_dump(cfg))
    # port 0: Prometheus says the port it got ("Listening on"); its output is read by a thread
    prom_proc = Child([prom, f"--config.file={tmp_path / 'prom.yml'}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       "--web.listen-address=127.0.0.1:0"])  # fmt: skip
    try:
        port = int(prom_proc.wait_line(PROM_LISTENING, 60).group(1))
    except BaseException:
        prom_proc.stop()
        d.stop()
        raise
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> list[dict[str, Any]]:
        try:  # 503 "Service Unavailable" (text) while Prometheus starts
            r = httpx.get(api + "/query", params={"query": q}, timeout=30).json()
        except (httpx.HTTPError, ValueError):
            return []
        out: list[dict[str, Any]] = r.get("data", {}).get("result", [])
        return out

    try:
        wait_for(lambda: query('up{job="gridsched"} == 1'), 60)
        # the miners up (in whichever mode the plan finds best; the hashprice above makes
        # mining pay at every hour of the demo prices)
        seen = wait_for(lambda: query('gridsched_site_power_watts{kind="import"} > 30000'), 60)
        limit_kw = round(0.6 * float(seen[0]["value"][1]) / 1000.0)  # a cap that must shed
        r = post_signal(
            d.url,
            {
                "id": "prom-1",
                "type": "curtail",
                "start": now_iso(-1),
                "duration": "1h",
                "limit_kw": limit_kw,
            },
        )
        assert r.status_code == 202
        # PromQL sees the cap drop and the measured import follow it below the cap
        wait_for(lambda: query(f"gridsched_site_import_cap_watts == {limit_kw * 1000}"), 30)
        under = f'gridsched_site_power_watts{{kind="import"}} <= {limit_kw * 1000}'
        wait_for(lambda: query(under), 40)
        most = 'max_over_time(gridsched_site_power_watts{kind="import"}[5m])'
        assert query(f"{most} > {limit_kw * 1000}")
        assert query('gridsched_signals_active{type="curtail"} == 1')
        rules = httpx.get(api + "/rules", timeout=30).json()["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} == alert_names(), rules
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        prom_proc.stop()
        d.stop()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "systemd" / "gridsched.service").read_text()
    assert "WatchdogSec=" in text and "Type=notify" in text and "StateDirectory=gridsched" in text
    # Verify it as installed: the executable where this checkout has it.
    gridsched = Path(sys.executable).with_name("gridsched")
    names = ["gridsched.service", "gridsched-archive.service", "gridsched-archive.timer"]
    for name in names:
        (tmp_path / name).write_text(
            (DEPLOY / "systemd" / name)
            .read_text()
            .replace("/opt/gridsched/.venv/bin/gridsched", str(gridsched))
            .replace("EnvironmentFile=/etc", "EnvironmentFile=-/etc")
        )
    res = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [
        line
        for line in (res.stdout + res.stderr).splitlines()
        if any(n.split(".")[0] in line for n in names)
    ]
    assert res.returncode == 0 and not problems, problems
    archive = (DEPLOY / "systemd" / "gridsched-archive.service").read_text()
    assert "--older-than 90d --out-dir ${STATE_DIRECTORY}/archive" in archive
    assert "StateDirectory=gridsched" in archive and "User=gridsched" in archive


def test_compose_file_is_consistent() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"fleet", "gridsched", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: image {image!r} is not pinned"
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), src
    container = (DEPLOY / "container" / "Containerfile").read_text()
    assert re.search(r"^FROM \S+:\d+\.\d+\.\d+-slim", container, re.M)
    config = services["gridsched"]["command"][
        services["gridsched"]["command"].index("--config") + 1
    ]
    assert config.removeprefix("/opt/gridsched/") in container


def test_grafana_dashboard_matches_generator_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        import make_dashboard
    finally:
        sys.path.pop(0)
    committed = json.loads((DEPLOY / "grafana" / "gridsched.json").read_text())
    assert committed == make_dashboard.dashboard(), "run deploy/grafana/make_dashboard.py"
    assert committed["schemaVersion"] == 39 and len({p["id"] for p in committed["panels"]}) == len(
        committed["panels"]
    )
    exprs = [t["expr"] for p in committed["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in committed["annotations"]["list"]]
    used = {m for e in exprs for m in re.findall(r"\b(gridsched_[a-z_]+)", e)}
    # the daemon's /metrics as served (in this process, tests/support/serve.py: the same
    # app and registry as gridsched run's, without a process to start)
    with serving(tmp_path, monkeypatch) as d:
        assert d.call(d.daemon.replan("start")) is not None  # as a process does on start
        text = httpx.get(d.url + "/metrics", timeout=10).text
    exported = set(re.findall(r"^(?:# TYPE )?(gridsched_[a-z_]+)", text, re.M))
    assert used <= exported, sorted(used - exported)


def _not_ok(stdout: str) -> str:
    """The devices of a ``fleet status --json`` answer that are not ok, for a failure."""
    try:
        devices = json.loads(stdout)["devices"]
    except (ValueError, KeyError, TypeError):
        return stdout[-2000:]
    bad = [f"{d['id']}: {d['health']} {d.get('error')}" for d in devices if d["health"] != "ok"]
    return f"{len(bad)} of {len(devices)} not ok: " + "; ".join(bad[:20])


def test_compose_site_drives_the_compose_fleet(tmp_path: Path) -> None:
    """The fleet container's command and the site the gridsched container runs agree.

    Both run here moved together onto a loopback /24 no other run holds and a control port
    the OS picks (the compose addresses are fixed; two runs on one host would collide)."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    fleet_cmd = list(doc["services"]["fleet"]["command"])
    shipped_base = fleet_cmd[fleet_cmd.index("--base") + 1]
    shipped_port = fleet_cmd[fleet_cmd.index("--control-port") + 1]
    base = free_loopback_base(int(fleet_cmd[fleet_cmd.index("--miners") + 1]))
    fleet_cmd[fleet_cmd.index("--base") + 1] = base
    fleet_cmd[fleet_cmd.index("--control-port") + 1] = "0"
    sim = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", *fleet_cmd], stdout=subprocess.PIPE, text=True
    )
    try:
        first = readline(sim.stdout)
        control = re.search(r"control (127\.0\.0\.1:\d+)", first)
        assert "simulating" in first and control is not None, first
        shipped = (DEPLOY / "compose" / "site.toml").read_text()
        assert f'"127.0.0.1:{shipped_port}"' in shipped and f"{shipped_base[:-1]}1-" in shipped
        site = tmp_path / "site.toml"
        moved = shipped.replace(f'"127.0.0.1:{shipped_port}"', f'"{control.group(1)}"')
        # healthy simulated miners get 10 s: a loaded host's first identification of 200
        # of them at once can outlast the adapter's default 3 s (seen in a niced CI run)
        moved = moved.replace('kind = "pyasic"\n', 'kind = "pyasic"\ntimeout_s = 10\n')
        site.write_text(moved.replace(shipped_base[:-1], base[:-1]))
        # the command by its main in this process (tests/support/cli.py): its output and
        # exit code are what is read, and an interpreter cost 5 s on a loaded host
        res = run_main("fleet", "status", "--json", "--config", str(site))
        assert res.returncode == 0, _not_ok(res.stdout) + res.stderr[-2000:]
        devices = json.loads(res.stdout)["devices"]
        assert len(devices) == 208 and all(d["health"] == "ok" for d in devices)
        models = {d["class"] for d in devices}
        assert models == {"s19jpro", "s21", "h100"}
    finally:
        sim.terminate()
        sim.wait(10)
