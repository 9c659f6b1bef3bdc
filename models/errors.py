"""Errors that name the thing that is wrong, where it is, and what would be valid."""

from __future__ import annotations


class GridschedError(Exception):
    """Base class of every error gridsched raises on purpose."""


class ConfigError(GridschedError, ValueError):
    """A site configuration value is invalid.

    ``path`` is the key path inside the file (``devices[1].modes[0].power_kw``).
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid configuration"]
        lines += [f"  {path}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))

    def one_line(self) -> str:
        """The problems on one line, for a log record or a status field: ``path: what;
        path: what`` (the message spans lines, one per problem, for a terminal)."""
        return "; ".join(f"{path}: {msg}" for path, msg in self.problems)


#: Marks a model validator's error as being about one key below the model's own location
#: (pydantic places a model validator's errors at the model: ``devices[1]``).
KEY_MARK = "\x1f"


def at_key(key: str, message: str) -> ValueError:
    """A validator's error about ``key`` (dotted, below the model), for
    ``models.site.validation_problems`` to place at ``devices[1].key``."""
    return ValueError(f"{KEY_MARK}{key}{KEY_MARK}{message}")


class DataError(GridschedError, ValueError):
    """A data file (prices, hashprice, profiles) cannot be used as it is."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")
