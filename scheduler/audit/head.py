"""The chain's head, checkpointed outside the database: where cutting the tail shows.

A hash chain proves each record is unchanged *given the last hash*; whoever deletes the last
records, or edits one and re-hashes everything after it, leaves a chain that checks. So
after each commit the writer appends the new head (sequence number and hash) to a file
beside the database, ``<db>.head``, and fsyncs it before any caller hears its write landed:

    {"at": 1754845200.1, "hash": "<record's hash>", "link": "<sha256 of the line before>",
     "mac": "<HMAC-SHA256 with the audit key, when one is set>", "seq": 201}

Each line names the line before (``link``), so a line cut out of or edited in the middle
of the file shows. ``audit verify`` then checks every checkpoint against the database: a
checkpoint past the database's last record names a cut tail, one whose record has another
hash names an edit re-hashed over.

What this does not stop (docs/daemon.md, "Threat model"): someone who can write both files
can cut or rewrite both consistently. The HMAC (key in ``GRIDSCHED_AUDIT_KEY_FILE`` or
``GRIDSCHED_AUDIT_KEY``) stops that for whoever cannot read the key; a checkpoint copied
elsewhere (``/v1/status``, each archive's header) stops it for everyone, through
``audit verify --expect-head SEQ:HASH``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.audit.chain import GENESIS, Problem, StoreError, fsync_path

__all__ = ["GENESIS", "Checkpoint", "HeadWriter", "Problem", "StoreError", "head_path"]
KEY_ENV = "GRIDSCHED_AUDIT_KEY"
KEY_MIN_BYTES = 16


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: float
    link: str
    mac: str | None = None
    line: int = 0  # 1-based line in the head file

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "mac": self.mac}


def head_path(db: str | Path) -> Path:
    return Path(str(db) + ".head")


def _text(body: Mapping[str, Any]) -> str:
    return json.dumps(dict(body), sort_keys=True, separators=(",", ":"))


def sign_checkpoint(key: bytes, body: Mapping[str, Any]) -> str:
    signed = {k: body[k] for k in ("seq", "hash", "at", "link")}
    return hmac.new(key, _text(signed).encode(), hashlib.sha256).hexdigest()


def load_key(env: Mapping[str, str] | None = None) -> bytes | None:
    """The audit key from ``GRIDSCHED_AUDIT_KEY_FILE`` (a file holding it) or
    ``GRIDSCHED_AUDIT_KEY``; None when neither is set."""
    env = os.environ if env is None else env
    file = env.get(KEY_ENV + "_FILE")
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StoreError(f"{KEY_ENV}_FILE={file}: cannot read the audit key: {exc}") from None
        where = f"{KEY_ENV}_FILE={file}"
    else:
        text = env.get(KEY_ENV, "").strip()
        where = KEY_ENV
        if not text:
            return None
    if len(text.encode()) < KEY_MIN_BYTES or "CHANGE_ME" in text:
        raise StoreError(
            f"{where}: the audit key must be at least {KEY_MIN_BYTES} bytes of secret "
            "(e.g. `openssl rand -hex 32`), not a placeholder"
        )
    return text.encode()


def read_head(path: Path, key: bytes | None) -> tuple[list[Checkpoint], list[Problem], list[str]]:
    """Every checkpoint in the file, what is wrong with the file itself, and notes."""
    try:
        data = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem("checkpoint", None, f"head file {path} cannot be read: {exc}")], []
    lines = data.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    out: list[Checkpoint] = []
    problems: list[Problem] = []
    notes: list[str] = []
    if torn:
        notes.append(f"head file {path}: its last line was cut short by a crash (ignored)")
    link = GENESIS
    unsigned = 0
    for n, text in enumerate(lines, 1):
        try:
            obj = json.loads(text)
            cp = Checkpoint(
                int(obj["seq"]), str(obj["hash"]), float(obj["at"]), str(obj["link"]),
                None if obj.get("mac") is None else str(obj["mac"]), n,
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            problems.append(Problem("checkpoint", None, f"head file line {n} is no checkpoint"))
            link = hashlib.sha256(text.encode()).hexdigest()
            continue
        if cp.link != link:
            problems.append(
                Problem(
                    "checkpoint",
                    None,
                    f"head file line {n} does not follow line {n - 1}: a line was edited, "
                    "removed or added there",
                )
            )
        if key is not None and cp.mac is None:
            unsigned += 1
        elif key is not None and not hmac.compare_digest(cp.mac or "", sign_checkpoint(key, obj)):
            problems.append(
                Problem(
                    "checkpoint",
                    cp.seq,
                    f"head file line {n} (record {cp.seq}) is not signed by the audit key: "
                    "the file was rewritten by someone without it (or the key changed)",
                )
            )
        link = hashlib.sha256(text.encode()).hexdigest()
        out.append(cp)
    if unsigned:
        notes.append(f"{unsigned} checkpoints were written before the audit key was set")
    return out, problems, notes


class HeadWriter:
    """Appends checkpoints (the writer thread's, one at a time), each fsync'd."""

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        self.key = key
        self.last: Checkpoint | None = None
        self._link = GENESIS
        last_line = _repair_and_read_last_line(path)
        if last_line is not None:
            self._link = hashlib.sha256(last_line.encode()).hexdigest()
            self.last = _parse(last_line)  # None: audit verify names the line
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if last_line is None:
            fsync_path(path.parent)

    def append(self, seq: int, digest: str, at: float) -> Checkpoint:
        body: dict[str, Any] = {"seq": seq, "hash": digest, "at": at, "link": self._link}
        if self.key is not None:
            body["mac"] = sign_checkpoint(self.key, body)
        text = _text(body)
        os.write(self._fd, (text + "\n").encode())
        os.fdatasync(self._fd)  # the size too: what an append needs read back
        self._link = hashlib.sha256(text.encode()).hexdigest()
        self.last = Checkpoint(seq, digest, at, body["link"], body.get("mac"))
        return self.last

    def close(self) -> None:
        os.close(self._fd)


TAIL_BYTES = 8192  # many lines (a line is under 300 bytes)


def _parse(line: str, n: int = 0) -> Checkpoint | None:
    try:
        obj = json.loads(line)
        return Checkpoint(
            int(obj["seq"]), str(obj["hash"]), float(obj["at"]), str(obj["link"]),
            None if obj.get("mac") is None else str(obj["mac"]), n,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None


def _repair_and_read_last_line(path: Path) -> str | None:
    """The head file's last whole line (None when it has none), read from its tail only
    (the file grows for years). A line torn by a crash before its fsync was never a
    checkpoint: it is cut off here."""
    if not path.exists():
        return None
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL_BYTES))
        tail = f.read()
        if tail and not tail.endswith(b"\n"):
            keep = size - len(tail) + tail.rfind(b"\n") + 1
            f.truncate(keep)
            os.fsync(f.fileno())
            tail = tail[: tail.rfind(b"\n") + 1]
    lines = tail.decode("utf-8", "replace").splitlines()
    return lines[-1] if lines else None


def last_checkpoint(path: Path) -> Checkpoint | None:
    """The head file's last checkpoint, read from its tail (no repair)."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL_BYTES))
        lines = f.read().decode("utf-8", "replace").split("\n")[:-1]
    return _parse(lines[-1]) if lines else None
