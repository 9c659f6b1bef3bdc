"""Network and OS errors in words an operator reads: ``the name does not resolve`` rather
than ``gaierror: [Errno -2] Name or service not known``.

The caller says where (``the GPU agent at gpu-07:7731``); :func:`describe` says what
happened, keeping the errno's symbolic name where it helps a search (``ECONNRESET``). A
library's exception raised from an OS error (httpx's ``ConnectError``) is described by that
OS error; one that is not keeps its message, its class name said only when it has none. A
builtin exception other than an OS error (``KeyError``) keeps its name (whether it is a bug
is :func:`adapters.faults.is_bug`'s rule). A SQLite
refusal says what it means for the file (``the disk is full``, read-only, locked, corrupt)
before SQLite's words and its result code's name (``SQLITE_FULL``).
"""

from __future__ import annotations

import errno
import re
import socket
import sqlite3
import ssl

#: getaddrinfo's failures (socket.EAI_*): the name is unknown, or no answer came from DNS.
_NO_NAME = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)}
_DNS_DOWN = {getattr(socket, n) for n in ("EAI_AGAIN", "EAI_FAIL") if hasattr(socket, n)}

#: gridsched's own packages: their errors are worded where they are raised (whether a
#: failure is a bug is :func:`adapters.faults.is_bug`'s rule).
OUR_PACKAGES = frozenset({"adapters", "scheduler", "models"})
#: errno values with a sentence that says more than strerror's few words.
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused: nothing listens on that port, or a firewall "
    "rejects it",
    errno.ECONNRESET: "the connection was reset by the other end",
    errno.ECONNABORTED: "the connection was aborted",
    errno.EPIPE: "the other end closed the connection",
    errno.EHOSTUNREACH: "no route to the host (down, or a firewall drops it)",
    errno.ENETUNREACH: "the network is unreachable from here (no route)",
    errno.ETIMEDOUT: "the connection timed out (the host did not answer)",
    errno.EADDRNOTAVAIL: "the address is not available on this host",
    errno.EACCES: "permission denied",
}
#: What a SQLite refusal means for the file (its result code's name without SQLITE_ and
#: any extended part: SQLITE_IOERR_WRITE is IOERR); SQLite's own words stay beside it.
_SQLITE_WORDS = {
    "FULL": "the disk is full, or the file reached its size limit",
    "READONLY": "the file or its folder is read-only to this process",
    "BUSY": "the database is locked by another connection or process",
    "LOCKED": "the database is locked by another connection or process",
    "CORRUPT": "the file is corrupt",
    "NOTADB": "the file is corrupt, or not a SQLite database",
    "CANTOPEN": "the file cannot be opened (a missing folder, or no permission)",
    "IOERR": "the disk failed to read or write",
    "PERM": "permission denied",
    "NOMEM": "the host is out of memory",
}


def describe(exc: BaseException, timeout_s: float | None = None) -> str:
    """What ``exc`` means, in words (``timeout_s``: the wait a TimeoutError ran out of)."""
    if isinstance(exc, socket.gaierror):
        detail = exc.strerror or str(exc)
        if exc.errno in _NO_NAME:
            return f"the host name does not resolve (DNS: {detail})"
        if exc.errno in _DNS_DOWN:
            return f"the host name could not be resolved now, DNS did not answer ({detail})"
        return f"the host name cannot be resolved ({detail})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        # the reason's code (CERTIFICATE_VERIFY_FAILED) is what a search finds
        why = f"{exc.reason}: {exc.verify_message}" if exc.verify_message else exc.reason
        return f"TLS: the certificate was not accepted ({why or exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", None):
        result = str(exc.sqlite_errorname)  # e.g. SQLITE_FULL, SQLITE_IOERR_WRITE
        meaning = sqlite_meaning(exc)
        return f"{meaning}: {exc} ({result})" if meaning else f"{exc} ({result})"
    if isinstance(exc, TimeoutError) and not exc.errno:
        return f"no answer within {timeout_s:g} s" if timeout_s else "no answer in time"
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_WORDS:
            return f"{_ERRNO_WORDS[exc.errno]} ({errno.errorcode[exc.errno]})"
        if exc.errno is not None and exc.strerror:
            name = errno.errorcode.get(exc.errno)
            return f"{exc.strerror}" + (f" ({name})" if name else "")
        # anyio's "All connection attempts failed" (httpx's async client) carries the last
        # attempt's error as its cause; asyncio's "Multiple exceptions: [Errno 111] Connect
        # call failed ('::1', 7731), [Errno 111] ..." (one per address) carries none
        inner = _os_cause(exc)
        if inner is not None and inner.errno is not None:
            return describe(inner, timeout_s)
        codes = {int(c) for c in re.findall(r"\[Errno (\d+)\]", str(exc))}
        if len(codes) == 1 and (code := codes.pop()) in _ERRNO_WORDS:
            return f"{_ERRNO_WORDS[code]} ({errno.errorcode[code]}, on every address)"
        return str(exc) or "an operating-system error without a message"
    if type(exc).__module__.split(".")[0] in OUR_PACKAGES:  # worded where raised, in context
        return str(exc) or type(exc).__name__
    inner = _os_cause(exc)
    if inner is not None:  # httpx's ConnectError, pymodbus's: the OS error they wrap
        return describe(inner, timeout_s)
    if type(exc).__module__ == "builtins":  # KeyError('x') is a bug: its name says most
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return str(exc) or type(exc).__name__


def sqlite_meaning(exc: BaseException) -> str | None:
    """What a SQLite refusal means for the file (``the disk is full``), None for an error
    that is not the file's or the disk's (SQL, a constraint, a closed connection)."""
    result = getattr(exc, "sqlite_errorname", None) if isinstance(exc, sqlite3.Error) else None
    if not result:
        return None
    parts = str(result).split("_")  # SQLITE_IOERR_WRITE: IOERR
    return _SQLITE_WORDS.get(parts[1] if len(parts) > 1 else parts[0])


def _os_cause(exc: BaseException) -> OSError | None:
    """The OS error a library's exception was raised from (``raise ... from exc``): the
    first with an errno, else the first at all."""
    seen: set[int] = set()
    first: OSError | None = None
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, BaseExceptionGroup):  # one error per address tried
            cause = next((e for e in cause.exceptions if isinstance(e, OSError)), None)
            continue
        if isinstance(cause, OSError):
            if cause.errno is not None:
                return cause
            first = first or cause
        cause = cause.__cause__ or cause.__context__
    return first
