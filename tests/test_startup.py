"""``gridsched run`` refuses, at start-up and before touching a device, what cannot work:
each refusal is one line naming what is wrong and how to fix it, with a non-zero exit."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scheduler.audit.store import Store
from tests.conftest import ROOT
from tests.test_daemon import OADR_TOKEN, SECRET, DaemonProc, now_iso, post_signal

GOOD_ENV = {"GRIDSCHED_WEBHOOK_SECRET": SECRET, "GRIDSCHED_OPENADR_TOKENS": OADR_TOKEN}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSCHED_")}
    return {**env, **extra}


def run_cli(
    site: Path, db: Path, env: dict[str, str], port: int | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``gridsched run`` expected to refuse, run by ``main`` in this process with ``env``'s
    GRIDSCHED_ variables (no interpreter to start: about 3 s of CPU each, a dozen times).
    Everything that refuses does so before serving; should it get that far, the test fails
    instead of serving. Without ``port`` it would listen on one the OS picks (port 0)."""
    from scheduler.cli import run as run_command
    from scheduler.cli.main import main

    argv = ["run", "--config", str(site), "--db", str(db),
            "--listen", f"127.0.0.1:{port or 0}", "--log-level", "warning", *extra]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()

    def serve(*args: object) -> None:
        raise AssertionError("gridsched run did not refuse: it went on to serve")

    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("GRIDSCHED_")]:
            mp.delenv(k)
        for k, v in env.items():
            if k.startswith("GRIDSCHED_"):
                mp.setenv(k, v)
        mp.setattr(logging, "basicConfig", lambda **kw: None)  # the test run's logging stays
        mp.setattr(run_command, "_serve", serve)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def refusal(res: subprocess.CompletedProcess[str]) -> str:
    """The refusal's text, checked to be short, with no traceback and nothing on stdout."""
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "serving" not in res.stdout, res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 3, res.stderr
    assert all(ln.startswith("gridsched: error: ") for ln in lines), res.stderr
    return res.stderr


@pytest.fixture
def site(tmp_path: Path) -> DaemonProc:
    return DaemonProc(tmp_path)


# -- secrets ---------------------------------------------------------------------------------


def _shipped_env() -> dict[str, str]:
    """deploy/systemd/gridsched.env as systemd's EnvironmentFile= reads it."""
    out = {}
    for line in (ROOT / "deploy" / "systemd" / "gridsched.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (_shipped_env(), ["GRIDSCHED_WEBHOOK_SECRET", "placeholder", "head -c 24 /dev/urandom"]),
        (
            {"GRIDSCHED_WEBHOOK_SECRET": f"{SECRET},whsec_not*base64"},
            ["GRIDSCHED_WEBHOOK_SECRET", "entry 2 of 2", "base64"],
        ),
        (
            {"GRIDSCHED_WEBHOOK_SECRET": SECRET, "GRIDSCHED_OPENADR_TOKENS": "CHANGE_ME"},
            ["GRIDSCHED_OPENADR_TOKENS", "placeholder"],
        ),
        (
            {"GRIDSCHED_WEBHOOK_SECRET_FILE": "/nonexistent/gridsched/webhook.secret"},
            ["GRIDSCHED_WEBHOOK_SECRET_FILE", "/nonexistent/gridsched/webhook.secret"],
        ),
    ],
    ids=["shipped-env-file", "bad-rotation-entry", "placeholder-token", "missing-file"],
)
def test_unusable_secrets_are_refused_before_anything_starts(
    site: DaemonProc, env: dict[str, str], words: list[str]
) -> None:
    res = run_cli(site.site, site.db, _clean_env(**env))
    text = refusal(res)
    assert res.returncode == 2
    for w in words:
        assert w in text
    assert SECRET not in text  # a secret is never printed
    assert not site.db.exists()  # refused before the state file was opened


def test_empty_secret_file_is_refused(site: DaemonProc, tmp_path: Path) -> None:
    empty = tmp_path / "webhook.secret"
    empty.write_text("\n")
    res = run_cli(site.site, site.db, _clean_env(GRIDSCHED_WEBHOOK_SECRET_FILE=str(empty)))
    assert res.returncode == 2 and "is empty" in refusal(res)


def test_read_tokens_required_but_missing_is_refused(site: DaemonProc) -> None:
    site.site.write_text(
        site.site.read_text().replace("[daemon]\n", "[daemon]\nrequire_read_token = true\n")
    )
    res = run_cli(site.site, site.db, _clean_env(**GOOD_ENV))
    assert res.returncode == 2 and "GRIDSCHED_READ_TOKENS" in refusal(res)


