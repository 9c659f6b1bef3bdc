"""A device answer that cannot be read, said in words an operator reads: ``the answer has
null where a number was expected`` rather than ``TypeError: 'NoneType' object is not
subscriptable``.

A parser that knows the field says it itself (``no 'power' field in the summary answer``);
what it cannot know (a library choking inside its own parse) is worded here from the
exception: its field, value and what was expected where the message carries them, else what
the library said without its class name. An OS error goes through
:func:`adapters.neterrors.describe`. Whether a failure is a bug rather than an odd answer
is :func:`adapters.faults.is_bug`'s rule (a device's answer is read, so a library choking
on it is the answer's fault; a KeyError raised in our own code is a bug): a bug keeps its
name and its traceback is logged once per place it was raised (:func:`said`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from adapters.faults import is_bug, named, traceback_once
from adapters.neterrors import describe

log = logging.getLogger("gridsched.adapters")

#: Python's type names as a JSON answer's reader knows them.
_KINDS = {
    "NoneType": "null",
    "str": "text",
    "bytes": "bytes",
    "dict": "an object",
    "list": "a list",
    "tuple": "a list",
    "int": "a number",
    "float": "a number",
    "bool": "true or false",
}
#: CPython's messages for a value of the wrong kind, and what was expected instead.
_TYPE_WORDS = (
    (re.compile(r"(?:float|int)\(\) argument must be .*, not '(\w+)'"), "a number"),
    (re.compile(r"type (\w+) doesn't define __round__ method"), "a number"),
    (re.compile(r"unsupported operand type\(s\) for .*: '(\w+)' and"), "a number"),
    (re.compile(r"'(\w+)' object is not subscriptable"), "an object or a list"),
    (re.compile(r"'(\w+)' object is not iterable"), "a list"),
    (re.compile(r"^(list|str|tuple) indices must be"), "an object"),
    (re.compile(r"'(\w+)' object is not a mapping"), "an object"),
)
_NOT_A_NUMBER = (
    (re.compile(r"could not convert string to float: (.*)$", re.S), "a number"),
    (re.compile(r"invalid literal for int\(\) with base \d+: (.*)$", re.S), "a whole number"),
)
_NO_ATTRIBUTE = re.compile(r"'(\w+)' object has no attribute '(\w+)'")


def value_words(value: Any, limit: int = 60) -> str:
    """A value as an answer's reader knows it: ``null``, ``'abc'``, shortened when long."""
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_words(type_name: str) -> str:
    """``NoneType`` as ``null``, ``dict`` as ``an object``: a JSON reader's words."""
    return _KINDS.get(type_name, f"a {type_name}")


def unreadable(exc: BaseException) -> str:
    """What was wrong with an answer a parser choked on, without the exception's class name
    (an OS error: what happened, as :func:`describe` says it)."""
    if isinstance(exc, OSError):
        return describe(exc)
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field" if exc.args else "a field is missing"
    if isinstance(exc, IndexError):
        return "a list in the answer is shorter than expected"
    if isinstance(exc, json.JSONDecodeError):
        return f"the answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start : exc.start + 1].hex()
        return f"the answer is not {exc.encoding} text (byte 0x{bad} at position {exc.start})"
    text = str(exc)
    if type(exc) is ValueError:
        for pattern, expected in _NOT_A_NUMBER:
            if m := pattern.match(text):
                return f"{m.group(1)[:60]} is not {expected}"
    if isinstance(exc, TypeError):
        for pattern, expected in _TYPE_WORDS:
            if m := pattern.search(text):
                return f"the answer has {kind_words(m.group(1))} where {expected} was expected"
    if isinstance(exc, AttributeError) and (m := _NO_ATTRIBUTE.search(text)):
        kind, name = kind_words(m.group(1)), m.group(2)
        return f"the answer has {kind} where an object with {name!r} was expected"
    if text:
        return text
    if type(exc).__module__ == "builtins":  # an empty ValueError() says only that
        return "the answer cannot be read (no detail given)"
    return type(exc).__name__  # a library's exception without a message: its name is all


def our_bug(exc: BaseException) -> bool:
    """Whether ``exc``, met reading a device's answer, is a bug in gridsched's own code
    rather than the answer's fault (:func:`adapters.faults.is_bug` with ``reading``)."""
    return is_bug(exc, reading=True)


def said(exc: BaseException, where: str) -> str:
    """``exc`` in words for an operator: a bug in our code keeps its name (``KeyError:
    'x'``) and its traceback is logged the first time its place raises; anything else is
    worded by :func:`unreadable`. ``where`` names the call for that log line."""
    if not our_bug(exc):
        return unreadable(exc)
    if (first := traceback_once(exc, reading=True)) is not None:
        log.error("a bug in gridsched, in %s", where, exc_info=first)
    return named(exc)
