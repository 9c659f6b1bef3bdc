"""Credentials that never reach a log: read from the environment or a file, shown as ***."""

from __future__ import annotations

import os
import re
from pathlib import Path

from models.errors import ConfigError


class Secret:
    """A credential. ``str`` and ``repr`` hide it; only :meth:`reveal` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


#: Example values from the shipped files (deploy/systemd/gridsched.env), never a credential.
_PLACEHOLDER = re.compile(r"(change|replace)[_-]?me", re.IGNORECASE)


def load_secret(
    field: str, env: str | None, file: str | None, base_dir: str = "."
) -> Secret | None:
    """The secret named by an environment variable or a file; ``field`` names it in errors.
    A placeholder (``CHANGE_ME``) is refused: a device would reject it anyway, later."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(
                "environment", [(field, f"environment variable {env} is not set; export it")]
            )
        where = f"environment variable {env}"
    elif file is not None:
        path = Path(base_dir, file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                str(path), [(field, f"cannot read the secret file {path}: {exc.strerror}")]
            ) from None
        where = f"secret file {path}"
    else:
        return None
    if _PLACEHOLDER.search(value):
        raise ConfigError(
            "environment", [(field, f"{where} holds the placeholder {value!r}; set the real one")]
        )
    return Secret(value)
