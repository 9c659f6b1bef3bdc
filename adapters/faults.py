"""Is a failure a bug in gridsched, or a fault of the world it works with? One rule,
:func:`is_bug`, for every place that catches a failure and says it: a device call
(:func:`adapters.base.contain`), the GPU agent, the price and hashprice feeds, the
re-plan, the daemon's background tasks, the audit trail's writer, the signal writer and
the API's answer to a signal it could not store.

A bug keeps its class name in the words an operator reads (``KeyError: 'cap_kw'``) and its
traceback is logged once per place it was raised (the file and line of its innermost
frame): a bug met at every poll logs one traceback, not one per poll. An expected fault (a
device, the disk, the network, a feed, bad input) is one line in words, no traceback.

The rule, in order:

1. An exception of a class defined in gridsched (GridschedError, AdapterError, SolverError,
   FeedError, StoreError...) is a fault: it was raised on purpose and worded where raised.
2. An OSError (TimeoutError, ConnectionError, FileNotFoundError...) is a fault: the
   network, a device, the disk, a command that is not there.
3. A SQLite error is a fault when the file or the disk refused (full, read-only, locked,
   corrupt, an I/O error, cannot be opened, no permission, no memory: its result code says
   which; an OperationalError without one carries SQLite's words and counts as the file's).
   Any other SQLite error (an SQL error, a constraint, a closed connection) is gridsched's
   use of the file: a bug.
4. Another library's own exception (httpx's HTTPError, pydantic's ValidationError,
   pyasic's, json's JSONDecodeError) is a fault: the library raised it on purpose and says
   what it met.
5. A builtin exception (KeyError, TypeError, ValueError...) depends on the place:

   - where the place hands a library, or its own parser, what the world sent (``reading``:
     pyasic parsing a miner's answer, pandas a feed's body, ``float('abc')`` on a device's
     figure), it is the answer that did not fit: a fault, unless it was raised in
     gridsched's own code (the innermost frame's module) and is of a kind only a mistake
     raises there (LookupError, TypeError, AttributeError, NameError, ArithmeticError,
     AssertionError, RuntimeError): a bug;
   - elsewhere (the re-plan, background tasks, the audit trail, the signal writer: they
     work on gridsched's own data, checked when it came in) it is a bug, whether our code
     raised it or a library we handed our data to (numpy in the planner, json in the audit
     trail).

An exception group is a bug when any exception in it is. The places that read are the
device calls (:func:`adapters.base.contain`), the GPU agent's backend and the feeds; the
others pass ``reading=False``, the default.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType

from adapters.neterrors import OUR_PACKAGES, describe, sqlite_meaning

#: Builtin exceptions that, raised in our own code, only a mistake raises (a ValueError
#: there may be a value from outside that does not fit: ``float('abc')``).
BUG_KINDS: tuple[type[BaseException], ...] = (
    LookupError,
    TypeError,
    AttributeError,
    NameError,
    ArithmeticError,
    AssertionError,
    RuntimeError,
)
#: Places whose bug had its traceback logged: (type, file, line). Bounded, so that a
#: process meeting many distinct bugs still logs the first ones and never grows.
_LOGGED: set[tuple[str, str, int]] = set()
_LOGGED_MAX = 256


def is_bug(exc: BaseException, *, reading: bool = False) -> bool:
    """Whether ``exc`` is a bug in gridsched rather than an expected fault (the rule is in
    this module's docstring). ``reading``: the place reads what the world sent (a device's
    answer, a feed's body), so a builtin exception a library raised is the answer's."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_bug(e, reading=reading) for e in exc.exceptions)
    if _module(type(exc)) in OUR_PACKAGES:
        return False
    if isinstance(exc, OSError):
        return False
    if isinstance(exc, sqlite3.Error):
        return not file_refused(exc)
    if type(exc).__module__ != "builtins":
        return False
    if not reading:
        return True
    return isinstance(exc, BUG_KINDS) and raised_in_our_code(exc)


def file_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk or a SQLite file refusing: an OSError, or a SQLite error
    whose result code says the file or the disk (an OperationalError without a code
    carries SQLite's words, as one made without a real file does)."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    if sqlite_meaning(exc) is not None:
        return True
    return type(exc) is sqlite3.OperationalError and not getattr(exc, "sqlite_errorname", None)


def raised_in_our_code(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in gridsched's packages."""
    tb = _raised_at(exc)
    return tb is not None and _module_of_frame(tb) in OUR_PACKAGES


def named(exc: BaseException) -> str:
    """A bug as an operator reads it: its class and message (``KeyError: 'cap_kw'``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def in_words(exc: BaseException, *, reading: bool = False) -> str:
    """``exc`` as an operator reads it: a bug by its name (:func:`named`), a fault in words
    (:func:`adapters.neterrors.describe`)."""
    return named(exc) if is_bug(exc, reading=reading) else describe(exc)


def traceback_once(exc: BaseException, *, reading: bool = False) -> BaseException | None:
    """``exc`` for a log call's ``exc_info`` when it is a bug whose place has not had its
    traceback logged yet (it is then marked as logged); None for a fault or a place
    already logged. An exception that was never raised (no traceback) has no place: it is
    always returned."""
    if not is_bug(exc, reading=reading):
        return None
    tb = _raised_at(exc)
    if tb is None:
        return exc
    place = (type(exc).__name__, tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    if place in _LOGGED or len(_LOGGED) >= _LOGGED_MAX:
        return None
    _LOGGED.add(place)
    return exc


def _module(cls: type[BaseException]) -> str:
    return cls.__module__.split(".", maxsplit=1)[0]


def _module_of_frame(tb: TracebackType) -> str:
    return str(tb.tb_frame.f_globals.get("__name__", "")).split(".", maxsplit=1)[0]


def _raised_at(exc: BaseException) -> TracebackType | None:
    """The innermost frame of ``exc``'s traceback: where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb
