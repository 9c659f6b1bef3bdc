"""Files that cannot be read as text of their kind are named, with the line and what to do:
never a codec's or the parser's own words, never a traceback (the bad-input walk of session
23: M4, M5, L1, L2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import ConfigError, DataError
from models.market import load_csv_series
from models.signals import load_events
from models.site import load_site
from tests.conftest import EXAMPLE


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


def test_a_site_file_nested_beyond_reading_is_named_not_a_recursion_traceback(
    tmp_path: Path,
) -> None:
    """M4: `x = [[[[...]]]]` 500 deep inside [[devices]] ended in RecursionError."""
    site = tmp_path / "deep.toml"
    site.write_text(EXAMPLE.read_text() + "\n[extra]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError) as exc:
        load_site(site)
    assert "nested too deep" in _problems(exc)["(syntax)"]


def test_an_events_file_nested_beyond_reading_is_named(tmp_path: Path) -> None:
    events = tmp_path / "deep.json"
    events.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError) as exc:
        load_events(events)
    assert "nested too deep" in _problems(exc)["(syntax)"]


def test_an_events_path_that_is_a_directory_is_named(tmp_path: Path) -> None:
    """M5: `--events /tmp` was an IsADirectoryError traceback from load_events (the CLI
    now words any OSError; the reader itself should say what to do, as the CSV reader does)."""
    with pytest.raises(ConfigError) as exc:
        load_events(tmp_path)
    assert "is a directory" in _problems(exc)["(file)"]


@pytest.mark.parametrize("kind", ["site", "events"])
def test_a_file_not_in_utf8_names_the_line_and_the_byte(tmp_path: Path, kind: str) -> None:
    """L1: "'utf-8' codec can't decode byte 0xff in position 16: invalid start byte"."""
    if kind == "site":
        path = tmp_path / "site.toml"
        path.write_bytes(b'[site]\nname = "ok"\nnote = "caf\xe9"\n')
        reader, where = load_site, "line 3 column 12"
    else:
        path = tmp_path / "events.json"
        path.write_bytes(b'[\n {"id": "caf\xe9"}\n]\n')
        reader, where = load_events, "line 2 column 13"  # type: ignore[assignment]
    with pytest.raises(ConfigError) as exc:
        reader(path)
    words = _problems(exc)["(file)"]
    assert words.startswith(where), words
    assert "0xe9" in words and "UTF-8" in words, words
    assert "codec" not in words


def test_a_price_csv_not_in_utf8_names_the_line(tmp_path: Path) -> None:
    csv = tmp_path / "latin1.csv"
    csv.write_bytes(b"time,price\n2023-08-10T05:00:00Z,20\n2023-08-10T05:15:00Z,2\xe9\n")
    with pytest.raises(DataError) as exc:
        load_csv_series(csv, column="price", timestamp_column="time")
    words = str(exc.value)
    assert "line 3" in words and "0xe9" in words and "UTF-8" in words, words
    assert "codec" not in words


def test_a_site_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """L2: a UTF-8 BOM (what some Windows editors write) gave "Invalid statement (at line 1,
    column 1)"; the CSV readers and the HTTP API already take one."""
    site = tmp_path / "bom.toml"
    site.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert load_site(site).devices[0].name == "s19jpro"
