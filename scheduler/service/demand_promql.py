"""Inference demand and latency objectives from PromQL queries against an existing
Prometheus (``[inference.demand] engine = "promql"``).

Each poll evaluates ``query`` (the demand in tokens/s now: Prometheus has already done
the rates, so no counter is differenced here) and the objectives' percentile queries.
The demand query decides whether the poll read anything: an error, an empty result or a
NaN is a failed read (``adapters.promql``), and the feed keeps its last reading or falls
back to the site file, as for an engine that cannot be read. An objective whose query
fails, matches nothing or gives NaN (``histogram_quantile`` over a window without
observations) is ``unverified``, with the reason; several series are judged by the worst
(an objective is met only where every series meets it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from adapters.base import AdapterError, BadReply
from adapters.promql import PromqlClient, QueryResult
from models.site import Inference
from scheduler.service.demand import SlaState

#: latency objectives: status name -> (the site key of the target, the query's key)
PROMQL_OBJECTIVES = {
    "ttft_p95": ("ttft_p95_s", "ttft_p95_query"),
    "itl_p95": ("itl_p95_s", "itl_p95_query"),
}


@dataclass(frozen=True)
class Observed:
    """One objective's percentile as the query gave it, or why there is none."""

    value_s: float | None
    error: str | None = None


@dataclass(frozen=True)
class PromqlReading:
    """One poll's figures: the demand now and each objective's percentile."""

    demand_tokens_s: float
    objectives: dict[str, Observed] = field(default_factory=dict)


def objective_state(observed: Observed | None, target_s: float) -> SlaState:
    if observed is None or observed.value_s is None:
        return SlaState.UNVERIFIED
    return SlaState.MET if observed.value_s <= target_s else SlaState.MISSED


@dataclass
class PromqlDemand:
    """The queries of one site's ``[inference.demand]`` against its Prometheus."""

    inference: Inference
    client: PromqlClient = field(init=False)
    demand_query: str = field(init=False)
    #: objective name -> its query, for the objectives the site states and queries
    queries: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.inference.demand
        if cfg is None or cfg.engine != "promql" or cfg.query is None:
            raise ValueError("PromqlDemand needs [inference.demand] engine = 'promql' and query")
        self.demand_query = cfg.query
        self.client = PromqlClient(cfg.urls[0], cfg.timeout_s)
        self.queries = {}
        for name, (target, key) in PROMQL_OBJECTIVES.items():
            expr = getattr(cfg, key)
            if expr is not None and getattr(self.inference, target) is not None:
                self.queries[name] = expr

    def missing_query(self, name: str) -> str | None:
        """Why an objective the site states has no observation: no query configured."""
        if name in self.queries:
            return None
        return f"no [inference.demand] {PROMQL_OBJECTIVES[name][1]} to observe it with"

    async def read(self, http: httpx.AsyncClient) -> PromqlReading:
        """Every query once, concurrently; AdapterError when the demand query gives no
        figure (the objectives' failures are kept as their reasons)."""
        names = list(self.queries)
        got = await asyncio.gather(
            self.client.query(http, self.demand_query),
            *(self.client.query(http, self.queries[n]) for n in names),
            return_exceptions=True,
        )
        for r in got:
            if isinstance(r, BaseException) and not isinstance(r, AdapterError):
                raise r
        demand = got[0]
        if not isinstance(demand, QueryResult):
            raise demand  # an AdapterError: the others were raised above
        if demand.total < 0:
            raise BadReply(self.client.base_url, f"a negative demand ({demand.total}) is no figure")
        observed: dict[str, Observed] = {}
        for name, r in zip(names, got[1:], strict=True):
            if isinstance(r, QueryResult):
                observed[name] = Observed(r.highest)
            else:
                observed[name] = Observed(None, str(r))
        return PromqlReading(demand.total, observed)
