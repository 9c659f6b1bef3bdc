"""What every request to the daemon's API passes before its route acts, and how a refusal
is answered (``add_error_handlers``, one shape for all): the rate limit per client, the
body's size cap (read in chunks, never whole before it is known to fit), the JSON content
type, and the read token where ``[daemon] require_read_token`` asks for one. Routes:
:mod:`scheduler.service.api`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.faults import file_refused, is_bug, named, traceback_once
from adapters.neterrors import describe
from models.config_daemon import Daemon as DaemonConfig
from scheduler.service.daemon import Daemon
from scheduler.service.daemon.signals import write_failure
from scheduler.service.intake import Refused
from scheduler.service.security import (
    AuthError,
    RateLimiter,
    SecretConfigError,
    check_bearer,
    read_secret_list,
)

log = logging.getLogger("gridsched.api")


def error(status: int, message: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    """The API's error answer: ``{"error": ..., "detail": [...]}``."""
    return JSONResponse({"error": message, "detail": detail or []}, status_code=status)


def not_stored(daemon: Daemon, source: str, exc: Exception) -> JSONResponse:
    """A signal that could not be stored: nothing was accepted, the sender is asked to
    send it again. The state file refusing (full, read-only, locked) says so with its
    reason; a bug in gridsched says so by its name, its traceback logged once per place
    (:func:`adapters.faults.is_bug`)."""
    daemon.counters.signal(source, "not_stored")
    log.error("%s signal not stored: %s", source, write_failure(exc), exc_info=traceback_once(exc))
    if file_refused(exc):
        why = f"the state file refused the write ({describe(exc)})"
    elif is_bug(exc):
        why = f"gridsched failed on it (a bug: {named(exc)}; its log has the traceback)"
    else:
        why = describe(exc)
    return error(503, f"signal not stored: {why}; send it again")


class Guards:
    """The checks of one app's requests; each raises :class:`AuthError` with its status."""

    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.limiter = RateLimiter(rate=cfg.rate_per_s, burst=2 * cfg.rate_per_s)

    async def body_of(self, request: Request) -> bytes:
        cap = self.cfg.body_max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise AuthError(413, f"body of {declared} bytes is over the {cap}-byte cap")
        from starlette.requests import ClientDisconnect

        chunks = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise AuthError(413, f"body is over the {cap}-byte cap")
                chunks.append(chunk)
        except ClientDisconnect:  # not a fault of ours: no traceback for any client to cause
            raise AuthError(400, f"client disconnected after {size} bytes of the body") from None
        return b"".join(chunks)

    def gate(self, request: Request) -> None:
        client = request.client.host if request.client else "?"
        if not self.limiter.allow(client):
            raise AuthError(
                429, f"more than {self.cfg.rate_per_s:g} requests/s from {client}; slow down"
            )

    def check_json(self, request: Request) -> None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise AuthError(415, f"content-type {ctype or '(none)'!r}: send application/json")

    def read_access(self, request: Request) -> None:
        self.gate(request)
        if self.cfg.require_read_token:
            tokens = read_secret_list("GRIDSCHED_READ_TOKENS", "GRIDSCHED_READ_TOKENS_FILE")
            check_bearer(tokens, request.headers.get("authorization"), "read access")


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal in the API's shape ``{"error", "detail": [{field, problem}]}``: the
    routes' own (AuthError, Refused), a secret file changed since start-up (503, not a
    bare 500), and FastAPI's 404, 405 and query checks (before: {"detail": "Not Found"})."""

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return error(exc.status, str(exc), exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own 404 and 405 in the API's shape (before: {"detail": "Not Found"})
        where = f"{request.method} {request.url.path}"[:200]
        words = {
            404: f"no such endpoint: {where} (the API: docs/daemon.md, /openapi.json)",
            405: f"{request.method} is not allowed on {request.url.path[:200]}",
        }.get(exc.status_code, str(exc.detail))
        answer = error(exc.status_code, words)
        for name, value in (exc.headers or {}).items():  # e.g. 405's Allow
            answer.headers[name] = value
        return answer

    @app.exception_handler(RequestValidationError)
    async def _query(_: Request, exc: RequestValidationError) -> JSONResponse:
        # a query parameter FastAPI checks (the OpenADR callback's echo)
        detail = [
            {
                "field": ".".join(str(p) for p in err["loc"]),
                "problem": str(err["msg"]).removeprefix("Value error, "),
            }
            for err in exc.errors()
        ]
        return error(422, "invalid request", detail)

    @app.exception_handler(SecretConfigError)
    async def _secret_config(_: Request, exc: SecretConfigError) -> JSONResponse:
        # start-up refuses these; a secret file changed since is said, not a bare 500
        log.error("secret configuration: %s", exc)
        return error(503, f"the daemon's secret configuration cannot be used: {exc}")
