"""``gridsched run`` (the daemon) and ``gridsched audit`` (the decision log)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.site import Posture, load_site
from scheduler.audit.archive import CHUNK
from scheduler.cli.fleet import run_async

log = logging.getLogger("gridsched")


def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.audit.identity import OtherSite
    from scheduler.audit.store import StoreError
    from scheduler.cli import startup

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    config = load_site(args.config)
    if args.listen:
        config = config.model_copy(
            update={"daemon": config.daemon.model_copy(update={"listen": args.listen})}
        )
    db = Path(args.db) if args.db else config.resolve(config.daemon.state_dir) / "gridsched.db"
    lock_fd: int | None = None
    try:
        # Everything that can refuse does so before a device is touched (docs/daemon.md).
        startup.check_secrets(config)
        startup.check_measurable(config)
        sock = startup.bind_listen(config.daemon.listen)
        try:
            lock_fd = startup.lock_state_file(db)
            daemon = _open_daemon(config, db, args.adopt_state)
            startup.check_sim_addresses(daemon.built)
        except BaseException:
            sock.close()
            raise
    except startup.Refusal as exc:
        for line in exc.lines:
            print(f"gridsched: error: {line}", file=sys.stderr)
        return exc.code
    except (StoreError, OtherSite) as exc:
        print(f"gridsched: error: {exc}", file=sys.stderr)
        return startup.EXIT_STATE
    try:
        run_async(_serve(daemon, sock, args))
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    return 0


def _open_daemon(config: Any, db: Path, adopt: bool) -> Any:
    """The daemon on its state file, once the file is known sound and this site's."""
    from scheduler.audit.identity import claim_site
    from scheduler.service.daemon import Daemon

    daemon = Daemon(config, db)  # opens the store: a corrupt file raises StoreError here
    try:
        previous = claim_site(db, config.site.name, adopt)
    except BaseException:
        daemon.store.close()
        raise
    if previous is not None:
        log.warning("%s: re-labelled from site %r to %r", db, previous, config.site.name)
    return daemon


