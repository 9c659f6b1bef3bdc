"""A site file written from docs/configuration.md alone, with a newcomer's unit mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import ConfigError
from models.site import load_site

SITE = """
[site]
name = "units walk"
interconnect_kw = 2000

[[devices]]
name = "custom"
kind = "asic"
count = 100
[[devices.modes]]
name = "stock"
power_kw = {power_kw}
hashrate_ths = {hashrate_ths}
"""


@pytest.mark.parametrize(
    ("power_kw", "hashrate_ths", "wanted"),
    [
        # watts written as kW: 3,500 kW per miner, 17,500 J/TH, breakeven 0.1 USD/MWh
        (3500, 200, "17,500 J/TH; miners draw about 10-100 J/TH (S21 17.5, S9 98): is power_kw "
         "in W (3.5 kW)?"),
        # GH/s written as TH/s
        (3.5, 200000, "0.0175 J/TH; miners draw about 10-100 J/TH (S21 17.5, S9 98): is "
         "hashrate_ths in GH/s (200 TH/s)?"),
    ],
)  # fmt: skip
def test_a_mode_a_miner_cannot_have_names_the_unit_slip(
    tmp_path: Path, power_kw: float, hashrate_ths: float, wanted: str
) -> None:
    f = tmp_path / "site.toml"
    f.write_text(SITE.format(power_kw=power_kw, hashrate_ths=hashrate_ths))
    with pytest.raises(ConfigError) as exc:
        load_site(f)
    assert "devices[0].modes[0]" in str(exc.value) and wanted in str(exc.value)


def test_old_and_new_miners_pass(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    for power_kw, hashrate_ths in ((1.4, 13.5), (3.5, 200), (0.2, 300), (5.0, 10)):
        f.write_text(SITE.format(power_kw=power_kw, hashrate_ths=hashrate_ths))
        assert load_site(f).devices[0].modes[0].power_kw == power_kw


def test_validate_points_at_an_interconnect_written_in_mw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    f = tmp_path / "site.toml"
    # 400 S21 at up to 4.375 kW (turbo) behind "2" kW: a 2 MW site written in MW
    text = SITE.format(power_kw=3.5, hashrate_ths=200).replace("2000", "2")
    f.write_text(text.replace("count = 100", "count = 400"))
    assert main(["validate", str(f)]) == 0
    out = capsys.readouterr().out
    assert "warning: the devices draw up to 1,400 kW before PUE, 700 times the interconnect" in out
    assert "is interconnect_kw in MW (2 MW = 2,000 kW)?" in out
    f.write_text(SITE.format(power_kw=3.5, hashrate_ths=200).replace("count = 100", "count = 400"))
    assert main(["validate", str(f)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_onsite_generation_csv_in_local_time_names_its_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main

    # a wind farm's meter export, hourly in Berlin wall-clock time, like a [prices] file
    (tmp_path / "wind.csv").write_text(
        "timestamp_local,wind_kw\n"
        + "".join(f"2023-10-29 {h:02d}:00,{500 + 100 * h}\n" for h in range(3))
        + "".join(f"2023-10-29 {h:02d}:00,{500 + 100 * h}\n" for h in range(2, 8))
    )
    onsite = (
        '[site.onsite]\nkind = "csv"\npath = "wind.csv"\ncolumn = "wind_kw"\n'
        'timestamp_column = "timestamp_local"\n'
    )
    base = SITE.format(power_kw=3.5, hashrate_ths=200).replace("count = 100", "count = 1000")
    f = tmp_path / "site.toml"
    plan = ["plan", "--config", str(f), "--start", "2023-10-28T23:00:00Z", "--horizon", "4h"]
    f.write_text(base.replace("\n[[devices]]", onsite + "\n[[devices]]", 1))
    assert main([*plan, "--step", "1h"]) == 2
    assert "[site.onsite] timezone" in capsys.readouterr().err
    zoned = onsite + 'timezone = "Europe/Berlin"\n'
    f.write_text(base.replace("\n[[devices]]", zoned + "\n[[devices]]", 1))
    assert main([*plan, "--step", "1h", "--json"]) == 0
    import json

    used = json.loads(capsys.readouterr().out)["steps"]["onsite_used_kw"]
    # from 23:00Z: 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET, each its own hour
    assert used == pytest.approx([600, 700, 700, 800]), used


def test_a_duration_written_with_its_unit_says_the_key_takes_seconds(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    site = SITE.format(power_kw=3.5, hashrate_ths=200)
    f.write_text(site.replace("count = 100\n", 'count = 100\nmin_on_s = "10min"\n'))
    with pytest.raises(ConfigError) as exc:
        load_site(f)
    assert "devices[0].min_on_s" in str(exc.value) and "(got '10min')" in str(exc.value)
    assert "a number of seconds, e.g. 600" in str(exc.value)


def test_validate_warns_when_the_base_load_alone_is_above_the_interconnect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """base_load_kw above interconnect_kw passed validate without a word (a newcomer's
    walk): with every device asleep the site would still import above its limit, which
    no plan can fix (on-site generation aside), and a slip of unit is the likely cause."""
    from scheduler.cli.main import main

    f = tmp_path / "site.toml"
    text = SITE.format(power_kw=3.5, hashrate_ths=200)
    f.write_text(
        text.replace("interconnect_kw = 2000", "interconnect_kw = 2000\nbase_load_kw = 2500")
    )
    assert main(["validate", str(f)]) == 0
    out = capsys.readouterr().out
    assert "warning: base_load_kw 2,500 kW is above interconnect_kw 2,000 kW" in out
    f.write_text(
        text.replace("interconnect_kw = 2000", "interconnect_kw = 2000\nbase_load_kw = 50")
    )
    assert main(["validate", str(f)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_validate_warns_of_openadr_simple_levels_without_a_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The aggregator's walk (session 24, D10): a site enrolled in OpenADR (ven_name) with
    no cap for SIMPLE level 3 passed validate without a word; a VTN's level-3 event, valid
    by the spec, then failed every re-plan (/healthz 503, the fail-safe cap). The webhook
    refuses such a level; a polled one cannot be refused, so validate says it beforehand."""
    from scheduler.cli.main import main

    f = tmp_path / "site.toml"
    text = SITE.format(power_kw=3.5, hashrate_ths=200)
    f.write_text(
        text + '\n[tariff.dr_levels_kw]\n"1" = 1500\n"2" = 1000\n\n[openadr]\nven_name = "v"\n'
    )
    assert main(["validate", str(f)]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: [openadr] is set and [tariff.dr_levels_kw] has no cap for SIMPLE level 3" in out
    )
    levels = '\n[tariff.dr_levels_kw]\n"1" = 1500\n"2" = 1000\n"3" = 500\n'
    f.write_text(text + levels + '\n[openadr]\nven_name = "v"\n')
    assert main(["validate", str(f)]) == 0
    assert "SIMPLE level" not in capsys.readouterr().out
