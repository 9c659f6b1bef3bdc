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
