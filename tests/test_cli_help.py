"""Every option and argument of every command says what it is in ``--help``.

A newcomer's first documentation is ``gridsched COMMAND --help``: an option listed with no
words (``--miners MINERS``) leaves them to guess its meaning and unit."""

from __future__ import annotations

import argparse

from scheduler.cli.main import build_parser


def _unexplained(p: argparse.ArgumentParser, path: list[str]) -> list[str]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _unexplained(sub, [*path, name])
        elif isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        elif action.help is not argparse.SUPPRESS and not (action.help or "").strip():
            name = "/".join(action.option_strings) or action.dest
            out.append(f"gridsched {' '.join(path)} {name}")
    return out


def test_every_option_of_every_command_has_help() -> None:
    assert _unexplained(build_parser(), []) == []
