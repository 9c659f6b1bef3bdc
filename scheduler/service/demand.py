"""Inference demand from the serving stack's own metrics: tokens/s now, a short forecast,
and the latency objectives met or missed.

Pure logic over :class:`adapters.serving.ServingSample` readings (no sockets, no clock):
the daemon's feed reads the engines and hands the samples here.

- **Demand now** = tokens generated per second over the last window (what was served)
  plus the queue's backlog: requests waiting times the mean output tokens per request,
  spread over ``drain_s`` (the time in which the queue should be cleared). Served tokens
  alone would read a saturated fleet as satisfied demand.
- **Forecast**: the site file's hourly profile stays the prior; the gap between what is
  measured now and what the prior says for now decays towards the prior with time
  constant ``tau_h`` (a surge seen now is expected to last a while, not all day).
- **Latency objectives** (TTFT and inter-token latency at a percentile) are met or missed
  from the histograms' observations in the window, and ``unverified`` when the window
  has none: no claim without an observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from adapters.serving import Histogram, ServingSample


class SlaState(Enum):
    MET = "met"
    MISSED = "missed"
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class DemandReading:
    window_s: float
    served_tokens_s: float
    backlog_tokens_s: float
    running: float
    waiting: float
    ttft_s: Histogram  # observations in the window, all engines merged
    itl_s: Histogram

    @property
    def demand_tokens_s(self) -> float:
        return self.served_tokens_s + self.backlog_tokens_s


def merge_histograms(hists: list[Histogram]) -> Histogram:
    """Histograms of several engines with the same buckets, summed; engines whose buckets
    differ from the first are left out of the merge (their quantiles cannot be added)."""
    hists = [h for h in hists if h.counts]
    if not hists:
        return Histogram()
    first = hists[0]
    same = [h for h in hists if h.bounds == first.bounds]
    return Histogram(
        first.bounds,
        tuple(float(sum(c)) for c in zip(*(h.counts for h in same), strict=True)),
        sum(h.total for h in same),
        sum(h.count for h in same),
    )


@dataclass
class DemandTracker:
    """Turns successive samples of each endpoint into demand over the window between them.

    ``mean_output_tokens``: what a waiting request is assumed to generate when no finished
    request has been observed yet (the engines' own per-request histogram is used once it
    has observations).
    """

    drain_s: float = 60.0
    mean_output_tokens: float = 256.0
    _last: dict[str, ServingSample] = field(default_factory=dict)

    def update(self, samples: dict[str, ServingSample]) -> DemandReading | None:
        """Samples keyed by endpoint; None until an endpoint has been read twice."""
        served = backlog = running = waiting = 0.0
        windows: list[float] = []
        ttft: list[Histogram] = []
        itl: list[Histogram] = []
        for key, s in samples.items():
            before = self._last.get(key)
            self._last[key] = s
            running += s.running
            waiting += s.waiting
            per_request = s.output_tokens_per_request
            mean_out = (
                per_request.total / per_request.count if per_request.count > 0 else None
            ) or self.mean_output_tokens
            backlog += s.waiting * mean_out / self.drain_s
            if before is None or s.at_s <= before.at_s:
                continue
            dt = s.at_s - before.at_s
            tokens = s.generated_tokens - before.generated_tokens
            if tokens < 0:  # the engine restarted: its counter began again at zero
                tokens = s.generated_tokens
            served += tokens / dt
            windows.append(dt)
            ttft.append(s.ttft_s.minus(before.ttft_s))
            itl.append(s.itl_s.minus(before.itl_s))
        if not windows:
            return None
        return DemandReading(
            window_s=float(np.mean(windows)),
            served_tokens_s=served,
            backlog_tokens_s=backlog,
            running=running,
            waiting=waiting,
            ttft_s=merge_histograms(ttft),
            itl_s=merge_histograms(itl),
        )


def forecast_tokens_s(
    prior_tokens_s: np.ndarray, hours_ahead: np.ndarray, measured_now: float, tau_h: float = 1.0
) -> np.ndarray:
    """Demand per step: the prior (the hourly profile) plus today's gap to it, decaying
    with ``tau_h``. ``prior_tokens_s[0]`` is the prior for now; never below zero."""
    if len(prior_tokens_s) == 0:
        return np.zeros(0)
    if tau_h <= 0:
        raise ValueError(f"tau_h must be > 0, got {tau_h}")
    gap = measured_now - float(prior_tokens_s[0])
    return np.maximum(prior_tokens_s + gap * np.exp(-np.asarray(hours_ahead) / tau_h), 0.0)


def needs_replan(planned_tokens_s: float, measured_tokens_s: float, threshold: float) -> bool:
    """A change of demand beyond ``threshold`` (relative to the larger of the two)."""
    scale = max(planned_tokens_s, measured_tokens_s)
    return scale > 0 and abs(measured_tokens_s - planned_tokens_s) / scale > threshold


def sla_state(hist: Histogram, quantile: float, target_s: float) -> tuple[SlaState, float | None]:
    """Whether the ``quantile`` of the window's observations is within ``target_s``."""
    value = hist.quantile(quantile)
    if value is None or math.isnan(value):
        return SlaState.UNVERIFIED, None
    return (SlaState.MET if value <= target_s else SlaState.MISSED), value
