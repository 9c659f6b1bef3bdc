"""Moving old decision-log records out of the database, and proving the chain across files.

A daemon writes a few MB a day (docs/daemon.md); a site keeps years of settlement evidence.
``gridsched audit archive`` moves the records older than a date to a JSON-lines file
(gzip when the name ends in ``.gz``) and deletes them from the database, leaving there an
anchor: the last archived record's sequence number and hash. Nothing is lost on the way:

1. the chain in the database is verified first (a broken chain is not archived);
2. the file is written, flushed to disk, then read back and verified record by record;
3. only then are the records deleted, in chunks of ``chunk`` records (each chunk one short
   transaction that also moves the anchor), so that a running daemon's writes, whose
   signals wait on them, never queue behind one long delete.

The newest record always stays in the database (it is the chain's head), and so does the
record of each signal still in force (and every record after it): the daemon checks the
``signals`` table against those records when it restarts. Each header carries the chain's
last checkpoint at the time (``checkpoint``: seq, hash, time, HMAC when keyed), a copy of
the head kept outside the database for ``audit verify --expect-head``. ``gridsched audit
verify --archive FILE...`` checks each file, that the files follow each other from the
first record, and that the database's chain starts where the last file ends.

File format: a header line ``{"format": "gridsched-audit-archive", "version": 1,
"first_seq", "last_seq", "prev", "records", "created_utc", "db", "checkpoint"}``, then one
line per record ``{"seq", "at", "kind", "payload", "prev", "hash"}`` with ``payload`` the
exact text that was hashed.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from scheduler.audit.chain import fsync_path
from scheduler.audit.store import GENESIS, Anchor, Store, walk_chain

FORMAT = "gridsched-audit-archive"
VERSION = 1
CHUNK = 5000

Row = tuple[int, float, str, str, str, str]


class ArchiveError(Exception):
    pass


@dataclass(frozen=True)
class ArchiveHeader:
    path: str
    first_seq: int
    last_seq: int
    prev: str
    records: int
    last_hash: str = ""  # known once the file has been checked


@dataclass(frozen=True)
class Archived:
    records: int  # 0: nothing was old enough (the other fields are then 0 too)
    first_seq: int = 0
    last_seq: int = 0
    last_at: float = 0.0
    path: str = ""
    #: nothing archived because of it: the record of the oldest signal still in force
    held_from: int | None = None


def _open(path: Path, mode: str) -> IO[str]:
    if path.name.endswith(".gz"):
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8"))
    return open(path, mode, encoding="utf-8")


def file_name(first: int, last: int) -> str:
    """An archive's name in a directory of archives: its records, so names sort in chain
    order and never collide."""
    return f"gridsched-audit-{first:09d}-{last:09d}.jsonl.gz"


def in_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Paths as given, a directory standing for the archives in it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.jsonl")) + sorted(p.glob("*.jsonl.gz"))
            if not found:
                raise ArchiveError(f"{p}: no archive (*.jsonl, *.jsonl.gz) in this directory")
            out += found
        else:
            out.append(p)
    return out


def archive(
    db: str | Path, before: float, out: str | Path, chunk: int = CHUNK, into_dir: bool = False
) -> Archived:
    """Move the records older than ``before`` (UTC seconds) from ``db`` to the file ``out``
    (with ``into_dir``, to a new file in the directory ``out``, named by :func:`file_name`)."""
    out = Path(out)
    if not into_dir and out.exists():
        raise ArchiveError(f"{out} exists; an archive is never overwritten (choose a new name)")
    if into_dir and out.exists() and not out.is_dir():
        raise ArchiveError(f"{out} is not a directory")
    if chunk < 1:
        raise ArchiveError(f"chunk must be at least 1 record, got {chunk}")
    store = Store(db)
    try:
        v = store.verify()
        if not v.ok:
            # Some problems belong to no record (a head file missing, a corrupt page).
            where = "" if v.first_bad_seq is None else f" at record {v.first_bad_seq}"
            raise ArchiveError(f"{db}: the chain is broken{where} ({v.reason}); nothing archived")
        anchor = _finish_interrupted(store, store.anchor())
        keep = store.in_force_seqs(time.time())
        head = store.head()
    finally:
        store.close()
    con = sqlite3.connect(db, timeout=30)
    try:
        newest = con.execute("SELECT MAX(seq) FROM log").fetchone()[0]
        if newest is None:
            return Archived(0)
        # a signal still in force keeps its record (and all after it) in the database,
        # where the daemon checks its row against it on restart
        upto = min([int(newest), *keep])
        last = con.execute(
            "SELECT MAX(seq) FROM log WHERE seq > ? AND seq < ? AND at < ?",
            (anchor.seq, upto, before),
        ).fetchone()[0]
        if last is None:
            older = con.execute(
                "SELECT 1 FROM log WHERE seq > ? AND seq < ? AND at < ? LIMIT 1",
                (anchor.seq, int(newest), before),
            ).fetchone()
            held = upto < int(newest) and older is not None  # old ones, behind a signal
            return Archived(0, held_from=upto if held else None)
        # Records are appended in time order, but ``at`` is the caller's clock: archive a
        # contiguous run of sequence numbers, up to the last record older than ``before``.
        first, last = anchor.seq + 1, int(last)
        if into_dir:
            out.mkdir(parents=True, exist_ok=True)
            out = out / file_name(first, last)
            if out.exists():
                raise ArchiveError(f"{out} exists; an archive is never overwritten")
        rows = "SELECT seq, at, kind, payload, prev, hash FROM log WHERE seq >= ? AND seq <= ?"
        tmp = out.with_name(f".partial-{out.name}")  # same suffix: same compression
        try:
            with _open(tmp, "w") as f:
                header = {
                    "format": FORMAT,
                    "version": VERSION,
                    "first_seq": first,
                    "last_seq": last,
                    "prev": anchor.hash,
                    "records": last - first + 1,
                    "created_utc": datetime.now(UTC).isoformat(),
                    "db": str(db),
                    # the chain's head when archived: a copy kept with the file proves later
                    # that the database was not cut (`audit verify --expect-head SEQ:HASH`)
                    "checkpoint": None if head is None else head.to_dict(),
                }
                f.write(json.dumps(header) + "\n")
                for seq, at, kind, payload, prev, h in con.execute(
                    rows + " ORDER BY seq", (first, last)
                ):
                    rec = {
                        "seq": seq,
                        "at": at,
                        "kind": kind,
                        "payload": payload,
                        "prev": prev,
                        "hash": h,
                    }
                    f.write(json.dumps(rec) + "\n")
                f.flush()
            fsync_path(tmp)
            got = check_file(tmp)  # read back what is on disk before deleting anything
            if (got.first_seq, got.last_seq, got.prev) != (first, last, anchor.hash):
                raise ArchiveError(f"{tmp} does not hold records {first}-{last} as written")
            os.replace(tmp, out)
            fsync_path(out.parent)
        finally:
            tmp.unlink(missing_ok=True)
        (last_at,) = con.execute("SELECT at FROM log WHERE seq = ?", (last,)).fetchone()
    finally:
        con.close()
    _delete(str(db), os.path.abspath(out), first, last, chunk)
    return Archived(last - first + 1, first, last, float(last_at), str(out))


def _finish_interrupted(store: Store, anchor: Anchor) -> Anchor:
    """An archive run stopped between its chunks leaves records in both the file and the
    database: delete the rest now (the file is checked against the database first)."""
    if not anchor.files:
        return anchor
    latest = Path(anchor.files[-1])
    try:
        header = check_file(latest)
    except ArchiveError as exc:
        raise ArchiveError(
            f"the last archive, {latest}, cannot be checked ({exc}); restore it before "
            "archiving again"
        ) from None
    if header.last_seq <= anchor.seq:
        return anchor
    if store.hash_at(header.last_seq) != header.last_hash:
        raise ArchiveError(
            f"{latest} ends at record {header.last_seq}, which the database does not hold "
            "as archived; this file does not belong to this database"
        )
    _delete(store.path, str(latest), header.first_seq, header.last_seq, CHUNK, start=anchor.seq)
    return Anchor(header.last_seq, header.last_hash, anchor.files)


def _delete(
    db: str, file: str, first: int, last: int, chunk: int, start: int | None = None
) -> None:
    """Delete records ``start+1..last`` (from ``first`` by default), chunk by chunk, each
    chunk moving the anchor of ``file`` in the same transaction."""
    con = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        con.execute("PRAGMA synchronous=FULL")
        done = first - 1 if start is None else start
        while done < last:
            upto = min(last, done + chunk)
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT hash FROM log WHERE seq = ?", (upto,)).fetchone()
                if row is None:
                    raise ArchiveError(
                        f"record {upto} left the database while archiving it: is another "
                        "`audit archive` running on it?"
                    )
                (h,) = row
                con.execute("DELETE FROM log WHERE seq > ? AND seq <= ?", (done, upto))
                con.execute(
                    "INSERT INTO archived(file, first_seq, last_seq, last_hash, archived_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT(file) DO UPDATE SET "
                    "last_seq = excluded.last_seq, last_hash = excluded.last_hash",
                    (file, first, upto, h, time.time()),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            done = upto
    finally:
        con.close()


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with _open(path, "r") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ArchiveError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise ArchiveError(f"{path}:{lineno}: expected a JSON object")
                yield lineno, obj
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{path}: cannot read: {exc}") from None


def read_header(path: str | Path) -> ArchiveHeader:
    path = Path(path)
    for lineno, obj in _lines(path):
        if obj.get("format") != FORMAT or obj.get("version") != VERSION:
            raise ArchiveError(
                f"{path}:{lineno}: not a {FORMAT} version {VERSION} file "
                f"(format {obj.get('format')!r}, version {obj.get('version')!r})"
            )
        first, last, prev, n = _typed(obj, HEADER_FIELDS, f"{path}:{lineno}: header")
        return ArchiveHeader(str(path), first, last, prev, n)
    raise ArchiveError(f"{path}: empty file")


HEADER_FIELDS = (("first_seq", int), ("last_seq", int), ("prev", str), ("records", int))
RECORD_FIELDS = (
    ("seq", int),
    ("at", float),
    ("kind", str),
    ("payload", str),
    ("prev", str),
    ("hash", str),
)


def _typed(obj: dict[str, Any], fields: tuple[tuple[str, type], ...], where: str) -> Any:
    try:
        return tuple(kind(obj[key]) for key, kind in fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{where} lacks or garbles {exc}") from None


def records(path: str | Path) -> Iterator[Row]:
    """The archived records, as the database's ``(seq, at, kind, payload, prev, hash)``."""
    path = Path(path)
    it = _lines(path)
    next(it, None)  # the header
    for lineno, obj in it:
        yield _typed(obj, RECORD_FIELDS, f"{path}:{lineno}: record")


