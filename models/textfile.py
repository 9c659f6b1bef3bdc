"""Reading a text file the user named (a site file, an events file, a CSV): what stops it
from being read is said with the file, the line and what to do, never in a codec's words.
A UTF-8 byte order mark (what some Windows editors write first) is dropped."""

from __future__ import annotations

from pathlib import Path

from models.errors import ConfigError

BOM = b"\xef\xbb\xbf"


def not_utf8(data: bytes) -> str | None:
    """Where ``data`` stops being UTF-8, in a user's words (``line 3 column 12: byte 0xe9
    ...``), or None when it is UTF-8 throughout."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return (
            f"line {line} column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 (the "
            "file was saved in another encoding, e.g. Latin-1 or Windows-1252); save it as "
            "UTF-8"
        )
    return None


def read_text(path: Path) -> str:
    """The file's text, or a ConfigError naming it and why it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "not found")]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [("(file)", "is a directory; name the file in it")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", f"cannot be read: {exc.strerror}")]) from None
    data = data.removeprefix(BOM)
    problem = not_utf8(data)
    if problem is not None:
        raise ConfigError(str(path), [("(file)", problem)])
    return data.decode("utf-8")


#: what a file nested beyond the parser's recursion says (TOML arrays, JSON arrays/objects)
TOO_DEEP = (
    "arrays or tables nested too deep to read (hundreds of levels; a site or events file "
    "needs a handful)"
)
