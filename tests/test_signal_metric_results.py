"""Every ``result`` that ``gridsched_signals_received_total`` can carry is in the docs' metrics
table, and the table lists no other (field audit, session 21: ``result="unknown"`` was
emitted and not documented). The values are read from the code: every call of
``counters.signal(source, result)`` under scheduler/, its result a string or a choice of
strings (``"a" if ... else "b"``); any other expression fails the test, so that a value
computed at run time cannot slip past it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METRIC = "gridsched_signals_received_total"


def _strings(expr: ast.expr, where: str) -> set[str]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _strings(expr.body, where) | _strings(expr.orelse, where)
    pytest.fail(f"{where}: a signal result this test cannot read: {ast.unparse(expr)}")


def emitted_results() -> dict[str, set[str]]:
    """{result: the places that count it}."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "scheduler").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "signal"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "counters"
            ):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            result = node.args[1] if len(node.args) > 1 else None
            if result is None:
                result = next((k.value for k in node.keywords if k.arg == "result"), None)
            assert result is not None, f"{where}: counters.signal without a result"
            for value in _strings(result, where):
                found.setdefault(value, set()).add(where)
    return found


def documented_results() -> list[str]:
    rows = [
        line
        for line in (ROOT / "docs" / "daemon.md").read_text().splitlines()
        if line.startswith(f"| `{METRIC}` |")
    ]
    assert len(rows) == 1, f"docs/daemon.md: one metrics table row for {METRIC}, found {rows}"
    labels = rows[0].split("|")[3]
    _, sep, results = labels.partition("`result` =")
    assert sep, f"docs/daemon.md: {METRIC}'s row lists no `result` = values: {labels}"
    return re.findall(r"`([a-z_]+)`", results)


def test_the_code_counts_signals_in_the_places_known() -> None:
    """The scan finds the counting calls (the webhook, OpenADR, the store's refusal, the
    event book): were it to find none, the next test would prove nothing."""
    places = {w.split(":")[0] for ws in emitted_results().values() for w in ws}
    assert {
        "scheduler/service/api.py",
        "scheduler/service/api_guards.py",
        "scheduler/service/daemon/signals.py",
    } <= places, places


def test_every_result_emitted_is_documented_and_no_other() -> None:
    emitted = emitted_results()
    documented = documented_results()
    missing = {r: sorted(w) for r, w in emitted.items() if r not in documented}
    assert not missing, f"docs/daemon.md, {METRIC}: results not documented: {missing}"
    never = sorted(set(documented) - set(emitted))
    assert not never, f"docs/daemon.md, {METRIC}: results the code never emits: {never}"
    assert len(documented) == len(set(documented)), documented
