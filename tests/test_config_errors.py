"""Every kind of bad input names the key, line or value and what would be valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.errors import ConfigError, DataError
from models.market import load_csv_series, load_ercot_rtm, regularise
from models.signals import load_events
from models.site import load_site, parse_site
from tests.conftest import EXAMPLE, flat_series, site_dict


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


def test_example_config_is_valid() -> None:
    cfg = load_site(EXAMPLE)
    assert [d.name for d in cfg.devices] == ["s19jpro", "s21", "h100"]
    assert cfg.devices[0].modes[1].power_kw == pytest.approx(3.05)
    assert cfg.devices[2].modes[2].name == "infer@350W"


def test_unknown_key_is_named() -> None:
    d = site_dict()
    d["site"]["interconect_kw"] = 5
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert "site.interconect_kw" in problems(exc)
    assert "unknown key" in problems(exc)["site.interconect_kw"]


def test_unknown_key_says_the_nearest_and_the_valid_keys() -> None:
    """The docs walk (session 23): "unknown key (check the spelling...)" named neither the
    key meant nor those the section takes."""
    d = site_dict()
    d["site"]["interconect_kw"] = 5
    d["devices"][0]["modes"][0]["powr_kw"] = 3
    d["daemon"] = {"pol_s": 5}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    site = problems(exc)["site.interconect_kw"]
    assert "did you mean 'interconnect_kw'?" in site and "pue" in site, site
    mode = problems(exc)["devices[0].modes[0].powr_kw"]
    assert "did you mean 'power_kw'?" in mode and "hashrate_ths" in mode, mode
    assert "did you mean 'poll_s'?" in problems(exc)["daemon.pol_s"]
    d = site_dict()
    d["sight"] = {}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    top = problems(exc)["sight"]  # base_dir is set from the file's directory, no key
    assert "did you mean 'site'?" in top and "devices" in top and "base_dir" not in top, top
    d = site_dict()
    d["site"]["zzzz"] = 1
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    alone = problems(exc)["site.zzzz"]
    assert "did you mean" not in alone and "interconnect_kw" in alone, alone


def test_an_events_file_error_is_in_our_words_not_the_library_s() -> None:
    """The docs walk (session 23): "[0]: Value error, limit_kw and level are both given...",
    pydantic's prefix in front of ours, and the whole event after it."""
    from models.signals import parse_events

    both = {"id": "e1", "type": "curtail", "start": "2026-12-02T12:00:00Z", "duration": "1h"}
    with pytest.raises(ConfigError) as exc:
        parse_events(
            [{**both, "limit_kw": 5, "level": 2}, {**both, "id": "e2", "limit_kw": -1}], "ev.json"
        )
    got = problems(exc)
    assert got["[0]"].startswith("limit_kw and level are both given"), got
    assert "'duration'" not in got["[0]"], got  # not the whole event again
    assert "Value error" not in str(exc.value), got
    assert "(got -1" in got["[1].limit_kw"], got


def _asic(name: str, hosts: list[str], count: int) -> dict[str, object]:
    return {
        "name": name,
        "kind": "asic",
        "model": "S19j Pro",
        "count": count,
        "adapter": {"kind": "pyasic", "hosts": hosts},
    }


def test_a_wide_address_block_is_refused_without_being_listed() -> None:
    """The bad-input walk (session 23): hosts = ["10.0.0.0/8"] (a mistyped /24) was listed
    address by address before being compared with count: minutes and gigabytes."""
    d = site_dict(devices=[_asic("a", ["10.0.0.0/8"], 5)])
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert "16,777,216 addresses, more than 65536" in str(exc.value), str(exc.value)


def test_two_classes_listing_the_same_miner_are_refused() -> None:
    """The bad-input walk (session 23): two classes could list the same addresses; the
    miners were counted twice, as two models, and both classes would drive them."""
    d = site_dict(
        devices=[
            _asic("a", ["10.0.0.1-10.0.0.5"], 5),
            _asic("b", ["10.0.0.4-10.0.0.8"], 5),
        ]
    )
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    text = str(exc.value)
    assert "'a' and 'b' both list 2 address(es)" in text and "10.0.0.4" in text, text


