"""A device library's log records under the daemon's logging.

pyasic 0.79 sets up logging for whoever imports it (``pyasic/logger/__init__.py``): its first
import calls ``logging.basicConfig`` with a multi-line format of its own and sets the root
logger's level to WARNING, and its modules log on the root logger, once per attempt
(``rpc/base.py``: a read that timed out or failed; ``miners/factory.py``: "Socket ping
timeout." for a miner that accepts a connection and never answers discovery; a power limit
pyasic could not set, ...). The adapters import pyasic at the first connect, after the
daemon configured its logging. So, before this module:

- every gridsched logger, inheriting the root logger's level, lost its INFO (and DEBUG)
  lines from the first connect on, whatever ``--log-level`` said;
- each device fault got pyasic's line per attempt beside the adapter's own, which is one
  line per device per change of state with the library's error in it (docs/adapters.md).

:func:`keep_daemon_logging` gives gridsched's loggers a level of their own, and the
root logger a filter (:class:`LibraryRecords`) that names pyasic's records ``pyasic`` and
lets them through only when the daemon logs at DEBUG. It is a filter on the root *logger*,
where pyasic's records are made, so it stays when handlers are replaced and does not touch
records that other loggers pass up to the root's handlers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

#: gridsched's loggers: ``gridsched.*``, and the modules that log under their own name
#: (``scheduler.service.ven``, ``scheduler.audit.store``, ...).
OURS = ("gridsched", "scheduler", "adapters", "models")
#: The libraries whose records on the root logger are theirs, by package.
LIBRARIES = ("pyasic",)


def _package_dirs() -> dict[str, str]:
    """Each installed library's directory (with a trailing separator), found without
    importing it."""
    out: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            for where in spec.submodule_search_locations:
                out[os.path.join(os.path.realpath(where), "")] = name
    return out


class LibraryRecords(logging.Filter):
    """A library's records on the root logger: named after the library, and passed only
    when ``level`` (the daemon's) is DEBUG or finer."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.dirs = _package_dirs()
        self._seen: dict[str, str | None] = {}  # pathname -> library, or None

    def _library(self, pathname: str) -> str | None:
        if pathname not in self._seen:
            real = os.path.realpath(pathname)
            self._seen[pathname] = next(
                (name for d, name in self.dirs.items() if real.startswith(d)), None
            )
        return self._seen[pathname]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root":
            return True
        library = self._library(record.pathname)
        if library is None:
            return True
        record.name = library
        return self.level <= logging.DEBUG


def keep_daemon_logging(level: int) -> None:
    """gridsched's loggers at ``level`` whatever a library later does to the root logger,
    and the libraries' own records kept out below DEBUG. Idempotent."""
    for name in OURS:
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    for f in list(root.filters):
        if isinstance(f, LibraryRecords):
            root.removeFilter(f)
    root.addFilter(LibraryRecords(level))


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (as Python's last
    resort handler does), so that a handler made once serves a stream replaced later."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__()
        self.setLevel(level)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass
