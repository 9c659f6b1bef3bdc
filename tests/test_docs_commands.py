"""Every command the operator docs show names real sub-commands, options, paths and targets.

The docs are read as a newcomer would copy from them: each ``gridsched ...`` line in a shell
block or an inline code span must select an existing sub-command (and choice) and use only
options its parser takes; each ``benchmarks/X.py --option`` must be an option that script
defines; each ``make TARGET`` a Makefile target; each repository path named
(``deploy/...``), test named (``tests/x.py::name``), relative link and its anchor must
exist; each TOML example must parse and use only keys of the site-file reference; each
dotted code name must import. The deploy files' commands (systemd, compose, Containerfile)
are parsed the same way. Running the commands is the walk-through's job; this keeps what
was walked from rotting.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from models.site import SiteConfig
from scheduler.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent

# The documents an operator follows (docs/backtest.md, performance.md and testing.md are
# results and method, checked by their own tests).
OPERATOR_DOCS = (
    "README.md",
    "docs/operations.md",
    "docs/configuration.md",
    "docs/daemon.md",
    "docs/adapters.md",
    "docs/hardware.md",
    "docs/architecture.md",
    "docs/model.md",
    "docs/plan-json.md",
)

# Top-level folders whose paths the docs name; a word starting with one must exist.
REPO_DIRS = ("deploy", "docs", "benchmarks", "scheduler", "models", "adapters", "tests")

# A path inside the repository (a glob or a brace list is not checked); URLs are cut first.
REPO_PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(REPO_DIRS)})/[\w./*{{}},-]*)")
CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# An inline span may wrap onto the next line, never over a blank one.
INLINE_CODE = re.compile(r"(?<!`)`((?:[^`\n]|\n(?![ \t]*\n))+)`(?!`)")
SHELL_LANGS = ("", "sh", "bash", "shell", "console")


def _shell_lines(text: str) -> Iterator[str]:
    """Command lines of the shell blocks (continuations joined) and of inline code spans."""
    for m in CODE_BLOCK.finditer(text):
        if m.group(1) not in SHELL_LANGS:
            continue
        yield from m.group(2).replace("\\\n", " ").splitlines()
    prose = CODE_BLOCK.sub("", text)
    for m in INLINE_CODE.finditer(prose):
        yield m.group(1).replace("\n", " ")


def _segments(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line, as words (comments dropped)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: the line is not a command
        return
    current: list[str] = []
    for word in words:
        if word in (";", "&&", "||", "|", "&") or word.endswith(";"):
            if word.endswith(";") and word != ";":
                current.append(word[:-1])
            if current:
                yield current
            current = []
        else:
            current.append(word.rstrip("&") if word.endswith("&") and word != "&" else word)
    if current:
        yield current


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _check_gridsched(words: list[str], root: argparse.ArgumentParser) -> str | None:
    """What is wrong with ``gridsched WORDS``, or None."""
    parser, path = root, ["gridsched"]
    rest = list(words)
    while rest and (subs := _subparsers(parser)):
        word = rest[0]
        if word.startswith("-") or word in ("...", "<command>"):
            return None
        if word not in subs:
            return f"`{' '.join(path)} {word}`: no such sub-command (valid: {', '.join(subs)})"
        parser, path, rest = subs[word], [*path, word], rest[1:]
    choices = [list(a.choices) for a in parser._actions if not a.option_strings and a.choices]
    if rest and choices and not rest[0].startswith("-") and rest[0] not in choices[0]:
        valid = ", ".join(map(str, choices[0]))
        return f"`{' '.join(path)} {rest[0]}`: not one of {valid}"
    known = {s for a in parser._actions for s in a.option_strings}
    for word in rest:
        if not word.startswith("--") or word == "--":
            continue
        option = word.split("=", 1)[0]
        if option not in known:
            return f"`{' '.join(path)}`: no option {option} (valid: {', '.join(sorted(known))})"
    return None


def _commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(program, its words) for every gridsched, benchmark and make command in ``text``."""
    for line in _shell_lines(text):
        for words in _segments(line):
            for i, word in enumerate(words):
                name = word.rsplit("/", 1)[-1]
                if name == "gridsched" and (i == 0 or words[i - 1] in ("sudo", "exec")):
                    yield "gridsched", words[i + 1 :]
                    break
                if word.startswith("benchmarks/") and word.endswith(".py"):
                    yield word, words[i + 1 :]
                    break
                if word == "make" and i == 0:
                    yield "make", words[1:]
                    break
                if name.startswith("python") and words[i + 1 : i + 2] == ["-m"]:
                    yield "python -m", words[i + 2 :]
                    break


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


