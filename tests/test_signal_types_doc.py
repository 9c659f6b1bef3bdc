"""What ``gridsched signal --help`` says each signal type does is what docs/daemon.md's table
of the simple format's types says, word for word, and both say what the daemon does (field
audit, session 21: the help called an alert "a notice"; the daemon sheds for it)."""

from __future__ import annotations

import io
import re
import tomllib
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models.signals import EventType, GridEvent
from models.site import parse_site
from scheduler.cli.main import build_parser
from scheduler.planner.event_caps import event_caps
from scheduler.planner.timegrid import TimeGrid
from tests.support.sitefile import site_text

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### The simple format, signed"


def signal_parser() -> object:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["signal"]  # type: ignore[index]


def help_by_type() -> dict[str, str]:
    """{type: what the help says it does}, from the help of the ``type`` argument."""
    action = next(a for a in signal_parser()._actions if a.dest == "type")  # type: ignore[attr-defined]
    names = "|".join(action.choices)
    parts = re.split(rf"(?:^|; )(?=(?:{names}): )", action.help)
    out = {}
    for part in filter(None, parts):
        name, _, text = part.partition(": ")
        out[name] = text
    assert sorted(out) == sorted(action.choices), (action.help, out)
    return out


def docs_by_type() -> dict[str, str]:
    """{type: what the docs' table says the daemon does}, backticks dropped."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split("\n### ", 1)[0]
    rows = [r for r in section.splitlines() if re.match(r"\| `[a-z]+` \|", r)]
    assert rows, f"docs/daemon.md, {SECTION!r}: no table of the types (| `type` | ... |)"
    out = {}
    for row in rows[1:]:  # the header row is | `type` | ... |
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        out[cells[0].strip("`")] = cells[-1].replace("`", "")
    return out


def test_the_help_and_the_docs_say_the_same_of_each_type() -> None:
    helps, docs = help_by_type(), docs_by_type()
    assert set(docs) == {t.value for t in EventType}, sorted(docs)  # every type documented
    for name, text in helps.items():
        assert text == docs[name], f"{name}:\n help: {text}\n docs: {docs[name]}"


def test_the_rendered_help_says_it_too() -> None:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["signal", "--help"])
    shown = re.sub(r"\s+", "", out.getvalue())  # argparse wraps lines, at hyphens too
    for name, text in help_by_type().items():
        assert re.sub(r"\s+", "", f"{name}: {text}") in shown, name


@pytest.mark.parametrize("levels", [{"1": 40.0, "3": 10.0}, {"1": 40.0}])
def test_an_alert_sheds_as_the_docs_say(levels: dict[str, float]) -> None:
    """The docs' words for an alert, against the planner's and fast path's reading of it
    (``event_caps``): level 3's cap, else the protected load; its own limit_kw or level
    when it gives one."""
    said = docs_by_type()["alert"]
    assert "sheds" in said and "level 3" in said and "protected load" in said, said
    text = site_text("alert", sections={"tariff": {"dr_levels_kw": levels}})
    cfg = parse_site(tomllib.loads(text), "site.toml")
    t0 = int(datetime(2026, 12, 2, 12, tzinfo=UTC).timestamp())
    grid = TimeGrid(np.array([t0], dtype=np.int64), np.array([t0 + 60], dtype=np.int64))

    def cap(**kw: object) -> float:
        ev = GridEvent.model_validate({"id": "a", "type": "alert", "start": t0, **kw})
        return float(event_caps(cfg, grid, [ev], protected_kw=7.0)[0][0])

    assert cap() == levels.get("3", 7.0)
    assert cap(limit_kw=12.5) == 12.5
    assert cap(level=1) == 40.0