# -- the state file ----------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_refused(site: DaemonProc) -> None:
    site.db.write_bytes(b"this is not SQLite, it is a text file\n" * 200)
    res = run_cli(site.site, site.db, _clean_env(**GOOD_ENV))
    text = refusal(res)
    assert res.returncode == 3
    assert str(site.db) in text and "not a gridsched database" in text
    assert "move it aside" in text  # how to fix it


def _filled_store(path: Path, n: int = 300) -> None:
    s = Store(path)
    for i in range(n):
        s._read.execute(  # a plain insert: the chain is not what this test is about
            "INSERT INTO log(seq, at, kind, payload, prev, hash) VALUES (?,?,?,?,?,?)",
            (i + 1, float(i), "telemetry", "x" * 900, "p", "h"),
        )
    s.close()


def test_a_corrupt_page_is_found_at_start_up(site: DaemonProc) -> None:
    _filled_store(site.db)
    con = sqlite3.connect(site.db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = int(con.execute("PRAGMA page_size").fetchone()[0])
    con.close()
    data = bytearray(site.db.read_bytes())
    assert len(data) > 20 * page
    data[10 * page : 10 * page + 64] = b"\xff" * 64  # a b-tree page header, overwritten
    site.db.write_bytes(bytes(data))
    res = run_cli(site.site, site.db, _clean_env(**GOOD_ENV))
    text = refusal(res)
    assert res.returncode == 3 and "corrupt" in text and str(site.db) in text


def test_state_file_of_another_site_is_refused(site: DaemonProc) -> None:
    from scheduler.audit.identity import claim_site

    # the state file as site "daemon test"'s daemon leaves it: its store, claimed by it (as
    # gridsched run claims it at start; no daemon process needed to make it)
    Store(site.db).close()
    assert claim_site(site.db, "daemon test") is None
    renamed = site.site.read_text().replace('name = "daemon test"', 'name = "another site"')
    site.site.write_text(renamed)
    res = run_cli(site.site, site.db, _clean_env(**GOOD_ENV))
    text = refusal(res)
    assert res.returncode == 3
    assert "'daemon test'" in text and "'another site'" in text and "--adopt-state" in text


# -- a second instance -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    d = DaemonProc(tmp_path_factory.mktemp("first"))
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def test_second_instance_on_the_same_state_file_is_refused(
    first: DaemonProc, tmp_path: Path
) -> None:
    other = DaemonProc(tmp_path)
    res = run_cli(other.site, first.db, _clean_env(**GOOD_ENV))
    text = refusal(res)
    assert res.returncode == 4 and str(first.db) in text and "in use" in text
    # the first one still takes signals and stays healthy
    ok = post_signal(
        first.url, {"id": "after-second", "type": "alert", "level": 1, "start": now_iso()}
    )
    assert ok.status_code == 202, ok.text
    assert httpx.get(first.url + "/healthz", timeout=30).status_code == 200


def test_second_instance_on_a_taken_port_touches_no_device(
    first: DaemonProc, tmp_path: Path
) -> None:
    other = DaemonProc(tmp_path)
    res = run_cli(other.site, other.db, _clean_env(**GOOD_ENV), first.port)
    text = refusal(res)
    assert res.returncode == 4 and f"127.0.0.1:{first.port}" in text and "--listen" in text
    # refused before the state file was opened, so before any device was started
    assert not other.db.exists()


def test_taken_simulator_address_names_it_and_sim_base(tmp_path: Path) -> None:
    d = DaemonProc(tmp_path)
    first = d.base.rsplit(".", 1)[0] + ".1"
    with socket.socket() as s:
        s.bind((first, 4028))
        s.listen()
        res = run_cli(d.site, d.db, _clean_env(**GOOD_ENV))
    text = refusal(res)
    assert first in text and "sim_base" in text


def test_a_site_nothing_can_measure_is_refused(site: DaemonProc) -> None:
    text = site.site.read_text()
    no_adapters = "\n".join(
        ln
        for ln in text.splitlines()
        if not ln.startswith(("[devices.adapter]", 'kind = "sim"', "sim_", "timeout_s"))
    )
    site.site.write_text(no_adapters)
    res = run_cli(site.site, site.db, _clean_env(**GOOD_ENV))
    text = refusal(res)
    assert res.returncode == 2 and "[site.meter]" in text and "[devices.adapter]" in text