def check_file(path: str | Path) -> ArchiveHeader:
    """Verify one archive on its own: its records chain from its header's ``prev``."""
    header = read_header(path)
    last = [header.prev]

    def rows() -> Iterator[Row]:
        for row in records(path):
            last[0] = row[5]
            yield row

    n, bad, why = walk_chain(header.first_seq - 1, header.prev, rows())
    if bad is not None:
        raise ArchiveError(f"{path}: BROKEN at record {bad}: {why}")
    if n != header.records or n != header.last_seq - header.first_seq + 1:
        raise ArchiveError(
            f"{path}: holds {n} records; its header says {header.records} "
            f"({header.first_seq}-{header.last_seq}): the file is cut short"
        )
    return ArchiveHeader(
        header.path, header.first_seq, header.last_seq, header.prev, n, last_hash=last[0]
    )


def check_sequence(paths: Sequence[str | Path], store: Store) -> list[str]:
    """Verify archives together: each on its own, in order from record 1 with no gap, the
    last ending at the database's anchor. Returns a line per file; raises on a break."""
    anchor = store.anchor()
    anchor_seq, anchor_hash = anchor.seq, anchor.hash
    headers = sorted((check_file(p) for p in paths), key=lambda h: h.first_seq)
    prev_seq, prev_hash = 0, GENESIS
    lines = []
    for h in headers:
        if h.first_seq != prev_seq + 1 or h.prev != prev_hash:
            where = "the first record" if prev_seq == 0 else f"record {prev_seq}"
            raise ArchiveError(
                f"{h.path} starts at record {h.first_seq} and does not follow {where}: "
                "an archive is missing or does not belong to this chain"
            )
        prev_seq, prev_hash = h.last_seq, h.last_hash
        lines.append(f"{h.path}: records {h.first_seq}-{h.last_seq} intact")
    if (prev_seq, prev_hash) == (anchor_seq, anchor_hash):
        return lines
    last = headers[-1] if headers else None
    if last is not None and last.first_seq - 1 <= anchor_seq < last.last_seq:
        # an archive run stopped between its chunks: the database still holds the file's
        # last records; the chain is whole if the file holds the anchor's record and its
        # last record is the database's (hashes chain: the records between are the same)
        at = last.prev if anchor_seq == last.first_seq - 1 else _hash_of(last.path, anchor_seq)
        if at == anchor_hash and store.hash_at(last.last_seq) == last.last_hash:
            lines.append(
                f"{last.path}: records {anchor_seq + 1}-{last.last_seq} are also still in the "
                "database (an archive run was interrupted; `audit archive` finishes it)"
            )
            return lines
    raise ArchiveError(
        f"the archives end at record {prev_seq}, the database's chain starts after record "
        f"{anchor_seq}{'' if prev_seq != anchor_seq else ' with another hash'}"
    )


def archived_hashes(paths: Sequence[str | Path], seqs: Iterable[int]) -> dict[int, tuple[str, str]]:
    """seq -> (hash, file) of each of records ``seqs`` an archive holds; each archive that
    holds any is read once (a head file keeps a checkpoint per commit: thousands of them
    can fall in one archive)."""
    wanted = set(seqs)
    out: dict[int, tuple[str, str]] = {}
    for p in paths:
        h = read_header(p)
        if any(h.first_seq <= seq <= h.last_seq for seq in wanted):
            for row in records(p):
                if row[0] in wanted:
                    out[row[0]] = (row[5], str(p))
    return out


def _hash_of(path: str, seq: int) -> str | None:
    return next((row[5] for row in records(path) if row[0] == seq), None)
