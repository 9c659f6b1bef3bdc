"""What an error in words must not carry: the names of Python's own exceptions (a reply
error, a device fault, is said in words; a name like ``KeyError`` means our code broke)."""

from __future__ import annotations

PY_NAMES = (
    "TypeError",
    "ValueError",
    "KeyError",
    "AttributeError",
    "JSONDecodeError",
    "UnicodeDecodeError",
    "IndexError",
    "Traceback",
    "gaierror",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "OSError",
    "TimeoutError",
    "OperationalError",
    "DatabaseError",
    "ConnectError",
    "HTTPStatusError",
    "FileNotFoundError",
    "[Errno",
)


def assert_no_python_names(text: str) -> None:
    assert not [n for n in PY_NAMES if n in text], text