def problems(name: str, text: str, root: argparse.ArgumentParser) -> list[str]:
    """Every command, option, path and link in one document that does not exist."""
    found: list[str] = []
    targets = _makefile_targets()
    for program, words in _commands(text):
        if program == "gridsched":
            if (problem := _check_gridsched(words, root)) is not None:
                found.append(f"{name}: {problem}")
        elif program == "python -m":
            if not words or importlib.util.find_spec(words[0]) is None:
                found.append(f"{name}: `python -m {' '.join(words[:1])}`: no such module")
        elif program == "make":
            for word in words:
                if not word.startswith("-") and "=" not in word and word not in targets:
                    found.append(f"{name}: `make {word}`: no such Makefile target")
        else:
            script = ROOT / program
            if not script.exists():
                found.append(f"{name}: {program} does not exist")
                continue
            source = script.read_text()
            for word in words:
                option = word.split("=", 1)[0]
                if option.startswith("--") and f'"{option}"' not in source:
                    found.append(f"{name}: {program} has no option {option}")
    for path in REPO_PATH.findall(re.sub(r"https?://\S+", "", text)):
        path = path.rstrip(".,")
        if not any(c in path for c in "*{}") and not (ROOT / path).exists():
            found.append(f"{name}: {path} does not exist")
    for path, test in re.findall(r"(tests/\w+\.py)::(\w+)", text):
        if (ROOT / path).exists() and f"def {test}(" not in (ROOT / path).read_text():
            found.append(f"{name}: {path} has no test {test}")
    here = (ROOT / name).parent
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (here / path) if path else ROOT / name
        if not linked.exists():
            found.append(f"{name}: dead link ({target})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
            found.append(f"{name}: no heading for the anchor ({target})")
    return found


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    heads = re.findall(r"^#+\s+(.*?)\s*$", CODE_BLOCK.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def _reference_keys() -> dict[str, set[str]]:
    """The generated site-file reference: each table's dotted name and its keys."""
    tables: dict[str, set[str]] = {}
    current: set[str] = set()
    for line in (ROOT / "docs" / "reference" / "config.md").read_text().splitlines():
        if m := re.match(r"^## `\[+([\w.]+)\]+`", line):
            current = tables.setdefault(m.group(1), set())
        elif m := re.match(r"^\| `(\w+)` \|", line):
            current.add(m.group(1))
    return tables


def toml_problems(name: str, text: str, tables: dict[str, set[str]]) -> list[str]:
    """Every TOML example in ``text`` that does not parse, or names a key the site file lacks."""
    found: list[str] = []

    def walk(table: dict[str, Any], path: str) -> None:
        for key, value in table.items():
            sub = f"{path}.{key}" if path else key
            if path and key not in tables.get(path, set()):
                found.append(f"{name}: [{path}] has no key {key!r}")
            elif not path and sub not in tables:
                found.append(f"{name}: the site file has no table [{key}]")
            elif sub in tables:  # a table of the schema (not a free one like dr_levels_kw)
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, dict):
                        walk(item, sub)

    for m in CODE_BLOCK.finditer(text):
        if m.group(1) != "toml":
            continue
        try:
            walk(tomllib.loads(m.group(2)), "")
        except tomllib.TOMLDecodeError as e:
            found.append(f"{name}: a TOML example does not parse ({e}): {m.group(2)[:60]!r}")
    return found


def _tables(model: type[BaseModel], path: str = "") -> Iterator[str]:
    """The dotted name of every table (nested model) of the site file's schema."""
    for field, info in model.model_fields.items():
        stack: list[Any] = [info.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                name = f"{path}.{field}" if path else field
                yield name
                yield from _tables(t, name)
            stack.extend(typing.get_args(t))


def test_the_config_reference_has_every_table() -> None:
    missing = set(_tables(SiteConfig)) - set(_reference_keys())
    assert not missing, f"docs/reference/config.md lacks {sorted(missing)}"


@pytest.mark.parametrize("name", OPERATOR_DOCS)
def test_toml_examples_use_real_keys(name: str) -> None:
    assert toml_problems(name, (ROOT / name).read_text(), _reference_keys()) == []


def test_the_toml_check_catches_planted_errors() -> None:
    planted = "\n".join(
        [
            "```toml",
            "[daemon]",
            "poll_seconds = 15",
            "[[devices]]",
            'name = "a"',
            "[devices.adapter]",
            'kind = "pyasic"',
            'hostz = ["10.0.0.1"]',
            "[nowhere]",
            "x = 1",
            "```",
            "```toml",
            "broken = [",
            "```",
        ]
    )
    found = toml_problems("x.md", planted, _reference_keys())
    assert len(found) == 4, found
    for needle in ("poll_seconds", "hostz", "[nowhere]", "does not parse"):
        assert any(needle in p for p in found), (needle, found)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.mark.parametrize("name", OPERATOR_DOCS)
def test_operator_docs_name_only_what_exists(name: str, parser: argparse.ArgumentParser) -> None:
    text = (ROOT / name).read_text()
    assert problems(name, text, parser) == []


def test_the_check_catches_planted_errors(parser: argparse.ArgumentParser) -> None:
    planted = "\n".join(
        [
            "```sh",
            ".venv/bin/gridsched plan --config x.toml --horizn 24h",
            ".venv/bin/gridsched fleet simulat --miners 10",
            ".venv/bin/gridsched signal curtial --limit-kw 5",
            "python benchmarks/fleet_control.py --no-such-flag",
            "make dem0",
            ".venv/bin/python -m scheduler.cli.dem0",
            "```",
            "See `deploy/examples/no-such-site.toml`, [here](nowhere.md) and",
            "[there](docs/daemon.md#no-such-heading); `gridsched audit verify --db x.db` is fine.",
            "tests/test_docs_commands.py::test_no_such_test proves nothing.",
        ]
    )
    found = problems("README.md", planted, parser)
    assert len(found) == 10, found
    for needle in (
        "--horizn",
        "simulat",
        "curtial",
        "--no-such-flag",
        "dem0",
        "scheduler.cli.dem0",
        "no-such-site",
        "nowhere",
        "no-such-heading",
        "test_no_such_test",
    ):
        assert any(needle in p for p in found), (needle, found)


SITE_WITH_HOSTS = """
[site]
name = "docs example"
interconnect_kw = 100
[[devices]]
name = "s19jpro"
kind = "asic"
model = "S19j Pro"
count = 10
[devices.adapter]
kind = "pyasic"
hosts = HOSTS
"""


@pytest.mark.parametrize(
    ("hosts", "shown"),
    [
        (
            '["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]',
            "devices[0].adapter.hosts: adapter.hosts lists 5 addresses for count = 10",
        ),
        (
            '["10.0.0.300"]',
            "devices[0].adapter.hosts: host entry '10.0.0.300': ... valid: 10.0.0.5, "
            "10.0.0.1-10.0.0.200 or 10.0.1.0/24",
        ),
    ],
)
def test_the_adapter_errors_shown_are_what_validate_prints(
    hosts: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/adapters.md quotes two errors of `gridsched validate`: it prints them so."""
    from scheduler.cli.main import main

    assert f"`{shown}`" in " ".join((ROOT / "docs" / "adapters.md").read_text().split())
    site = tmp_path / "site.toml"
    site.write_text(SITE_WITH_HOSTS.replace("HOSTS", hosts))
    assert main(["validate", str(site)]) == 2
    printed = " ".join(capsys.readouterr().err.split())
    for part in shown.split(" ... "):
        assert part in printed, (part, printed)


# Short names the architecture diagrams use for the packages under scheduler/.
SHORT = {
    "planner": "scheduler.planner",
    "backtest": "scheduler.backtest",
    "service": "scheduler.service",
    "audit": "scheduler.audit",
    "cli": "scheduler.cli",
    "daemon": "scheduler.service.daemon",
}
DOTTED = re.compile(r"(?<![\w./-])((?:models|adapters|scheduler)(?:\.[A-Za-z_]\w*)+)")
DOTTED_SHORT = re.compile(rf"(?<![\w./-])((?:{'|'.join(SHORT)})(?:\.[A-Za-z_]\w*)+)")


def _resolves(name: str) -> bool:
    """Whether a dotted name is a module of ours, or an attribute of one."""
    head, _, rest = name.partition(".")
    parts = [*SHORT.get(head, head).split("."), *rest.split(".")]
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("name", OPERATOR_DOCS)
def test_code_names_in_the_docs_exist(name: str) -> None:
    """`models.economics.site_load_kw`, `planner.optimize.Planner`: each names real code."""
    text = re.sub(r"https?://\S+", "", (ROOT / name).read_text())
    names = set(DOTTED.findall(text))
    if name == "docs/architecture.md":  # its diagrams name parts by their short package
        names |= set(DOTTED_SHORT.findall(text))
    files = (".py", ".md", ".toml", ".json", ".yml", ".png", ".csv", ".db")
    missing = sorted(n for n in names if not n.endswith(files) and not _resolves(n))
    assert not missing, f"{name} names code that does not exist: {missing}"


def test_the_code_name_check_catches_planted_errors() -> None:
    assert _resolves("planner.optimize.Planner") and _resolves("models.economics.site_load_kw")
    assert not _resolves("planner.Planner")  # what architecture.md said before
    assert not _resolves("scheduler.service.daemon.fastpath.NoSuchShedder")


def test_a_full_firmware_list_names_every_simulated_family() -> None:
    """README shows `--firmware A,B,...` as the way to mix every family: it names them all."""
    from adapters.sim.fleet import FIRMWARE

    text = " ".join((ROOT / "README.md").read_text().split())
    lists = [set(m.split(",")) for m in re.findall(r"--firmware ([a-z0-9,]+)", text)]
    longest = max(lists, key=len)
    assert longest == set(FIRMWARE), f"README --firmware {sorted(longest)}, simulated {FIRMWARE}"


def test_the_alert_list_names_every_rule_and_only_rules() -> None:
    """operations.md, "Watch it", lists the alert rules an operator gets: all of them."""
    rules = set(
        re.findall(
            r"alert: (Gridsched\w+)",
            (ROOT / "deploy" / "prometheus" / "gridsched.rules.yml").read_text(),
        )
    )
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index("## 6. Watch it")
    listed = set(re.findall(r"\bGridsched[A-Z]\w+", text[start : text.index("- Grafana", start)]))
    assert listed == rules, (sorted(rules - listed), sorted(listed - rules))
    for name in OPERATOR_DOCS:
        named = set(re.findall(r"\bGridsched[A-Z][A-Za-z]+\b", (ROOT / name).read_text()))
        assert named <= rules, f"{name} names alerts that are no rule: {sorted(named - rules)}"


def _deploy_commands() -> Iterator[tuple[str, list[str]]]:
    """(file, gridsched's words) for each command the deploy files run or show."""
    import json

    import yaml  # type: ignore[import-untyped]

    deploy = ROOT / "deploy"
    for path in sorted([*deploy.glob("systemd/*"), *deploy.glob("examples/*.toml")]):
        for line in path.read_text().splitlines():
            if line.startswith("ExecStart="):
                text = line.removeprefix("ExecStart=")
            elif re.search(r"^#(?:\s{2,}|.*:\s+)(?:\S*/)?gridsched [a-z]", line):  # a shown command
                text = line.lstrip("#").strip().replace("`", " ")
            else:
                continue
            for words in _segments(text.split("  #")[0]):
                for i, word in enumerate(words):
                    if word.rsplit("/", 1)[-1] == "gridsched":
                        yield path.name, words[i + 1 :]
                        break
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if "gridsched" in str(service.get("image", "")) and "command" in service:
            yield f"compose.yaml {name}", list(service["command"])
    containerfile = (deploy / "container" / "Containerfile").read_text().replace("\\\n", " ")
    cmd = re.search(r"^CMD (\[.*\])", containerfile, re.M)
    assert cmd is not None, "Containerfile: no CMD"
    yield "Containerfile", json.loads(cmd.group(1))


def test_the_deploy_files_run_real_commands(parser: argparse.ArgumentParser) -> None:
    """ExecStart, compose's commands, the Containerfile's CMD and the commands in comments."""
    found = list(_deploy_commands())
    assert len(found) >= 8, found  # every unit, both compose services, the CMD, the examples
    problems = [f"{name}: {p}" for name, words in found if (p := _check_gridsched(words, parser))]
    assert not problems, problems


def _stop_order(block: str) -> list[tuple[str, str]]:
    """("kill" or "wait", the job's program) in the order a shell block stops its jobs."""
    jobs: list[str] = []
    steps: list[tuple[str, str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith("&") and not line.endswith("&&"):
            jobs.append("daemon" if " run " in line else "simulator" if "simulate" in line else "")
        for verb, numbers in re.findall(r"\b(kill|wait)((?: %\d+)+)", line):
            steps += [(verb, jobs[int(n) - 1]) for n in re.findall(r"%(\d+)", numbers)]
    return steps


def test_the_daemon_is_stopped_before_the_simulator_it_drives() -> None:
    """Stopped together, the simulated miners vanish before the daemon's shutdown posture
    reaches them (run: '200 devices told, 0 confirmed by read-back, ... 200 failed')."""
    checked = 0
    for name in OPERATOR_DOCS:
        for m in CODE_BLOCK.finditer((ROOT / name).read_text()):
            steps = _stop_order(m.group(2))
            if ("kill", "daemon") in steps and ("kill", "simulator") in steps:
                checked += 1
                daemon = steps.index(("wait", "daemon")) if ("wait", "daemon") in steps else None
                assert daemon is not None and daemon < steps.index(("kill", "simulator")), (
                    f"{name}: kill the daemon and wait for it before the simulator: {steps}"
                )
    assert checked >= 1  # operations.md's first ten minutes
    # what the walk-through said before: every job at once
    together = "x/gridsched fleet simulate &\nx/gridsched run --config s &\nprom &\nkill %1 %2 %3"
    assert ("wait", "daemon") not in _stop_order(together)