async def _serve(daemon: Any, sock: Any, args: argparse.Namespace) -> None:
    import uvicorn

    from scheduler.service.api import create_app
    from scheduler.service.http import server_options

    config = daemon.config
    host, port = sock.getsockname()[:2]
    server = _quiet_server_class()(
        uvicorn.Config(
            create_app(daemon),
            log_level="warning",
            access_log=False,
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
            lifespan="off",
            **server_options(config.daemon),
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        log.info(
            "gridsched running: %s on http://%s:%s, state %s",
            config.site.name,
            host,
            port,
            daemon.db_path,
        )
        print(f"gridsched: serving http://{host}:{port} (state {daemon.db_path})", flush=True)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:  # whatever ended the serving, the devices get the shutdown posture
        posture = Posture(args.posture) if args.posture else None
        await daemon.stop(posture)
        r = daemon.shutdown_report
        print(
            f"gridsched: stopped; safe posture: {r['told']} devices told, {r['confirmed']} "
            f"confirmed by read-back, {r['unconfirmed']} not confirmed within "
            f"{r.get('waited_s', 0):g} s, {r['failed']} failed",
            flush=True,
        )


def _quiet_server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """The daemon owns SIGTERM/SIGINT (it must set the safe posture before exiting)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def _no_db(path: str) -> bool:
    """Say so when the database is missing (opening it would create an empty one)."""
    if Path(path).exists():
        return False
    print(f"gridsched: error: {path}: no such database", file=sys.stderr)
    return True


def _expect_head(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise SystemExit(
            f"gridsched: error: --expect-head {text!r} is not SEQ:HASH (a checkpoint from "
            "/v1/status or an archive header, e.g. 201:3f2a...; the hash is 64 hex digits)"
        )
    return int(seq), digest


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from scheduler.audit.archive import ArchiveError, check_sequence, in_dirs
    from scheduler.audit.store import Store, StoreError

    if _no_db(args.db):
        return 2
    expect = _expect_head(args.expect_head) if args.expect_head else None
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
    if args.archive:
        try:
            for line in check_sequence(in_dirs(args.archive), store):
                print(line)
        except ArchiveError as exc:
            print(f"BROKEN: {exc}")
            return 1
        where = f" from record {v.from_seq}, continuing the archives" if v.from_seq > 1 else ""
    noun = "record" if v.records == 1 else "records"
    head = ""
    if v.head is not None:
        head = f"; {v.checkpoints} checkpoints, the last at record {v.head.seq}"
    print(f"{args.db}: hash chain intact, {v.records} {noun}{where}{head}")
    return 0


def _ts(text: str, what: str) -> float:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SystemExit(
            f"gridsched: error: {what} {text!r} is not ISO 8601 (e.g. 2026-08-10T17:00:00Z)"
        ) from None
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
        print(f"{args.db}: no record before {when} to archive (the newest always stays)")
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

    if _no_db(args.db):
        return 2
    store = Store(args.db, migrate=False)  # exporting never changes the file
    v = store.verify()
    start, end = _ts(args.from_, "--from"), _ts(args.to, "--to")
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
    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
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
                        "ok": o["ok"],
                        "error": o.get("error"),
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


def cmd_signal(args: argparse.Namespace) -> int:
    """Send one simple-format signal, signed with Standard Webhooks, and print the answer."""
    import os
    import uuid

    import httpx

    from scheduler.service.security import sign

    secret = os.environ.get(args.secret_env)
    if not secret:
        print(
            f"gridsched: error: ${args.secret_env} is not set (the webhook secret)", file=sys.stderr
        )
        return 2
    if args.type == "cancel" and not args.id:
        print(
            "gridsched signal: error: cancel needs --id, the id of the event to cancel "
            "(GET /v1/signals lists them)",
            file=sys.stderr,
        )
        return 2
    event: dict[str, Any] = {"id": args.id or f"op-{uuid.uuid4().hex[:12]}", "type": args.type}
    if args.type != "cancel":
        start = args.start or datetime.now(UTC).replace(microsecond=0).isoformat()
        event["start"] = start.replace("+00:00", "Z")
        if args.duration:
            event["duration"] = args.duration
        if args.end:
            event["end"] = args.end
    for key in ("limit_kw", "level", "price"):
        if getattr(args, key) is not None:
            event[key] = getattr(args, key)
    body = json.dumps(event).encode()
    msg_id, ts = str(uuid.uuid4()), int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret.split(",")[0], msg_id, ts, body),
    }
    try:
        resp = httpx.post(
            args.url.rstrip("/") + "/v1/signals", content=body, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        print(f"gridsched: error: {args.url}: {exc}", file=sys.stderr)
        return 2
    print(f"{resp.status_code} {resp.text}")
    return 0 if resp.status_code in (200, 202) else 1


def add_parsers(sub: Any) -> None:
    ru = sub.add_parser("run", help="the daemon: plan, apply, watch, answer grid signals")
    ru.add_argument("--config", required=True)
    ru.add_argument("--db", help="SQLite state file (default: [daemon] state_dir/gridsched.db)")
    ru.add_argument(
        "--listen",
        default=os.environ.get("GRIDSCHED_LISTEN") or None,
        help="HOST:PORT for the HTTP API (default: $GRIDSCHED_LISTEN, else [daemon] listen)",
    )
    ru.add_argument(
        "--posture", choices=[p.value for p in Posture], help="on SIGTERM (default from [daemon])"
    )
    ru.add_argument("--tls-cert", help="serve HTTPS with this certificate (or use a reverse proxy)")
    ru.add_argument("--tls-key")
    ru.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ru.add_argument(
        "--adopt-state",
        action="store_true",
        help="the state file was this site's under another [site] name: re-label it",
    )
    ru.set_defaults(func=cmd_run)

    sg = sub.add_parser("signal", help="send a signed simple-format signal to a daemon")
    sg.add_argument("type", choices=["curtail", "price", "alert", "cancel"])
    sg.add_argument("--url", default="http://127.0.0.1:8080")
    sg.add_argument("--id", help="event id (default: a new one); cancel needs the event's id")
    sg.add_argument("--start", help="ISO 8601 with offset (default: now)")
    sg.add_argument("--duration", help="e.g. 1h, 30min (default: until cancelled)")
    sg.add_argument("--end", help="ISO 8601 end instead of --duration")
    sg.add_argument("--limit-kw", dest="limit_kw", type=float)
    sg.add_argument("--level", type=int, choices=[0, 1, 2, 3])
    sg.add_argument("--price", type=float, help="USD/MWh")
    sg.add_argument("--secret-env", default="GRIDSCHED_WEBHOOK_SECRET")
    sg.set_defaults(func=cmd_signal)

    au = sub.add_parser("audit", help="verify and export the hash-chained decision log")
    asub = au.add_subparsers(dest="audit_command", required=True)
    archive_help = "archive file or directory of them from `audit archive` (repeat the flag)"
    v = asub.add_parser("verify", help="re-walk the hash chain")
    v.add_argument("--db", required=True)
    v.add_argument("--archive", action="append", metavar="FILE", help=archive_help)
    v.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="a checkpoint kept elsewhere (/v1/status, an archive header): the chain must hold it",
    )
    v.set_defaults(func=cmd_audit_verify)
    e = asub.add_parser("export", help="signals, commands and measured power as CSV")
    e.add_argument("--db", required=True)
    e.add_argument("--from", dest="from_", required=True, help="ISO 8601 UTC start")
    e.add_argument("--to", required=True)
    e.add_argument("--out", help="CSV file (default stdout)")
    e.add_argument("--archive", action="append", metavar="FILE", help=archive_help)
    e.set_defaults(func=cmd_audit_export)
    ar = asub.add_parser(
        "archive",
        help="move records older than a date to a verified file; the chain goes on from it",
    )
    ar.add_argument("--db", required=True)
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
