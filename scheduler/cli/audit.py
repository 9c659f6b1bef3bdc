"""``gridsched audit``: verify, export and archive the hash-chained decision log."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.audit.archive import CHUNK


def _no_db(path: str) -> bool:
    """Say so when the database is missing (opening it would create an empty one) or the
    path is a folder (SQLite's "unable to open" would read as a corrupt database)."""
    if Path(path).is_dir():
        print(
            f"gridsched: error: {path}: is a directory; name the state file in it (the "
            "daemon's --db, e.g. /var/lib/gridsched/gridsched.db)",
            file=sys.stderr,
        )
        return True
    if Path(path).exists():
        return False
    print(f"gridsched: error: {path}: no such database", file=sys.stderr)
    return True


def _no_archives(paths: list[str] | None) -> bool:
    """Say so when an --archive path is missing: a typo is not a broken chain."""
    missing = [a for a in paths or [] if not Path(a).exists()]
    for a in missing:
        print(f"gridsched: error: --archive {a}: no such file or directory", file=sys.stderr)
    return bool(missing)


def _expect_head(text: str) -> tuple[int, str] | None:
    """``SEQ:HASH``, or None after saying why it is not one."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        print(
            f"gridsched: error: --expect-head {text!r} is not SEQ:HASH (a checkpoint from "
            "/v1/status or an archive header, e.g. 201:3f2a...; the hash is 64 hex digits)",
            file=sys.stderr,
        )
        return None  # a usage error (2), not a broken chain (1)
    return int(seq), digest


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from scheduler.audit.archive import ArchiveError, check_sequence, in_dirs
    from scheduler.audit.store import Store, StoreError

    if _no_db(args.db) or _no_archives(args.archive):
        return 2
    expect = _expect_head(args.expect_head) if args.expect_head else None
    if args.expect_head and expect is None:
        return 2
    try:
        store = Store(args.db, migrate=False)  # verifying never changes the file
    except StoreError as exc:
        print(f"{args.db}: BROKEN: {exc}")
        return 1
    v = store.verify(expect)
    for note in v.notes:
        print(f"{args.db}: note: {note}")
    if not v.ok:
        at = "" if v.first_bad_seq is None else f" at record {v.first_bad_seq}"
        print(f"{args.db}: BROKEN{at}: {v.reason} ({v.records} records read)")
        for p in v.problems[1:]:
            print(f"  also: {p.text}")
        return 1
    where = ""
    if v.from_seq > 1:
        where = (
            f" from record {v.from_seq} (1-{v.from_seq - 1} archived to {', '.join(v.archived_to)})"
        )
    expected = [w for w in v.archived_witnesses if w[2] == "the expected head"]
    if expected and not args.archive:  # never "intact" over a witness not checked
        print(
            f"gridsched: error: --expect-head: record {expected[0][0]} is archived (records "
            f"1-{v.from_seq - 1}, {', '.join(v.archived_to) or 'archive files'}): pass them "
            "with --archive to check it",
            file=sys.stderr,
        )
        return 2
    if args.archive:
        try:
            files = in_dirs(args.archive)
            for line in check_sequence(files, store):
                print(line)
            broken = _archived_witnesses(v.archived_witnesses, files)
        except ArchiveError as exc:
            print(f"BROKEN: {exc}")
            return 1
        if broken:
            print(broken)
            return 1
        for seq, _digest, _what in expected:
            print(f"the expected head, record {seq}, matches the archived record")
        where = f" from record {v.from_seq}, continuing the archives" if v.from_seq > 1 else ""
    noun = "record" if v.records == 1 else "records"
    head = ""
    if v.head is not None:
        head = f"; {v.checkpoints} checkpoints, the last at record {v.head.seq}"
    print(f"{args.db}: hash chain intact, {v.records} {noun}{where}{head}")
    return 0


def _archived_witnesses(witnesses: tuple[tuple[int, str, str], ...], files: list[Path]) -> str:
    """Each checkpoint whose record is archived, against the archive's record: the first
    that differs, in words (BROKEN), else ""."""
    from scheduler.audit.archive import archived_hashes

    held = archived_hashes(files, (seq for seq, _, _ in witnesses))
    for seq, digest, where in witnesses:
        found = held.get(seq)
        if found is None:
            return f"BROKEN at record {seq}: no archive given holds it, which {where} names"
        if found[0] != digest:
            return (
                f"BROKEN at record {seq}: its hash in {found[1]} differs from {where}: a "
                "record was edited or removed and the chain re-hashed after it"
            )
    return ""


def _ts(text: str, what: str) -> float:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SystemExit(
            f"gridsched: error: {what} {text!r} is not ISO 8601 (e.g. 2026-08-10T17:00:00Z)"
        ) from None
    if "T" not in text.upper() and " " not in text.strip():  # a date alone, Z or not
        raise SystemExit(
            f"gridsched: error: {what} {text!r} has no time of day; write e.g. "
            f"{text[:10]}T00:00:00Z"
        )
    if t.tzinfo is None:
        raise SystemExit(f"gridsched: error: {what} {text!r} has no UTC offset; add Z")
    return t.astimezone(UTC).timestamp()


def cmd_audit_archive(args: argparse.Namespace) -> int:
    from models.durations import parse_duration_s
    from scheduler.audit.archive import ArchiveError, archive

    if _no_db(args.db):
        return 2
    if args.before is not None:
        before = _ts(args.before, "--before")
    else:
        try:
            before = time.time() - parse_duration_s(args.older_than)
        except ValueError as exc:
            print(f"gridsched: error: --older-than: {exc}", file=sys.stderr)
            return 2
    try:
        done = archive(args.db, before, args.out or args.out_dir, args.chunk, args.out is None)
    except ArchiveError as exc:
        print(f"gridsched: error: {exc}", file=sys.stderr)
        return 1
    if not done.records:
        when = datetime.fromtimestamp(before, UTC).isoformat()
        why = "the newest record always stays"
        if done.held_from:
            why = (
                f"a signal still in force was recorded at record {done.held_from}: it and "
                "every record after it stay in the database while it is in force"
            )
        print(f"{args.db}: no record before {when} to archive ({why})")
        return 0
    last = datetime.fromtimestamp(done.last_at, UTC).isoformat()
    print(
        f"archived {done.records} records ({done.first_seq}-{done.last_seq}, the last at "
        f"{last}) to {done.path}, verified; {args.db} now starts at record {done.last_seq + 1} "
        "(keep the file: `gridsched audit verify --archive` proves the chain across both)"
    )
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from scheduler.audit.archive import ArchiveError, check_sequence, in_dirs, records
    from scheduler.audit.store import Store

    if _no_db(args.db) or _no_archives(args.archive):
        return 2
    start, end = _ts(args.from_, "--from"), _ts(args.to, "--to")
    if end <= start:  # an empty file and exit 0 read as "nothing happened"
        print(
            f"gridsched: error: --to {args.to} must be after --from {args.from_}", file=sys.stderr
        )
        return 2
    store = Store(args.db, migrate=False)  # exporting never changes the file
    v = store.verify()
    kinds = ("signal", "commands", "telemetry", "plan", "shutdown")
    found: list[tuple[int, float, str, dict[str, Any], str]] = []
    if args.archive:
        try:
            files = in_dirs(args.archive)
            check_sequence(files, store)
            upto = store.anchor().seq  # later ones are in the database (an interrupted run)
            for seq, at, kind, text, _prev, h in (r for a in files for r in records(a)):
                if seq <= upto and start <= at < end and kind in kinds:
                    found.append((seq, at, kind, json.loads(text), h))
        except ArchiveError as exc:
            print(f"gridsched: error: {exc}", file=sys.stderr)
            return 1
    elif v.from_seq > 1:
        first = next(store.records(0.0, float("inf")), None)
        if first is not None and start < first[1]:
            print(
                f"gridsched: note: records before {datetime.fromtimestamp(first[1], UTC)} are "
                f"archived ({', '.join(v.archived_to)}); pass them with --archive",
                file=sys.stderr,
            )
    try:
        out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    except OSError as exc:
        print(f"gridsched: error: --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    w = csv.writer(out)
    w.writerow(["seq", "time_utc", "kind", "subject", "value", "detail", "hash"])
    n = 0
    for seq, at, kind, payload, h in itertools.chain(
        sorted(found), store.records(start, end, kinds)
    ):
        when = datetime.fromtimestamp(at, UTC).isoformat()
        for subject, value, detail in _rows(kind, payload):
            w.writerow([seq, when, kind, subject, value, detail, h])
            n += 1
    if args.out:
        out.close()
        print(
            f"wrote {n} rows to {args.out}; chain {'intact' if v.ok else 'BROKEN: ' + v.reason}",
            file=sys.stderr,
        )
    return 0 if v.ok else 1


def _rows(kind: str, p: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if kind == "signal":
        return [
            (
                e.get("id", ""),
                e.get("limit_kw", e.get("level", e.get("price", ""))),
                json.dumps({k: v for k, v in e.items() if not k.startswith("_")}, sort_keys=True),
            )
            for e in p.get("events", [])
        ]
    if kind == "commands":
        return [
            (
                o["device"],
                o["request"],
                json.dumps(
                    {
                        "why": p.get("why"),
                        # accepted, rejected, failed; a read-back's confirmed, unconfirmed
                        # or superseded ("ok", but never shown: its note names the newer)
                        "kind": o.get("kind"),
                        "ok": o["ok"],
                        "error": o.get("error"),
                        "note": o.get("note"),
                        "applied_w": o.get("applied_w"),
                    }
                ),
            )
            for o in p.get("outcomes", [])
        ]
    if kind == "telemetry":
        rows: list[tuple[str, Any, str]] = [
            (
                "site import kW",
                p.get("import_kw"),
                json.dumps(
                    {
                        "cap_kw": p.get("cap_kw"),
                        "events": p.get("events"),
                        "source": p.get("import_source"),
                        "estimated_kw": p.get("estimated_kw"),
                        "devices_unread": p.get("devices_unread"),
                    }
                ),
            )
        ]
        if "compliance" in p:  # met / not_met / unverified: what DR evidence can claim
            detail = {"cap_kw": p.get("cap_kw"), "reason": p.get("compliance_reason")}
            rows.append(("cap compliance", p["compliance"], json.dumps(detail)))
        return rows
    return [(kind, p.get("status", p.get("posture", "")), json.dumps(p, sort_keys=True)[:2000])]


def add_parsers(sub: Any) -> None:
    au = sub.add_parser("audit", help="verify and export the hash-chained decision log")
    asub = au.add_subparsers(dest="audit_command", required=True)
    archive_help = "archive file or directory of them from `audit archive` (repeat the flag)"
    v = asub.add_parser("verify", help="re-walk the hash chain")
    v.add_argument("--db", required=True, help="the daemon's SQLite state file")
    v.add_argument("--archive", action="append", metavar="FILE", help=archive_help)
    v.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="a checkpoint kept elsewhere (/v1/status, an archive header): the chain must hold it",
    )
    v.set_defaults(func=cmd_audit_verify)
    e = asub.add_parser("export", help="signals, commands and measured power as CSV")
    e.add_argument("--db", required=True, help="the daemon's SQLite state file")
    e.add_argument("--from", dest="from_", required=True, help="ISO 8601 UTC start")
    e.add_argument("--to", required=True, help="ISO 8601 UTC end (exclusive)")
    e.add_argument("--out", help="CSV file (default stdout)")
    e.add_argument("--archive", action="append", metavar="FILE", help=archive_help)
    e.set_defaults(func=cmd_audit_export)
    ar = asub.add_parser(
        "archive",
        help="move records older than a date to a verified file; the chain goes on from it",
    )
    ar.add_argument("--db", required=True, help="the daemon's SQLite state file")
    when = ar.add_mutually_exclusive_group(required=True)
    when.add_argument("--before", help="ISO 8601 UTC: archive records before it")
    when.add_argument("--older-than", help="archive records older than this (e.g. 90d, 12h)")
    where = ar.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="new file (.jsonl, or .jsonl.gz compressed)")
    where.add_argument(
        "--out-dir", help="directory: a new gridsched-audit-FIRST-LAST.jsonl.gz in it"
    )
    ar.add_argument("--chunk", type=int, default=CHUNK, help="records deleted per transaction")
    ar.set_defaults(func=cmd_audit_archive)
