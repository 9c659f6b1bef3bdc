"""PromQL instant queries against an existing Prometheus server, over its HTTP API.

Behaviour as the Prometheus documentation states it ("HTTP API",
prometheus.io/docs/prometheus/latest/querying/api: "Format overview", "Instant queries",
"Expression query result formats"):

- ``GET <base>/api/v1/query?query=<expr>`` evaluates ``expr`` at the server's current time
  (``time`` omitted); ``timeout`` bounds the evaluation on the server's side.
- Every answer is a JSON envelope ``{"status": "success" | "error", "data": ...}``; an
  error adds ``errorType`` and ``error`` and comes with HTTP 400 (bad parameters), 422
  (the expression cannot be executed) or 503 (the query timed out or was aborted). Other
  non-2xx codes may come from before the API (a proxy), without the envelope.
- ``data`` is ``{"resultType": "matrix" | "vector" | "scalar" | "string", "result": ...}``.
  An instant vector is a list of ``{"metric": {labels}, "value": [<unix s>, "<value>"]}``
  (a native histogram carries ``histogram`` instead of ``value``); a scalar is
  ``[<unix s>, "<value>"]``. Values are JSON strings because JSON has no NaN or Inf:
  ``"NaN"``, ``"+Inf"`` and ``"-Inf"`` are spelt out.

What an answer means here (:func:`parse_reply`): a vector gives one figure per series, a
scalar one. An **empty vector is not zero**: nothing matched (the series are not scraped,
the target is down, a name is misspelt), so it is :class:`NoSeries`, an error the caller
treats as a failed read. A NaN or infinite value (``histogram_quantile`` over a window
without observations gives NaN) is refused the same way: no figure was observed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.base import BadReply, DeviceTimeout, DeviceUnreachable
from adapters.neterrors import describe


class NoSeries(BadReply):
    """The query matched no series: the figure is unknown, not zero."""


@dataclass(frozen=True)
class QueryResult:
    """One instant query's answer: a figure per series (a scalar: one)."""

    values: tuple[float, ...]
    at_s: float  # the evaluation time the server reports (unix seconds)
    warnings: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return float(sum(self.values))

    @property
    def highest(self) -> float:
        return max(self.values)


def _number(pair: Any, what: str) -> tuple[float, float]:
    """``[<unix s>, "<value>"]`` as (time, value); NaN and +-Inf refused."""
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
        raise BadReply(what, f'a sample is not [time, "value"]: {str(pair)[:80]}')
    try:
        at_s, value = float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        raise BadReply(what, f"a sample's value {pair[1]!r} is not a number") from None
    if not math.isfinite(value):
        raise BadReply(what, f"the value is {pair[1]} (no figure was observed)")
    return at_s, value


def _envelope(status_code: int, text: str, what: str) -> dict[str, Any]:
    """The JSON envelope; an error envelope or a non-2xx answer as BadReply."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if status_code // 100 != 2:
            raise BadReply(what, f"HTTP {status_code} from Prometheus: {text.strip()[:120]}")
        raise BadReply(what, "the answer is not the API's JSON envelope")
    if body.get("status") == "error" or status_code // 100 != 2:
        kind = body.get("errorType") or f"HTTP {status_code}"
        raise BadReply(what, f"Prometheus answered {kind}: {body.get('error', '(no message)')}")
    if body.get("status") != "success":
        raise BadReply(what, f"status {body.get('status')!r} is neither success nor error")
    return body


def parse_reply(status_code: int, text: str, what: str) -> QueryResult:
    """An instant query's HTTP answer as a :class:`QueryResult`; BadReply (NoSeries for
    an empty vector) saying why there is no figure."""
    body = _envelope(status_code, text, what)
    data = body.get("data")
    if not isinstance(data, dict):
        raise BadReply(what, "the answer has no data object")
    warnings = tuple(str(w) for w in body.get("warnings") or ())
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        at_s, value = _number(result, what)
        return QueryResult((value,), at_s, warnings)
    if kind == "vector":
        if not isinstance(result, list):
            raise BadReply(what, "a vector result that is not a list")
        if not result:
            raise NoSeries(what, "the query matched no series (no figure, which is not zero)")
        samples = []
        for series in result:
            if not isinstance(series, dict) or "value" not in series:
                # a native histogram sample ("histogram") is not one figure
                raise BadReply(what, "a series without a value (a native histogram?)")
            samples.append(_number(series["value"], what))
        return QueryResult(tuple(v for _, v in samples), max(t for t, _ in samples), warnings)
    raise BadReply(
        what, f"resultType {kind!r}: an instant vector or a scalar is needed (one figure now)"
    )


@dataclass
class PromqlClient:
    """One Prometheus server (its base URL, e.g. ``http://prometheus:9090``)."""

    base_url: str
    timeout_s: float = 2.0

    @property
    def query_url(self) -> str:
        return self.base_url.rstrip("/") + "/api/v1/query"

    async def query(self, client: httpx.AsyncClient, expr: str) -> QueryResult:
        """Evaluate ``expr`` now. Errors name the server and the query."""
        what = f"{self.base_url} query {expr!r}"
        params = {"query": expr, "timeout": f"{max(1, int(self.timeout_s * 1000))}ms"}
        try:
            r = await client.get(self.query_url, params=params, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise DeviceTimeout(what, f"no answer in {self.timeout_s} s") from None
        except httpx.HTTPError as exc:
            raise DeviceUnreachable(what, describe(exc)) from None
        return parse_reply(r.status_code, r.text, what)
