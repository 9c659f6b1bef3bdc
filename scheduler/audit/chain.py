"""The hash chain's parts shared by the store, its checks, its head file and its archives
(and the fsync both of the last make of what they wrote)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import GridschedError

GENESIS = "0" * 64


class StoreError(GridschedError):
    """The state database cannot be used as it is (corrupt, newer, unreadable key)."""


@dataclass(frozen=True)
class Problem:
    """One thing ``audit verify`` found wrong. ``kind``: corrupt, edited, missing,
    truncated, rehashed, checkpoint or signal; ``seq``: the first record concerned."""

    kind: str
    seq: int | None
    text: str


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (a file created or renamed in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def chain_hash(prev: str, seq: int, at: float, kind: str, payload: str) -> str:
    h = hashlib.sha256()
    h.update(f"{prev}|{seq}|{at!r}|{kind}|".encode())
    h.update(payload.encode())
    return h.hexdigest()


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def walk_chain(
    after_seq: int, prev: str, rows: Iterable[tuple[int, float, str, str, str, str]]
) -> tuple[int, int | None, str]:
    """Check ``(seq, at, kind, payload, prev, hash)`` rows in order against the chain that
    ends with record ``after_seq`` of hash ``prev``: (records read, first bad seq or None,
    why it is bad)."""
    expect = after_seq + 1
    n = 0
    for seq, at, kind, payload, p, h in rows:
        n += 1
        if seq != expect:
            return n, expect, f"record {expect} is missing (next is {seq})"
        if p != prev:
            return n, seq, "prev does not match the record before"
        if chain_hash(prev, seq, at, kind, payload) != h:
            return n, seq, "hash does not match the record's content"
        prev = h
        expect += 1
    return n, None, ""
