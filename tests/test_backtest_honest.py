"""Backtest honesty: currency said aloud, gaps explained, markets' information declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import DataError
from models.market import site_prices
from models.site import parse_site
from tests.conftest import T0, site_dict

DAY = 86400


def _csv(path: Path, column: str, values: list[float], start: int = T0, step: int = 3600) -> Path:
    from models.market import iso

    rows = [f"interval_start_utc,{column}"]
    rows += [f"{iso(start + i * step)},{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _eur_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    own = _csv(tmp_path / "own_eur.csv", "price", [50.0] * 48)
    d = site_dict(
        prices={
            "format": "csv",
            "path": str(own),
            "column": "price",
            "currency": "EUR",
            "usd_per_unit": 1.1,
        }
    )
    return parse_site(d, str(tmp_path / "site.toml"))


def test_config_currency_does_not_rescale_a_usd_prices_file(tmp_path: Path) -> None:
    cfg = _eur_config(tmp_path)
    usd = _csv(tmp_path / "usd.csv", "HB_WEST", [40.0] * 48)
    s = site_prices(cfg, T0, T0 + DAY, str(usd), "csv", "HB_WEST")
    assert s.currency == "USD"
    assert np.allclose(s.values, 40.0)  # not 44.0
    own = site_prices(cfg, T0, T0 + DAY)  # the config's own EUR file is converted
    assert np.allclose(own.values, 55.0) and own.currency == "USD" and "EUR" in own.label


def test_a_non_usd_prices_file_needs_a_rate(tmp_path: Path) -> None:
    cfg = _eur_config(tmp_path)
    eur = _csv(tmp_path / "de.csv", "price_eur_mwh", [80.0] * 48)
    with pytest.raises(DataError, match="EUR"):
        site_prices(cfg, T0, T0 + DAY, str(eur), "csv", "price_eur_mwh")
    with pytest.raises(DataError, match="rate"):
        site_prices(cfg, T0, T0 + DAY, str(eur), "csv", "price_eur_mwh", currency="EUR")
    s = site_prices(
        cfg, T0, T0 + DAY, str(eur), "csv", "price_eur_mwh", currency="EUR", usd_per_unit=1.08
    )
    assert np.allclose(s.values, 80.0 * 1.08) and "EUR" in s.label
