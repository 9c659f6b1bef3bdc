"""What a new operator types wrong, and what gridsched answers (README, docs/operations.md).

Each case is a mistake made while following the docs on a fresh clone: the answer must name
what is wrong and what is valid, in one message, never a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from models.errors import DataError
from models.market import load_csv_series
from scheduler.audit.store import Store
from scheduler.cli.main import main
from tests.conftest import EXAMPLE


def test_validate_takes_config_like_every_other_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `plan`, `run` and `fleet status` take --config; `validate --config FILE` must not fail
    assert main(["validate", "--config", str(EXAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_without_a_file_names_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: gridsched validate" in err and "config --config is required" in err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["audit", "verify", "--db", "x.db", "--bogus"], "usage: gridsched audit verify"),
        (["plan", "--config", "site.toml", "--horizn", "24h"], "usage: gridsched plan"),
        (["fleet", "status", "--config", "s.toml", "--alll"], "usage: gridsched fleet status"),
    ],
)
def test_an_unknown_flag_is_named_with_its_own_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse reports unknown flags from the root parser, whose usage (built for one
    # command only) listed three commands and not the flags the operator was typing
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert usage in err
    assert f"unrecognized arguments: {argv[-2] if argv[-2].startswith('--') else argv[-1]}" in (err)


@pytest.mark.parametrize("flag", ["--from", "--to"])
def test_a_date_without_a_time_is_told_how_to_write_it(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    Store(db).close()
    times = {"--from": "2026-08-15T00:00:00Z", "--to": "2026-08-16T00:00:00Z"}
    times[flag] = "2026-08-15Z"  # a date with the Z the first message asked for
    argv = ["audit", "export", "--db", str(db), "--from", times["--from"], "--to", times["--to"]]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value.code)
    assert "2026-08-15Z" in message and "2026-08-15T00:00:00Z" in message
    assert "add Z" not in message  # it had a Z: the old advice went round in a circle


def test_plan_start_as_a_date_is_told_how_to_write_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(EXAMPLE), "--start", "2023-08-10Z"]) == 2
    err = capsys.readouterr().err
    assert "2023-08-10T05:00:00Z" in err and "add Z" not in err


def _prices(path: Path, stamps: list[str]) -> Path:
    path.write_text(
        "interval_start_utc,price\n" + "".join(f"{s},{30 + i}\n" for i, s in enumerate(stamps))
    )
    return path


def test_local_offsets_across_a_dst_change_are_read(tmp_path: Path) -> None:
    # 2023-11-05 in Chicago: 01:00-05:00 then 01:00-06:00; both are exact instants
    stamps = [
        "2023-11-05T00:45:00-05:00",
        "2023-11-05T01:00:00-05:00",
        "2023-11-05T01:15:00-05:00",
        "2023-11-05T01:30:00-05:00",
        "2023-11-05T01:45:00-05:00",
        "2023-11-05T01:00:00-06:00",
        "2023-11-05T01:15:00-06:00",
    ]
    series = load_csv_series(_prices(tmp_path / "dst.csv", stamps), "price")
    # regular 15-minute steps with no gap or overlap at the change: every row kept in order
    assert series.interval_s == 15 * 60
    assert series.start_s == 1699163100  # 2023-11-05T05:45:00Z
    assert series.values.tolist() == [30, 31, 32, 33, 34, 35, 36]


def test_one_timestamp_without_offset_among_offsets_names_its_line(tmp_path: Path) -> None:
    stamps = ["2023-08-10T05:00:00Z", "2023-08-10T05:15:00Z", "2023-08-10 05:30"]
    with pytest.raises(DataError) as exc:
        load_csv_series(_prices(tmp_path / "mixed.csv", stamps), "price")
    text = str(exc.value)
    assert "line 4" in text and "'2023-08-10 05:30'" in text and "offset" in text


def test_a_word_among_timestamps_is_still_named_as_not_iso(tmp_path: Path) -> None:
    stamps = ["2023-08-10T05:00:00Z", "yesterday", "2023-08-10T05:30:00Z"]
    with pytest.raises(DataError) as exc:
        load_csv_series(_prices(tmp_path / "word.csv", stamps), "price")
    assert "line 3: interval_start_utc = 'yesterday' is not an ISO 8601" in str(exc.value)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["fleet", "simulate", "--miners", "-5"], "--miners"),
        (["fleet", "simulate", "--gpus", "-1"], "--gpus"),
        (["fleet", "status", "--config", "s.toml", "--concurrency", "0"], "--concurrency"),
        (["fleet", "status", "--config", "s.toml", "--count", "0"], "--count"),
    ],
)
def test_counts_out_of_range_are_refused_before_anything_starts(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --miners -5 simulated nothing and said so only as '0 miners on - .. -';
    # --concurrency 0 made `fleet status` wait forever on a semaphore of zero
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and argv[-1] in err


def test_a_listen_address_without_host_is_explained_not_given_a_regex(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(EXAMPLE.read_text() + '\n[daemon]\nlisten = "8080"\n')
    assert main(["validate", str(site)]) == 2
    err = capsys.readouterr().err
    assert "daemon.listen" in err and "'8080'" in err and "127.0.0.1:8080" in err
    assert "pattern" not in err


@pytest.mark.parametrize("to", ["2023-08-01", "2023-09-01"])
def test_a_backtest_period_that_ends_before_it_starts_is_named(
    to: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a month swapped (--from 2023-09-01 --to 2023-08-01) answered numpy's "negative
    # dimensions are not allowed"
    argv = ["backtest", "--config", str(EXAMPLE), "--from", "2023-09-01", "--to", to]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--to {to}" in err and "--from 2023-09-01" in err and "negative" not in err


@pytest.mark.parametrize("text", ["{bad", "[1, 2]"])
def test_solver_options_that_are_not_a_json_object_name_the_flag(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plan", "--config", str(EXAMPLE), "--horizon", "1h", "--solver-options", text]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--solver-options" in err and "JSON object" in err and "time_limit" in err


@pytest.mark.parametrize("command", ["verify", "export"])
def test_a_mistyped_archive_path_is_not_called_tampering(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `audit verify --archive typo.jsonl` printed "BROKEN: ... [Errno 2] No such file",
    # which reads as a broken chain to whoever settles a DR event with it
    db = tmp_path / "state.db"
    Store(db).close()
    missing = tmp_path / "gridsched-2026h1.jsonl.gz"
    argv = ["audit", command, "--db", str(db), "--archive", str(missing)]
    if command == "export":
        argv += ["--from", "2026-08-15T00:00:00Z", "--to", "2026-08-16T00:00:00Z"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "BROKEN" not in captured.out
    assert f"--archive {missing}: no such file or directory" in captured.err


@pytest.mark.parametrize("command", ["verify", "export", "archive"])
def test_a_database_path_that_is_a_folder_is_not_called_corrupt(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bad-input walk (session 23, L12): `audit verify --db /tmp` said "BROKEN: ... the
    database is corrupt or not a gridsched database ...; restore it from a backup", wrong
    and alarming advice for a mistyped path."""
    argv = ["audit", command, "--db", str(tmp_path)]
    if command == "export":
        argv += ["--from", "2026-08-15T00:00:00Z", "--to", "2026-08-16T00:00:00Z"]
    if command == "archive":
        argv += ["--before", "2026-07-01T00:00:00Z", "--out", str(tmp_path / "a.jsonl.gz")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "BROKEN" not in captured.out and "corrupt" not in captured.err
    assert f"{tmp_path}: is a directory; name the state file" in captured.err, captured.err


def test_a_signal_that_ended_before_now_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the daemon stores such an event and answers 202 'accepted', though it will never
    # cap anything: an operator who mistyped the year should hear it from the sender
    import base64
    from http.server import BaseHTTPRequestHandler

    from tests.support.httpserver import loopback_http

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(202)
            self.end_headers()
            self.wfile.write(b'{"accepted":true}')

        def log_message(self, *args: object) -> None:
            pass

    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    monkeypatch.setenv("GRIDSCHED_WEBHOOK_SECRET", secret)
    with loopback_http(Accept) as url:
        argv = ["signal", "curtail", "--level", "3", "--url", url]
        assert main([*argv, "--start", "2024-08-10T20:00:00Z", "--duration", "3h"]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("202")
        assert "ended at 2024-08-10T23:00:00Z, before now" in captured.err
        assert main([*argv, "--duration", "3h"]) == 0  # from now: nothing to say
        assert "before now" not in capsys.readouterr().err


def test_the_daemons_log_at_info_leaves_out_apschedulers_job_chatter() -> None:
    """At the default level APScheduler's per-job INFO lines (every poll) are not logged;
    its warnings (a run missed) are; at DEBUG everything is."""
    from scheduler.cli.run import configure_logging

    aps = logging.getLogger("apscheduler.executors.default")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("info")
        assert not aps.isEnabledFor(logging.INFO) and aps.isEnabledFor(logging.WARNING)
        assert logging.getLogger("gridsched").isEnabledFor(logging.INFO)
        configure_logging("debug")
        assert aps.isEnabledFor(logging.DEBUG)
    finally:
        from adapters.library_logs import OURS, LibraryRecords

        for name in ("apscheduler", *OURS):
            logging.getLogger(name).setLevel(logging.NOTSET)
        for f in list(root.filters):
            if isinstance(f, LibraryRecords):
                root.removeFilter(f)
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def test_a_refused_simple_signal_shows_what_was_sent_not_what_the_daemon_added() -> None:
    """The 422's ``got`` for an event missing its start is the sender's own object: the
    ``"source": "simple"`` the daemon adds before validating is not in it."""
    from scheduler.service.api import _simple_events
    from scheduler.service.intake import Refused

    with pytest.raises(Refused) as exc:
        _simple_events(b'{"type": "curtail", "limit_kw": 5}', [], {})
    gots = [p["got"] for p in exc.value.detail]
    assert gots and all("source" not in g for g in gots), gots
    assert any("limit_kw" in g for g in gots), gots


def test_fleet_status_names_a_model_once_with_its_make() -> None:
    """A newcomer's walk: fleet status showed "NVIDIA NVIDIA H100 SXM (simulated)", the
    make before a model name (NVML's) that already begins with it."""
    from scheduler.cli.fleet_report import make_model

    assert make_model("NVIDIA", "NVIDIA H100 SXM") == "NVIDIA H100 SXM"
    assert make_model("Bitmain", "Antminer S21") == "Bitmain Antminer S21"
    assert make_model("", "") == "-"


@pytest.mark.parametrize("flag", ["--json-out", "--csv"])
def test_an_output_path_that_cannot_be_written_is_said_without_a_traceback(
    tmp_path: Path, flag: str
) -> None:
    """The bad-input walk (session 23): `plan --json-out /tmp` (a directory) ended in an
    IsADirectoryError traceback."""
    from tests.support.cli import run_main

    site = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "west-texas-30mw.toml"
    res = run_main("plan", "--config", str(site), flag, str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert f"gridsched: error: {flag} {tmp_path}: is a directory" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00Z", "9999-12-31T23:00:00Z"])
def test_a_plan_start_out_of_any_market_s_years_is_said_without_a_traceback(start: str) -> None:
    """The bad-input walk (session 23): OverflowError and NotImplementedError tracebacks."""
    from tests.support.cli import run_main

    site = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "west-texas-30mw.toml"
    res = run_main("plan", "--config", str(site), "--start", start)
    assert res.returncode == 2 and "a year from 1970 to 2099" in res.stderr, res.stderr


@pytest.mark.parametrize("command", ["plan", "backtest"])
def test_a_plot_path_is_the_file_written_or_refused_before_the_work(
    tmp_path: Path, command: str
) -> None:
    """The bad-input walk (session 23, M2): `backtest --plot /tmp` said "wrote plot: /tmp"
    and wrote /tmp.png (matplotlib adds .png to a name without one), a file nobody named;
    a backtest's output paths were only tried after the whole run."""
    from tests.support.cli import run_main

    site = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "west-texas-30mw.toml"
    args = ["--config", str(site)]
    if command == "backtest":
        args += ["--from", "2023-08-10", "--to", "2023-08-11"]
    res = run_main(command, *args, "--plot", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert f"--plot {tmp_path}: is a directory; name a .png file" in res.stderr, res.stderr
    assert not Path(f"{tmp_path}.png").exists()
    res = run_main(command, *args, "--plot", str(tmp_path / "chart"))
    assert res.returncode == 2, res.stderr
    assert "--plot" in res.stderr and "chart.png" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []
    res = run_main(command, *args, "--json-out", str(tmp_path / "no" / "such.json"))
    assert res.returncode == 2 and "does not exist" in res.stderr, res.stderr


@pytest.mark.parametrize("when", ["0001-01-01", "2300-01-01", "1969-12-31T00:00:00Z"])
def test_a_backtest_period_out_of_any_market_s_years_is_said_so(when: str) -> None:
    """The bad-input walk (session 23, L13): `backtest --from 0001-01-01` was named as off
    the decision grid ("must fall on the 15min decision grid"), a local-mean-time offset of
    the year 1 speaking; the year is what is wrong."""
    from tests.support.cli import run_main

    site = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "west-texas-30mw.toml"
    res = run_main("backtest", "--config", str(site), "--from", when, "--to", when)
    assert res.returncode == 2, res.stderr
    assert f"--from {when!r}: a year from 1970 to 2099 is needed" in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("argv", "dest", "seconds"),
    [
        (["fleet", "simulate", "--duration", "2s"], "duration", 2.0),
        (["fleet", "simulate", "--duration", "10min"], "duration", 600.0),
        (["fleet", "simulate", "--duration", "1.5"], "duration", 1.5),
        (["fleet", "fault", "slow", "--duration", "1h", "--delay", "0.5"], "duration", 3600.0),
        (["fleet", "fault", "slow", "--delay", "0.5s"], "delay", 0.5),
        (["fleet", "status", "--config", "x.toml", "--watch", "1min"], "watch", 60.0),
    ],
)
def test_a_seconds_option_takes_a_duration_as_the_others_do(
    argv: list[str], dest: str, seconds: float
) -> None:
    """The bad-input walk (session 23, L14): `fleet simulate --duration 2s` was "invalid
    float value: '2s'", while every other duration option takes 2s or 10min."""
    from scheduler.cli.main import build_parser

    args = build_parser("fleet").parse_args(argv)
    assert getattr(args, dest) == pytest.approx(seconds)


def test_a_seconds_option_names_what_it_takes(capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser("fleet").parse_args(["fleet", "simulate", "--duration", "soon"])
    err = capsys.readouterr().err
    assert "--duration" in err and "'soon'" in err and "e.g. 30, 30s, 10min" in err, err


def test_a_market_that_contradicts_the_price_file_s_own_is_refused() -> None:
    """The analyst's walk (session 23, left open): `--price-format ercot-rtm --market PJM`
    was taken, and the ERCOT file replayed under PJM's publication times and settlement
    interval, the report saying PJM."""
    from tests.support.cli import run_main

    site = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "west-texas-30mw.toml"
    res = run_main(
        "backtest", "--config", str(site), "--prices", str(site), "--price-format", "ercot-rtm",
        "--price-column", "HB_WEST",
        "--market", "PJM", "--from", "2023-08-10", "--to", "2023-08-11",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "--market PJM" in res.stderr and "ERCOT" in res.stderr, res.stderr


def test_fleet_fault_takes_its_hosts_after_its_options() -> None:
    """The SRE's walk (session 24, N6): `fleet fault slow --delay 2.5 127.41.1.1` was
    "unrecognized arguments: 127.41.1.1" (argparse's positional `nargs='*'` takes nothing
    once an option came between); the docs' own examples put the hosts first."""
    from scheduler.cli.main import build_parser, parse

    args = parse(
        build_parser("fleet"),
        ["fleet", "fault", "slow", "--delay", "2.5", "127.0.0.9", "127.0.0.10"],
    )
    assert args.hosts == ["127.0.0.9", "127.0.0.10"] and args.delay == 2.5
    args = parse(build_parser("fleet"), ["fleet", "fault", "slow", "127.0.0.9", "--delay", "2.5"])
    assert args.hosts == ["127.0.0.9"]


def test_the_demo_defaults_to_the_shipped_simulated_site() -> None:
    """`python -m scheduler.cli.demo` without --config named
    scheduler/deploy/examples/simulated-site.toml, which does not exist (the lead's walk,
    session 25); the Makefile passes --config, so make demo never showed it."""
    from scheduler.cli import demo

    site = demo.ROOT / "deploy" / "examples" / "simulated-site.toml"
    assert site.is_file(), site