def test_events_file_ids_are_unique_and_have_no_control_characters() -> None:
    """The bad-input walk (session 23): two events with one id in a file, the earlier was
    dropped silently (the API refuses the same list); an id with a newline went raw into
    the daemon's log lines."""
    from models.signals import parse_events

    ev = {"id": "e1", "type": "curtail", "start": "2026-12-02T12:00:00Z", "limit_kw": 5}
    with pytest.raises(ConfigError) as exc:
        parse_events([ev, {**ev, "limit_kw": 9}], "ev.json")
    assert "'e1' is also event [0]'s" in problems(exc)["[1].id"]
    with pytest.raises(ConfigError) as exc:
        parse_events([{**ev, "id": "a\nERROR forged"}], "ev.json")
    assert "[0].id" in problems(exc), problems(exc)


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("horizon", "forever", "daemon.horizon"),
        ("step", "0min", "daemon.step"),
        ("listen", "127.0.0.1:99999", "daemon.listen"),
    ],
)
def test_daemon_timing_and_listen_are_checked_by_the_file_s_own_validation(
    key: str, value: str, said: str
) -> None:
    """The bad-input walk (session 23): validate passed horizon = "forever" and a port of
    99999; run then refused with "duration 'forever' is not understood", naming neither."""
    d = site_dict()
    d["daemon"] = {key: value}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert said in problems(exc), problems(exc)


def test_true_where_a_number_is_meant_is_refused() -> None:
    """The bad-input walk (session 23): interconnect_kw = true was read as 1 kW and
    count = true as one unit."""
    d = site_dict()
    d["site"]["interconnect_kw"] = True
    d["devices"][0]["count"] = True
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    got = problems(exc)
    assert "not true" in got["site.interconnect_kw"], got
    assert "not true" in got["devices[0].count"], got


@pytest.mark.parametrize(
    ("where", "key"),
    [
        (("site", "current_load_kw"), "site.current_load_kw"),
        (("inference", "committed_tokens_s"), "inference.committed_tokens_s"),
        (("devices", 0, "modes", 0, "power_kw"), "devices[0].modes[0].power_kw"),
    ],
)
def test_a_number_beyond_any_site_is_named_before_the_solver_sees_it(
    where: tuple[str | int, ...], key: str
) -> None:
    """The bad-input walk (session 23, M7): current_load_kw = 1e308 (or 1e300 committed
    tokens/s) passed validate; plan then said only "HiGHS refused the model", naming
    nothing, and a daemon would fail every re-plan the same way."""
    d = site_dict(inference={"committed_tokens_s": 10.0})
    node: Any = d
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = 1e308
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    got = problems(exc)
    assert "beyond any site's figure" in got[key] and "1e+308" in got[key], got


@pytest.mark.parametrize("value", ["1e308", "inf", "-1e20"])
def test_a_price_beyond_any_market_names_its_line(tmp_path: Path, value: str) -> None:
    """The bad-input walk (session 23, M7): a price row of 1e308 gave numpy overflow
    warnings, a "min nan, mean nan, max nan" summary and "NO PLAN: solver highs ended with
    error (Unknown)", the line never named."""
    f = tmp_path / "p.csv"
    f.write_text(f"ts,price\n2023-01-01T00:00:00Z,10\n2023-01-01T01:00:00Z,{value}\n")
    with pytest.raises(DataError, match=f"line 3: price = '{value}' is beyond any"):
        load_csv_series(f, "price", "ts")


def test_a_host_dependent_zone_and_a_peak_window_in_no_month_are_refused() -> None:
    """The bad-input walk (session 23, L15): `timezone = "localtime"` was taken (this host's
    zone: another host reads the same file differently), and a coincident peak with
    `months = []` (a window that never applies) passed silently."""
    d = site_dict()
    d["site"]["timezone"] = "localtime"
    d["tariff"] = {
        "coincident_peaks": [
            {"name": "ERCOT 4CP", "months": [], "start": "15:00", "end": "18:00", "usd_per_kw": 5}
        ]
    }
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    got = problems(exc)
    assert "this host's" in got["site.timezone"], got
    assert "at least one month" in got["tariff.coincident_peaks[0].months"], got


@pytest.mark.parametrize("name", ["x" * 100_000, "site\u202eevil", "two\nlines"])
def test_a_site_name_that_would_garble_reports_and_logs_is_refused(name: str) -> None:
    """The bad-input walk (session 23, L15): a site name of 100,000 characters, or with a
    right-to-left override (U+202E) or a line break, was echoed raw into reports, logs,
    metrics labels and the audit trail."""
    d = site_dict()
    d["site"]["name"] = name
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert "site.name" in problems(exc), problems(exc)


