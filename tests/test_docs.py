"""Generated reference docs match the code; the docs' commands name real subcommands."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scheduler.cli import docs as docgen
from scheduler.cli.main import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_reference_is_current() -> None:
    assert (DOCS / "reference" / "config.md").read_text() == docgen.config_reference() + "\n", (
        "run: gridsched docs config > docs/reference/config.md"
    )


def test_api_reference_is_current() -> None:
    spec = json.loads((DOCS / "reference" / "openapi.json").read_text())
    assert spec == docgen.openapi(), "run: gridsched docs openapi > docs/reference/openapi.json"
    assert (DOCS / "reference" / "api.md").read_text() == docgen.api_reference() + "\n", (
        "run: gridsched docs api > docs/reference/api.md"
    )


def test_every_gridsched_command_in_the_docs_exists() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    for md in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for m in re.finditer(r"gridsched ([a-z]+)(?: ([a-z]+))?", md.read_text()):
            word = m.group(1)
            if word in ("run", "plan", "validate", "backtest", "solvers", "fleet", "audit", "docs"):
                assert word in commands, f"{md.name}: gridsched {word}"
