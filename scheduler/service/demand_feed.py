"""The daemon's inference demand feed: the serving engines' metrics pages, or PromQL
queries against an existing Prometheus, polled on a timer.

Each poll reads every engine (``adapters.serving``) concurrently; ``DemandTracker`` turns
two successive readings into tokens/s demand (served plus queue backlog) and the latency
histograms of the window between them. With ``engine = "promql"`` each poll evaluates the
site's queries instead (``scheduler.service.demand_promql``): the demand query's value is
the demand now, the percentile queries' values are the objectives'. What the plan uses:

- **now and ahead**: the measured demand, and a forecast that decays from it to the site
  file's hourly profile (the prior) with ``tau_h``;
- **fall-back**: a poll where any engine cannot be read, or whose demand query fails or
  matches no series, keeps the last reading (the demand of engines not read is not known,
  so no partial sum is claimed; no series is no figure, not zero); a reading older than
  ``stale_s`` is dropped and the site file's figures are planned on again. Status and
  metrics say which source is in use and why.

A measured demand farther than ``replan_threshold`` from what the plan in force assumed
asks for a re-plan, and so does a change of source.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import numpy as np

from adapters.base import AdapterError, DeviceAdapter
from adapters.gpu import NvmlGpu
from adapters.serving import ServingEndpoint, ServingSample
from models.errors import ConfigError
from models.site import Inference, InferenceDemand
from scheduler.planner.inputs import PlanInputs, set_serving_demand
from scheduler.service.demand import (
    DemandReading,
    DemandTracker,
    SlaState,
    forecast_tokens_s,
    needs_replan,
)
from scheduler.service.demand_promql import PromqlDemand, PromqlReading, objective_state
from scheduler.service.objectives import ObjectiveWindow, judge

#: latency objectives: site key -> (status name, which histogram, quantile)
OBJECTIVES = {"ttft_p95_s": ("ttft_p95", "ttft_s", 0.95), "itl_p95_s": ("itl_p95", "itl_s", 0.95)}


def gpu_engine_problems(
    cfg: InferenceDemand, adapters: Iterable[DeviceAdapter]
) -> list[tuple[str, str]]:
    """``gpu_engines`` ids that are no GPU of the site's adapters (for ``wire_drains`` and
    ``gridsched validate``), each as ``(key, message)`` naming the valid ids."""
    gpus = sorted(a.device_id for a in adapters if isinstance(a, NvmlGpu))
    unknown = sorted(set(cfg.gpu_engines) - set(gpus))
    if not unknown:
        return []
    return [("inference.demand.gpu_engines", f"{unknown} are not GPU device ids (valid: {gpus})")]


class DemandFeed:
    def __init__(self, inference: Inference) -> None:
        assert inference.demand is not None
        self.inference = inference
        self.cfg: InferenceDemand = inference.demand
        self.stale_s = self.cfg.stale_s or 4 * self.cfg.poll_s
        self.promql = PromqlDemand(inference) if self.cfg.engine == "promql" else None
        self.endpoints = (
            []
            if self.promql is not None
            else [ServingEndpoint(self.cfg.engine, u, self.cfg.timeout_s) for u in self.cfg.urls]
        )
        #: the kind of the gpu_engines pages (the config requires it with promql + drains)
        self.drain_engine = self.cfg.drain_engine or (
            "vllm" if self.cfg.engine == "promql" else self.cfg.engine
        )
        self.tracker = DemandTracker(drain_s=self.cfg.backlog_s)
        self.window = ObjectiveWindow(self.cfg.objective_window_s)
        self.reading: DemandReading | PromqlReading | None = None
        self.ok_at: float | None = None  # monotonic time of the last full reading
        self.error: str | None = None
        self.up = False  # the latest poll read every engine
        #: demand (tokens/s now) the plan in force was made with; None: the site file's
        self.planned_tok_s: float | None = None
        self._planned_source = "site"
        #: the site file's demand for now (committed + spot, hourly profile), as last planned
        self.site_tok_s: float | None = None
        self._pending: float | None = None  # the demand of the plan being made
        self._client: httpx.AsyncClient | None = None
        self.clock: Callable[[], float] = time.monotonic  # readings' times (tests: a fake)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def poll(self) -> bool:
        """Read every engine once (or run the queries); True when the plan should be made
        again."""
        at = self.clock()
        if self.promql is not None:
            await self._poll_promql(self.promql, at)
        else:
            await self._poll_engines(at)
        return self.wants_replan()

    async def _poll_promql(self, promql: PromqlDemand, at: float) -> None:
        try:
            reading = await promql.read(self._http())
        except AdapterError as exc:
            self.up, self.error = False, str(exc)
            return
        self.up, self.error = True, None
        self.reading, self.ok_at = reading, at

    async def _poll_engines(self, at: float) -> None:
        client = self._http()
        got = await asyncio.gather(
            *(ep.read(client, at) for ep in self.endpoints), return_exceptions=True
        )
        errors = [
            f"{ep.url}: {r}"
            for ep, r in zip(self.endpoints, got, strict=True)
            if isinstance(r, AdapterError)
        ]
        for r in got:
            if isinstance(r, BaseException) and not isinstance(r, AdapterError):
                raise r
        if errors:
            self.up, self.error = False, "; ".join(errors)
        else:
            self.up, self.error = True, None
            samples = {
                ep.url: r
                for ep, r in zip(self.endpoints, got, strict=True)
                if isinstance(r, ServingSample)
            }
            reading = self.tracker.update(samples)
            self.window.add(samples)
            if reading is not None:
                self.reading, self.ok_at = reading, at

    def demand_now(self) -> float | None:
        """Measured tokens/s, or None when there is no reading young enough to plan on."""
        at = self.clock()
        if self.reading is None or self.ok_at is None or at - self.ok_at > self.stale_s:
            return None
        return self.reading.demand_tokens_s

    def tokens_now(self) -> float | None:
        """The demand the plan uses now: measured, else the site file's figure."""
        measured = self.demand_now()
        return self.site_tok_s if measured is None else measured

    def source(self) -> str:
        return "serving" if self.demand_now() is not None else "site"

    def wants_replan(self) -> bool:
        measured = self.demand_now()
        if measured is None:
            return self._planned_source != "site"  # back to the site file's figures
        if self.planned_tok_s is None:
            return True
        return needs_replan(self.planned_tok_s, measured, self.cfg.replan_threshold)

    def plan_demand(self, prior_tok_s: np.ndarray, hours_ahead: np.ndarray) -> np.ndarray | None:
        """Demand per plan step from the serving stack (None: plan on the site file); it
        becomes what the plan in force assumed once that plan is made (:meth:`planned`)."""
        measured = self.demand_now()
        self._pending = measured
        if measured is None:
            return None
        return forecast_tokens_s(prior_tok_s, hours_ahead, measured, self.cfg.tau_h)

    def planned(self) -> None:
        """The plan made with :meth:`plan_demand`'s demand is in force (a plan that failed
        is not: the demand it was made for still asks for a re-plan)."""
        self.planned_tok_s = self._pending
        self._planned_source = "site" if self._pending is None else "serving"

    def objectives(self) -> dict[str, dict[str, Any]]:
        """Each latency objective met / missed / unverified over the latest window; no
        young reading: unverified."""
        out: dict[str, dict[str, Any]] = {}
        fresh = self.demand_now() is not None
        for key, (name, hist, q) in OBJECTIVES.items():
            target = getattr(self.inference, key)
            if target is None:
                continue
            state, value, why = SlaState.UNVERIFIED, None, None
            extra: dict[str, Any] = {}
            if self.promql is not None:
                r = self.reading if fresh and isinstance(self.reading, PromqlReading) else None
                seen = None if r is None else r.objectives.get(name)
                state = objective_state(seen, target)
                value = None if seen is None else seen.value_s
                why = self.promql.missing_query(name)
                if why is None and seen is None:
                    why = "no young reading of the demand query"
                elif why is None and seen is not None:
                    why = seen.error  # None when met or missed
            elif fresh and (w := self.window.histograms()) is not None:
                h = getattr(w, hist)
                j = judge(h, q, target)
                state, value, why = j.state, j.value_s, j.reason
                extra = {"window_s": round(w.span_s, 1), "observations": h.count}
                if h.count > 0:  # the mean from _sum / _count: the fleet's p95 / mean
                    extra["mean_s"] = round(h.total / h.count, 4)
                if j.bucket_s is not None:  # JSON has no +inf: the last bucket's top is null
                    lower, upper = j.bucket_s
                    extra["bucket_s"] = [lower, None if math.isinf(upper) else upper]
            out[name] = {
                "state": state.value,
                "value_s": None if value is None else round(value, 4),
                "target_s": target,
                **extra,
            }
            if why is not None:  # why it is unverified (PromQL: the query's error)
                out[name]["error"] = why
        return out

    def status(self) -> dict[str, Any]:
        at = self.clock()
        r = self.reading if isinstance(self.reading, DemandReading) else None  # PromQL: None
        return {
            "source": self.source(),
            "engine": self.cfg.engine,
            "up": self.up,
            "tokens_s": None if (d := self.tokens_now()) is None else round(d, 1),
            "served_tokens_s": None if r is None else round(r.served_tokens_s, 1),
            "backlog_tokens_s": None if r is None else round(r.backlog_tokens_s, 1),
            "running": None if r is None else r.running,
            "waiting": None if r is None else r.waiting,
            "age_s": None if self.ok_at is None else round(at - self.ok_at, 1),
            "planned_tokens_s": None
            if self.planned_tok_s is None
            else round(self.planned_tok_s, 1),
            "error": self.error,
        }

    async def in_flight(self, url: str) -> float:
        """Requests running or waiting on one engine (for a GPU's drain)."""
        ep = ServingEndpoint(self.drain_engine, url, self.cfg.timeout_s)
        s = await ep.read(self._http(), self.clock())
        return s.running + s.waiting

    def wire_drains(
        self, adapters: Iterable[DeviceAdapter], on_drain: Callable[[float], None]
    ) -> None:
        """Give each GPU named in ``gpu_engines`` its engine's in-flight count and the
        drain bound; an id that is no GPU of this site is a configuration error."""
        gpus = {a.device_id: a for a in adapters if isinstance(a, NvmlGpu)}
        problems = gpu_engine_problems(self.cfg, adapters)
        if problems:
            raise ConfigError("site configuration", problems)
        for device_id, url in self.cfg.gpu_engines.items():
            gpu = gpus[device_id]
            gpu.in_flight = functools.partial(self.in_flight, url)
            gpu.drain_s = self.cfg.drain_s
            gpu.on_drain = on_drain

    def drains(self, steps: Mapping[str, Any]) -> set[str]:
        """Of the devices about to be commanded, the GPUs put to sleep after a drain."""
        return {
            i
            for i, step in steps.items()
            if i in self.cfg.gpu_engines and step.request.action == "sleep" and self.cfg.drain_s > 0
        }

    def set_plan_demand(self, inputs: PlanInputs, now_s: float) -> None:
        """The plan's serving demand from the engines (forecast over its horizon, the
        site file's hourly profile as the prior); left as the site file's without a
        young reading."""
        prior = inputs.committed_tok_s + inputs.spot_tok_s
        self.site_tok_s = float(prior[0]) if len(prior) else None
        hours = np.maximum(inputs.grid.starts_s - now_s, 0.0) / 3600.0
        demand = self.plan_demand(prior, hours)
        if demand is not None:
            set_serving_demand(inputs, demand, f"{self.cfg.engine} metrics")