def test_bad_value_names_path_and_value() -> None:
    d = site_dict()
    d["devices"][0]["modes"][0]["power_kw"] = -3
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    msg = problems(exc)["devices[0].modes[0].power_kw"]
    assert "greater than 0" in msg and "-3" in msg


def test_missing_required_key() -> None:
    d = site_dict()
    del d["site"]["interconnect_kw"]
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert problems(exc)["site.interconnect_kw"] == "required key is missing"


def test_unknown_catalog_model_lists_known_ones() -> None:
    d = site_dict(devices=[{"name": "a", "kind": "asic", "model": "S99", "count": 1}])
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    assert "unknown ASIC model 'S99'; known: Antminer S9" in str(exc.value)


@pytest.mark.parametrize(
    ("device", "path", "words"),
    [
        ({"kind": "asic", "model": "S99"}, "devices[1].model", "unknown ASIC model 'S99'"),
        ({"kind": "gpu", "model": "Z9"}, "devices[1].model", "unknown GPU"),
        (
            {"kind": "gpu", "model": "H100", "power_caps_w": [900]},
            "devices[1].power_caps_w",
            "power cap 900.0 W outside",
        ),
        ({"kind": "asic", "model": "S21", "profiles": ["warp"]}, "devices[1].profiles", "warp"),
        ({"kind": "asic", "model": "S21", "available": 3}, "devices[1].available", "exceeds"),
        ({"kind": "asic", "model": "S21", "initial_on": 3}, "devices[1].initial_on", "exceeds"),
        (
            {"kind": "asic", "model": "S21", "adapter": {"kind": "sim", "hosts": ["10.0.0.1"]}},
            "devices[1].adapter.hosts",
            "lists 1 addresses for count = 2",
        ),
    ],
)
def test_a_class_level_problem_names_the_key_it_is_about(
    device: dict[str, object], path: str, words: str
) -> None:
    """A check across a device class's keys names the key at fault, with its value, not
    only ``devices[1]`` (a newcomer's walk: an unknown model was reported at the class)."""
    d = site_dict()
    d["devices"].append({"name": "b", "count": 2, **device})
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    found = problems(exc)
    assert path in found, found
    assert words in found[path]


def test_gpu_cap_outside_nvml_range() -> None:
    d = site_dict(
        devices=[{"name": "g", "kind": "gpu", "model": "H100", "count": 1, "power_caps_w": [900]}]
    )
    with pytest.raises(ConfigError, match=r"power cap 900.0 W outside H100 SXM's range"):
        parse_site(d, "x.toml")


