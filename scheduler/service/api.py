"""The daemon's HTTP API (FastAPI): grid signals in; plan, status, health and metrics out.

- ``POST /v1/signals``: the simple signal format (one event or a list), signed with
  Standard Webhooks headers under ``GRIDSCHED_WEBHOOK_SECRET``;
- ``POST /openadr3/notifications`` (and ``GET ...?echo=X``): OpenADR 3 notifications with
  ``Authorization: Bearer`` one of ``GRIDSCHED_OPENADR_TOKENS``;
- ``GET /v1/plan``, ``/v1/status``, ``/v1/signals``: read-only views (a token from
  ``GRIDSCHED_READ_TOKENS`` when ``[daemon] require_read_token``);
- ``GET /healthz``: 200, or 503 with the reason: no device of the site can be read, the
  plan is older than ``max_plan_age_s``, the last re-plan failed (the last good plan may
  still be in force), or no good plan covers now (the fail-safe posture);
- ``GET /metrics``: Prometheus exposition.

Errors answer JSON ``{"error": ..., "detail": [...]}``: 401 unsigned, stale or forged; 403 a
token without the right; 413 body over the cap; 415 not JSON; 422 invalid signal, with the
field and what is valid (JSON nested deeper than 32, dates outside 1970-2099, a priority
that is not an integer, an id twice in one request, a simple-format id in the ``oadr:``
namespace); 404 a cancel of an id never stored; 409 a webhook id reused for another body
(also after a restart); 429 over the rate limit. A signal is answered 202 only after it is
on disk; a retried delivery (same webhook id and body) is answered 200 and not applied twice.
"""

# This docstring is the OpenAPI description (docs/reference/openapi.json). The checks every
# request passes first (rate, size, type, read token) are in scheduler.service.api_guards.

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from models.signals import GridEvent
from scheduler.audit.store import body_digest
from scheduler.service.api_guards import Guards, add_error_handlers, error, not_stored
from scheduler.service.api_schemas import (
    NOTIFICATION_SCHEMA,
    SIGNAL_ERRORS,
    SIGNAL_SCHEMA,
    Accepted,
    ErrorBody,
    shown_signal,
)
from scheduler.service.daemon import Daemon
from scheduler.service.intake import (
    Refused,
    check_classes,
    check_ids,
    check_levels,
    parse_body,
    unknown_cancels,
)
from scheduler.service.openadr import OpenADRError, read_notification
from scheduler.service.security import (
    AuthError,
    RecentBodies,
    SecretConfigError,
    check_bearer,
    read_secret_list,
    verify_webhook,
    webhook_secrets,
)

log = logging.getLogger("gridsched.api")


_REUSED = (
    "webhook-id {} was already used for another body: a retry resends the same body, "
    "a new message needs a new webhook-id"
)


def _simple_events(
    body: bytes, class_names: list[str], levels: dict[str, float]
) -> list[GridEvent]:
    """The simple-format events of a body; :class:`Refused` (422) naming each bad field,
    a device class (``classes``) the site has not got, or a ``level`` it has no cap for."""
    raw = parse_body(body)
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(i, dict) for i in items):
        raise Refused(422, "expected an event object or a non-empty list of them")
    events, problems, fields = [], [], []
    for k, item in enumerate(items):
        where = f"[{k}]." if isinstance(raw, list) else ""
        try:
            data = {**item, "source": "simple"}
            events.append(GridEvent.model_validate(data))
            fields.append(f"{where}id")
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(event)"
                got = err.get("input")
                if got == data:  # the whole event (a field missing): as sent, no source added
                    got = item
                problems.append(
                    {
                        "field": f"{where}{loc}",
                        "problem": err["msg"].removeprefix("Value error, "),
                        "got": repr(got)[:100],
                    }
                )
    if problems:
        raise Refused(422, "invalid signal", problems)
    check_ids(events, "simple", fields)
    check_classes(events, class_names, fields)
    check_levels(events, levels, fields)
    return events


def _say_if_no_webhook_secret() -> None:
    """Without a webhook secret every simple signal is refused (403): said once, at start."""
    try:
        secrets = webhook_secrets()
    except SecretConfigError:
        return  # refused at start-up (gridsched run), and said with each request
    if not secrets:
        log.warning(
            "no GRIDSCHED_WEBHOOK_SECRET (or _FILE) is set: POST /v1/signals refuses every "
            "signal (403) until one is; OpenADR 3 notifications are not concerned"
        )


