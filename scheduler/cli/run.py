"""``gridsched run`` (the daemon) and ``gridsched signal`` (a signed signal sent to it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from adapters.aio import run_async
from models.site import Posture, load_site

log = logging.getLogger("gridsched")


def configure_logging(level_name: str) -> None:
    """The daemon's log at ``level_name``. APScheduler says each job's start and end at
    INFO (about eight lines a minute at the default poll), which would bury the daemon's
    own lines in journald: below DEBUG it says only its warnings (a run missed or skipped)
    and errors. gridsched's loggers keep ``level_name`` after pyasic, imported at the first
    connect, sets the root logger to WARNING; pyasic's own lines show only at DEBUG
    (:mod:`adapters.library_logs`). Other libraries log from WARNING up below DEBUG, with
    pyasic or without (httpx says every request at INFO: each feed read and VEN poll)."""
    from adapters.library_logs import keep_daemon_logging

    level = getattr(logging, level_name.upper())
    libraries = logging.WARNING if level > logging.DEBUG else level
    logging.basicConfig(
        level=libraries, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("apscheduler").setLevel(libraries)
    keep_daemon_logging(level)


def _local_api_url() -> str:
    """The API of a daemon on this host: at ``$GRIDSCHED_LISTEN`` (a wildcard host reached
    on loopback), else the default ``[daemon] listen``."""
    listen = os.environ.get("GRIDSCHED_LISTEN", "").strip()
    if not listen:
        return "http://127.0.0.1:8080"
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.audit.identity import OtherSite
    from scheduler.audit.store import StoreError
    from scheduler.cli import startup

    configure_logging(args.log_level)
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
        startup.check_tls(args.tls_cert, args.tls_key)
        sock = startup.bind_listen(config.daemon.listen)
        # the address bound (port 0: the port the OS chose), e.g. for the VTN's callback URL
        bound = f"{config.daemon.listen.rpartition(':')[0]}:{sock.getsockname()[1]}"
        config = config.model_copy(
            update={"daemon": config.daemon.model_copy(update={"listen": bound})}
        )
        try:
            startup.check_ven(config, sock.getsockname()[1])
            lock_fd = startup.lock_state_file(db)
            daemon = _open_daemon(config, db, args.adopt_state)
            startup.check_sim_addresses(daemon.built)
            try:  # [metrics] listen: refused now too, before a device is touched
                daemon.bind_metrics()
            except OSError as exc:
                daemon.store.close()
                raise startup.Refusal(startup.EXIT_BUSY, [str(exc)]) from None
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
    from scheduler.cli import profiling

    profile = profiling.install(loop)  # only with $GRIDSCHED_PROFILE set: a measuring aid
    try:
        from scheduler.cli.fleet import Progress  # on a terminal only

        daemon.connect_progress = Progress(f"connecting {len(daemon.built.adapters):,} devices")
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
        if profile is not None:
            profile.dump()
        posture = Posture(args.posture) if args.posture else None
        await daemon.stop(posture)
        line = stop_line(daemon.shutdown_report)
        if "NOT complete" in line:
            log.warning("%s", line.removeprefix("gridsched: "))
        print(line, flush=True)


def stop_line(r: dict[str, Any]) -> str:
    """The last line of ``gridsched run``: how many devices took the shutdown posture, read
    back; "NOT complete" where any failed or was not confirmed (the line began "safe
    posture" with 2 miners left hashing: the SRE's walk, session 24)."""
    whole = r["confirmed"] == r["told"]
    head = "safe posture" if whole else "shutdown posture NOT complete"
    tail = "" if whole else "; the devices not confirmed may still draw power (fleet status)"
    return (
        f"gridsched: stopped; {head}: {r['told']} devices told, {r['confirmed']} "
        f"confirmed by read-back, {r['unconfirmed']} not confirmed within "
        f"{r.get('limit_s', 0):g} s, {r['failed']} failed (read back in "
        f"{r.get('waited_s', 0):g} s){tail}"
    )


def _quiet_server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """The daemon owns SIGTERM/SIGINT (it must set the safe posture before exiting)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def _note_if_over(event: dict[str, Any]) -> None:
    """An event that ended before now is stored and answered 202 but never acts: say so (a
    mistyped year otherwise looks like a scheduled curtail). The daemon judges the rest."""
    from pydantic import ValidationError

    from models.signals import GridEvent

    try:
        end = GridEvent.model_validate(event).end
    except ValidationError:
        return  # the daemon's 422 names the field
    if end is not None and end <= datetime.now(UTC):
        when = end.astimezone(UTC).isoformat().replace("+00:00", "Z")
        print(f"gridsched signal: note: this event ended at {when}, before now", file=sys.stderr)


#: What each type ``gridsched signal`` sends takes, in flags (models.signals.TAKES).
_SIGNAL_TAKES = {
    "curtail": "--limit-kw or --level",
    "price": "--price (USD/MWh)",
    "alert": "nothing more, or --limit-kw or --level",
    "cancel": "--id only (it ends the stored signal with that id when it is received)",
}


def _flags_ignored(args: argparse.Namespace) -> str | None:
    """The refusal of flags the signal's type does not act on (the daemon would refuse the
    event, 422): named, with what the type takes."""
    from models.signals import TAKES, EventType

    takes = TAKES[EventType(args.type)]
    names = ("start", "end", "duration", "limit_kw", "level", "price")
    flags = [
        "--" + n.replace("_", "-") for n in names if getattr(args, n) is not None and n not in takes
    ]
    if not flags:
        return None
    return (
        f"{' and '.join(flags)} with a {args.type}: a {args.type} takes "
        f"{_SIGNAL_TAKES[args.type]}; leave {'them' if len(flags) > 1 else 'it'} out"
    )


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
    if args.limit_kw is not None and args.level is not None:
        print(
            "gridsched signal: error: --limit-kw and --level are both given: give one, not "
            "both (--limit-kw: the site's import cap in kW; --level: 0-3, the cap of "
            "[tariff.dr_levels_kw] for that level)",
            file=sys.stderr,
        )
        return 2
    if (ignored := _flags_ignored(args)) is not None:
        print(f"gridsched signal: error: {ignored}", file=sys.stderr)
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
    _note_if_over(event)
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


#: What the daemon does with each type ``gridsched signal`` sends, as docs/daemon.md's table
#: of the simple format says it (tests/test_signal_types_doc.py holds them to the same words).
SIGNAL_TYPES = {
    "curtail": "caps the site's import at limit_kw, or at the cap [tariff.dr_levels_kw] gives "
    "its level (level 0: no cap); with classes, the power of those device classes instead "
    "(limit_kw only)",
    "price": "overrides the market price with price (USD/MWh) while in force; where prices "
    "overlap, the highest priority wins",
    "alert": "sheds: caps the site's import at [tariff.dr_levels_kw] level 3's cap, else at "
    "the protected load (base load and committed inference); at its own limit_kw or level "
    "when it gives one",
    "cancel": "ends the stored signal with this id (404 when no stored signal has it)",
}


def add_parsers(sub: Any) -> None:
    ru = sub.add_parser("run", help="the daemon: plan, apply, watch, answer grid signals")
    ru.add_argument("--config", required=True, help="site TOML file")
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
    ru.add_argument("--tls-key", help="private key of --tls-cert")
    ru.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log lines shown (default: %(default)s)",
    )
    ru.add_argument(
        "--adopt-state",
        action="store_true",
        help="the state file was this site's under another [site] name: re-label it",
    )
    ru.set_defaults(func=cmd_run)

    sg = sub.add_parser(
        "signal",
        help="send a signed simple-format signal to a daemon",
        description="Send a signed simple-format signal to a daemon. What the daemon does "
        "with each type is said below, in the words of docs/daemon.md's table of the simple "
        "format's types.",
    )
    sg.add_argument(
        "type",
        choices=list(SIGNAL_TYPES),
        help="; ".join(f"{name}: {what}" for name, what in SIGNAL_TYPES.items()),
    )
    sg.add_argument(
        "--url",
        default=_local_api_url(),
        help="the daemon's API; the signal goes to URL/v1/signals (default: %(default)s, "
        "from $GRIDSCHED_LISTEN where set, as gridsched run listens)",
    )
    sg.add_argument("--id", help="event id (default: a new one); cancel needs the event's id")
    sg.add_argument("--start", help="ISO 8601 with offset (default: now); not for cancel")
    sg.add_argument("--duration", help="e.g. 1h, 30min (default: until cancelled); not for cancel")
    sg.add_argument("--end", help="ISO 8601 end instead of --duration; not for cancel")
    sg.add_argument(
        "--limit-kw",
        dest="limit_kw",
        type=float,
        help="curtail, alert: the site's import cap in kW (not with --level)",
    )
    sg.add_argument(
        "--level",
        type=int,
        choices=[0, 1, 2, 3],
        help="curtail, alert: the [tariff.dr_levels_kw] level whose cap applies (not with "
        "--limit-kw)",
    )
    sg.add_argument("--price", type=float, help="price: USD/MWh")
    sg.add_argument(
        "--secret-env",
        default="GRIDSCHED_WEBHOOK_SECRET",
        help="the environment variable holding the webhook secret to sign with "
        "(default: %(default)s)",
    )
    sg.set_defaults(func=cmd_signal)