@pytest.mark.parametrize(
    ("section", "value", "path", "words"),
    [
        ("site", {"timezone": "Mars/Olympus"}, "site.timezone", "unknown time zone"),
        ("site", {"pue": 0.8}, "site.pue", "greater than or equal to 1"),
        ("inference", {"hourly_profile": [1.0] * 23}, "inference.hourly_profile", "needs 24"),
        ("tariff", {"dr_levels_kw": {"7": 10}}, "tariff.dr_levels_kw", "valid keys"),
        ("prices", {"format": "csv"}, "prices", "needs path"),
        (
            "daemon",
            {"read_concurrency": 0},
            "daemon.read_concurrency",
            "greater than or equal to 1",
        ),
    ],
)
def test_section_errors(section: str, value: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(site_dict(**{section: value}), "x.toml")
    assert path in problems(exc)
    assert words in problems(exc)[path]


def test_duplicate_names() -> None:
    d = site_dict()
    d["devices"] = [d["devices"][0], dict(d["devices"][0])]
    with pytest.raises(ConfigError, match="duplicate device class names"):
        parse_site(d, "x.toml")


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\nname = 1")
    with pytest.raises(ConfigError, match=r"\(syntax\)"):
        load_site(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_site(tmp_path / "none.toml")


def test_price_csv_nan_gap_and_garbage(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(
        "ts,price\n2023-01-01T00:00:00Z,10\n2023-01-01T01:00:00Z,nan\n"
        "2023-01-01T03:00:00Z,12\n2023-01-01T04:00:00Z,13\n"
    )
    s = load_csv_series(f, "price", "ts")
    assert s.interval_s == 3600 and len(s.values) == 5
    with pytest.raises(DataError) as exc:
        s.mean_over(np.array([s.start_s]), np.array([s.start_s + 4 * 3600]))
    msg = str(exc.value)
    assert "2023-01-01T01:00:00Z (NaN at line 3)" in msg
    assert "2023-01-01T02:00:00Z (row missing)" in msg
    # a window clear of the holes works
    assert s.mean_over(np.array([s.start_s + 3 * 3600]), np.array([s.end_s]))[0] == 12.5
    f.write_text("ts,price\n2023-01-01T00:00:00Z,10\n2023-01-01T01:00:00Z,ten\n")
    with pytest.raises(DataError, match="line 3: price = 'ten' is not a number"):
        load_csv_series(f, "price", "ts")
    f.write_text("ts,price\n2023-01-01T00:00:00Z,10\nyesterday,11\n")
    with pytest.raises(DataError, match="line 3: ts = 'yesterday' is not an ISO 8601"):
        load_csv_series(f, "price", "ts")
    with pytest.raises(DataError, match="no column 'cost'"):
        load_csv_series(f, "cost", "ts")


def test_duplicates_and_off_grid_timestamps() -> None:
    t = np.array([0, 3600, 3600, 7200])
    with pytest.raises(DataError, match="duplicate timestamps: 1970-01-01T01:00:00Z"):
        regularise("x", "u", t, np.ones(4))
    with pytest.raises(DataError, match="off the 3600s grid"):
        regularise("x", "u", np.array([0, 3600, 7300]), np.ones(3), 3600)


def test_naive_local_timestamps_need_a_zone_and_dst_is_checked(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("ts,price\n2023-11-05 00:00,1\n2023-11-05 01:00,2\n")
    with pytest.raises(DataError, match="no UTC offset"):
        load_csv_series(f, "price", "ts")
    with pytest.raises(DataError, match="cannot be placed in America/Chicago"):
        load_csv_series(f, "price", "ts", timezone="America/Chicago")  # 01:00 is ambiguous


def test_window_outside_the_series() -> None:
    s = flat_series([1.0, 2.0])
    with pytest.raises(
        DataError,
        match=r"choose a period inside it \(plan: --start and --horizon; backtest: --from and --to",
    ):
        s.mean_over(np.array([s.start_s]), np.array([s.end_s + 1]))


def test_ercot_column_is_checked() -> None:
    with pytest.raises(DataError, match="valid: HB_WEST, HB_NORTH"):
        load_ercot_rtm("unused.csv", "HB_MOON")


def test_bad_events_name_index_and_field(tmp_path: Path) -> None:
    f = tmp_path / "e.json"
    f.write_text(
        json.dumps(
            [
                {"id": "a", "type": "curtail", "start": "2023-01-01T00:00:00Z", "duration": "1h"},
                {"id": "b", "type": "shed", "start": "2023-01-01T00:00:00Z"},
                {"id": "c", "type": "price", "start": "2023-01-01T00:00:00"},
            ]
        )
    )
    with pytest.raises(ConfigError) as exc:
        load_events(f)
    text = str(exc.value)
    assert "[0]: a curtail event needs limit_kw or level" in text
    assert "[1].type" in text and "'curtail', 'price', 'alert', 'cancel' or 'notice'" in text
    assert "[2]: start 2023-01-01T00:00:00 has no UTC offset" in text
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="line 1 column 2"):
        load_events(f)


def test_event_level_without_a_configured_cap() -> None:
    from models.signals import GridEvent
    from scheduler.planner.inputs import assemble_inputs
    from scheduler.planner.timegrid import uniform_grid
    from tests.conftest import T0, make_site

    ev = GridEvent(
        id="l2",
        type="curtail",
        start="2023-11-15T00:00:00Z",  # type: ignore[arg-type]
        duration="1h",
        level=2,
    )
    with pytest.raises(
        ConfigError, match=r"level 2 has no cap at this site; .* tariff.dr_levels_kw"
    ):
        assemble_inputs(make_site(), uniform_grid(T0, 3600, 3600), flat_series([1.0]), [ev])


def test_a_site_file_event_at_a_level_the_site_has_no_cap_for_is_named_by_validate() -> None:
    """A site file's [[events]] entry at a level without a cap passed validation, and every
    plan over it then failed ("level 2 has no cap"); the webhook refuses the same event at
    the door (tests/test_signal_levels.py). One check serves the file, the webhook and the
    planner (models.signals.level_problems)."""
    d = site_dict(tariff={"dr_levels_kw": {"1": 500.0, "3": 100.0}})
    d["events"] = [
        {
            "id": "l2",
            "type": "curtail",
            "start": "2023-11-15T00:00:00Z",
            "duration": "1h",
            "level": 2,
        }
    ]
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    got = problems(exc)
    assert "level 2 has no cap at this site; it has levels 1, 3" in got["events"], got


@pytest.mark.parametrize(
    ("adapter", "key", "words"),
    [
        ({"kind": "pyasic"}, "devices[0].adapter", "needs `hosts`"),
        (
            {"kind": "pyasic", "hosts": ["10.0.0.1-10.0.0.5"]},
            "devices[0].adapter.hosts",
            "5 addresses for count = 10",
        ),
        (
            {"kind": "pyasic", "hosts": ["10.0.0.300"]},
            "devices[0].adapter.hosts",
            "10.0.0.1-10.0.0.200",
        ),
        ({"kind": "nvml"}, "devices[0]", "drives GPUs"),
        ({"kind": "telnet"}, "devices[0].adapter.kind", "pyasic"),
        ({"kind": "sim", "sim_control": "localhost"}, "devices[0].adapter", "HOST:PORT"),
        (
            {"kind": "pyasic", "hosts": ["10.0.0.1-10.0.0.10"], "miner_mode": "int"},
            "devices[0].adapter.miner_mode",
            "'auto', 'string' or 'number'",
        ),
    ],
)
def test_adapter_config_errors(adapter: dict[str, object], key: str, words: str) -> None:
    d = site_dict()
    d["devices"][0]["adapter"] = adapter
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    found = problems(exc)
    assert key in found, found
    assert words in found[key], found[key]


def test_adapter_hosts_expand_ranges_and_blocks() -> None:
    d = site_dict()
    d["devices"][0]["adapter"] = {"kind": "pyasic", "hosts": ["10.0.0.1-10.0.0.8", "10.0.1.0/31"]}
    cfg = parse_site(d, "x.toml")
    assert cfg.devices[0].adapter is not None


def test_miner_mode_in_the_site_file_pins_the_json_type_pyasic_sends() -> None:
    """Stock Antminer firmware versions differ on ``miner-mode``'s JSON type (pyasic's
    antminer_mining_mode_as_str); a site that knows its firmware says so (issue 16)."""
    from adapters import registry

    for mode, as_str in (("auto", None), ("string", True), ("number", False)):
        d = site_dict()
        d["devices"][0]["adapter"] = {
            "kind": "pyasic",
            "hosts": ["10.0.0.1-10.0.0.10"],
            "miner_mode": mode,
        }
        built = registry.build(parse_site(d, "x.toml"))
        assert {getattr(a, "miner_mode_as_str", "?") for a in built.adapters} == {as_str}


def test_a_list_written_as_a_string_is_said_to_be_a_list() -> None:
    """The docs walk (session 25, N5): ``command = "cat prices.csv"`` under
    [daemon.price_feed] was refused with pydantic's "Input should be a valid tuple", which
    does not say a list of strings is wanted."""
    d = site_dict()
    d["daemon"] = {"price_feed": {"kind": "command", "command": "cat prices.csv"}}
    with pytest.raises(ConfigError) as exc:
        parse_site(d, "x.toml")
    said = problems(exc)["daemon.price_feed.command"]
    assert 'a TOML array, e.g. ["cat", "prices.csv"]' in said, said
    assert "tuple" not in said


def test_small_powers_are_not_rounded_to_nothing() -> None:
    """The docs walk (session 25, N8): a class-cap violation read "draw more than their
    cap of 0 kW at the meter by up to 0 kW" for 0.29 kW over a 0.01 kW cap."""
    from scheduler.planner.extract import _mw

    assert _mw(0.29) == "0.29 kW" and _mw(0.01) == "0.01 kW"
    assert _mw(250.4) == "250 kW" and _mw(2500.0) == "2.50 MW"