def create_app(daemon: Daemon, serving: bool = True) -> FastAPI:
    """The daemon's API; ``serving`` False for its definition alone (``gridsched docs``),
    which says nothing of the secrets of the host it is made on."""
    cfg = daemon.config.daemon
    if serving:
        _say_if_no_webhook_secret()
    app = FastAPI(
        title="gridsched",
        version="1",
        summary="Grid-aware scheduler for Bitcoin miners and AI inference",
        description=__doc__,
    )
    guards = Guards(cfg)
    gate, check_json, body_of = guards.gate, guards.check_json, guards.body_of
    read_access = guards.read_access
    recent = RecentBodies()
    snapshot = daemon.metrics_snapshot  # shared with [metrics] listen

    add_error_handlers(app)

    @app.post(
        "/v1/signals",
        status_code=202,
        response_model=Accepted,
        responses={
            **SIGNAL_ERRORS,
            200: {"model": Accepted, "description": "a retried delivery"},
            404: {"model": ErrorBody, "description": "a cancel names no stored signal"},
            409: {"model": ErrorBody, "description": "webhook-id already used for another body"},
        },
        summary="Accept simple-format grid signals (Standard Webhooks signed)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                SIGNAL_SCHEMA,
                                {"type": "array", "items": SIGNAL_SCHEMA, "minItems": 1},
                            ]
                        }
                    }
                },
            },
            "parameters": [
                {"name": n, "in": "header", "required": True, "schema": {"type": "string"}}
                for n in ("webhook-id", "webhook-timestamp", "webhook-signature")
            ],
        },
    )
    async def post_signal(request: Request) -> Any:
        gate(request)
        check_json(request)
        body = await body_of(request)
        keys = webhook_secrets()
        if not keys:
            daemon.counters.signal("simple", "rejected")
            raise AuthError(
                403,
                "no webhook secret is configured (GRIDSCHED_WEBHOOK_SECRET); signals are refused",
            )
        try:
            msg_id = verify_webhook(keys, request.headers, body)
        except AuthError:
            daemon.counters.signal("simple", "unauthorized")
            raise
        stored_body = daemon.store.webhook_body(msg_id)
        if (
            # the id was stored with another body (the stored digest outlives a restart);
            # checked first, so that a refused body never enters the recent bodies
            stored_body is not None and stored_body != body_digest(body.decode("utf-8", "replace"))
        ) or not recent.check(msg_id, body):
            daemon.counters.signal("simple", "conflict")
            raise Refused(409, _REUSED.format(msg_id[:80]))
        try:
            events = _simple_events(
                body, [dc.name for dc in daemon.config.devices], daemon.config.tariff.dr_levels_kw
            )
            known, retry = daemon.store.known_ids([e.id for e in events], msg_id)
            missing = [] if retry else unknown_cancels(events, known)
            if missing:
                raise Refused(
                    404,
                    f"no stored signal has the id {', '.join(map(repr, missing))} to cancel; "
                    "GET /v1/signals lists them",
                    [{"field": "id", "problem": f"unknown id {i!r}"} for i in missing],
                )
        except Refused as exc:
            recent.forget(msg_id)  # nothing stored: the id may be used again
            daemon.counters.signal("simple", "unknown" if exc.status == 404 else "invalid")
            raise
        try:
            stored, ids = await daemon.accept(
                events, "simple", msg_id, body.decode("utf-8", "replace")
            )
        except Exception as exc:
            recent.forget(msg_id)
            return not_stored(daemon, "simple", exc)
        if not stored and sorted(ids) != sorted(e.id for e in events):
            # a retry resends the same body; other ids under a stored webhook id are not one
            daemon.counters.signal("simple", "conflict")
            raise Refused(409, _REUSED.format(msg_id[:80]))
        over = datetime.fromtimestamp(time.time(), UTC)
        ended = [e.id for e in events if e.type != "cancel" and e.end_utc <= over]
        return JSONResponse(
            {"accepted": True, "duplicate": not stored, "ids": ids, "ended": ended},
            status_code=202 if stored else 200,
        )

    @app.get(
        "/openadr3/notifications", response_class=PlainTextResponse, summary="Callback URL check"
    )
    async def openadr_echo(request: Request, echo: str = Query(max_length=1024)) -> str:
        gate(request)
        return echo

    @app.post(
        "/openadr3/notifications",
        status_code=202,
        response_model=Accepted,
        responses={**SIGNAL_ERRORS, 200: {"model": Accepted}},
        summary="Accept OpenADR 3 notifications (bearer token)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": NOTIFICATION_SCHEMA}},
            }
        },
    )
    async def openadr_notification(request: Request) -> Any:
        gate(request)
        tokens = read_secret_list("GRIDSCHED_OPENADR_TOKENS", "GRIDSCHED_OPENADR_TOKENS_FILE")
        if not tokens:
            raise AuthError(
                403,
                "no OpenADR token is configured (GRIDSCHED_OPENADR_TOKENS); "
                "notifications are refused",
            )
        try:
            check_bearer(tokens, request.headers.get("authorization"), "OpenADR notifications")
        except AuthError:
            daemon.counters.signal("openadr3", "unauthorized")
            raise
        check_json(request)
        body = await body_of(request)
        try:
            raw = parse_body(body)
            reading = read_notification(
                raw, datetime.now(UTC), daemon.config.openadr, programs=daemon.openadr_programs
            )
            events = [GridEvent.model_validate(d) for d in reading.events]
            fields = [f"events[{k}].id" for k in range(len(events))]
            check_ids(events, "openadr3", fields)
            # a SIMPLE level the site has no cap for would fail every re-plan in force;
            # this endpoint can say so, as the webhook does (a polled event cannot)
            check_levels(events, daemon.config.tariff.dr_levels_kw, fields)
        except Refused:
            daemon.counters.signal("openadr3", "invalid")
            raise
        except OverflowError:  # a date plus a duration past year 9999 (e.g. P9998Y)
            daemon.counters.signal("openadr3", "invalid")
            return error(
                422,
                "invalid OpenADR 3 notification",
                [{"field": "object.intervalPeriod / intervals[].intervalPeriod",
                  "problem": "a start plus its duration ends after year 9999; "
                  "P9999Y means until cancelled"}],
            )  # fmt: skip
        except OpenADRError as exc:
            daemon.counters.signal("openadr3", "invalid")
            return error(
                422, "invalid OpenADR 3 notification", [{"field": exc.path, "problem": exc.reason}]
            )
        except ValidationError as exc:
            daemon.counters.signal("openadr3", "invalid")
            return error(
                422,
                "invalid OpenADR 3 event",
                [
                    {"field": ".".join(map(str, e["loc"])), "problem": e["msg"]}
                    for e in exc.errors()
                ],
            )
        except (ValueError, UnicodeDecodeError) as exc:
            daemon.counters.signal("openadr3", "invalid")
            return error(422, f"body is not JSON: {exc}")
        if not events:
            try:  # a PROGRAM learned is on disk before the VTN hears it was taken
                await daemon.openadr_programs.flush()
            except Exception as exc:
                return not_stored(daemon, "openadr3", exc)
            return JSONResponse({"accepted": True, "duplicate": False, "ids": []}, status_code=200)
        try:
            stored, ids = await daemon.accept(
                events, "openadr3", None, body.decode("utf-8", "replace")
            )
        except Exception as exc:
            return not_stored(daemon, "openadr3", exc)
        for p in reading.payloads:  # acted on or not, every payload is counted
            daemon.counters.openadr_payload(p.label, p.acted)
        if daemon.ven is not None:  # stored: the VEN's polling need not hand it on again
            daemon.ven.observe(raw)
        return JSONResponse(
            {"accepted": True, "duplicate": not stored, "ids": ids}, status_code=202
        )

    @app.get("/v1/plan", summary="The plan in force (JSON schema gridsched.plan/1)")
    async def get_plan(request: Request) -> Any:
        read_access(request)
        if daemon.plan is None:
            return error(503, "no plan yet", [{"problem": daemon.plans.error or "planning"}])
        return daemon.plan.to_dict()

    @app.get("/v1/status", summary="Import against cap, events, plan and device health")
    async def get_status(request: Request) -> Any:
        read_access(request)
        return daemon.status()

    @app.get("/v1/signals", summary="Stored signals in force or to come")
    async def get_signals(request: Request) -> Any:
        read_access(request)
        stored = daemon.store.signals(include_ended_after=time.time())
        return {"signals": [shown_signal(ev) for ev in stored]}

    @app.get(
        "/healthz",
        summary=(
            "200 while a fresh, good plan is in force and some device answers; "
            "503 with the reason otherwise"
        ),
    )
    async def healthz() -> Any:
        # 503 also after a failed re-plan (the last good plan may still be in force) and
        # while no good plan covers now (the fail-safe posture): the error says which
        now = time.time()
        age = daemon.plans.age_s(now)
        problem = daemon.health_problem(now)
        if problem is not None:
            detail = {
                "plan_age_s": None if age is None else round(age, 1),
                "max_plan_age_s": cfg.max_plan_age_s,
                "plan_error": daemon.plans.error,
                "failsafe": daemon.failsafe_reason(now),
            }
            return error(503, problem, [detail])
        return {"ok": True, "plan_age_s": None if age is None else round(age, 1)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        read_access(request)
        body, ctype = snapshot.render()
        latest = snapshot.latest
        return Response(body + snapshot.tail(latest) if latest else body, media_type=ctype)

    return app
