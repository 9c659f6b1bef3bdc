"""Latency objectives judged from the serving engines' histograms over a window.

vLLM exposes time to first token and inter-token latency as cumulative Prometheus
histograms (``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``,
``vllm:time_per_output_token_seconds`` before the rename; ``adapters.serving`` parses
them). The observations of a window are the latest reading's buckets less those of the
reading at the window's start, per engine, merged bucket by bucket over the engines; the
percentile is read from the merged buckets as PromQL's ``histogram_quantile`` reads them
(``Histogram.quantile``). This is what ``histogram_quantile(0.95, sum by (le)
(rate(..._bucket[5m])))`` computes in a Prometheus.

What the buckets can show decides the state: the quantile lies in one bucket
``(lower, upper]``. An objective at or above ``upper`` is ``met`` and one at or below
``lower`` is ``missed``, whatever the observations inside the bucket; an objective inside
the bucket cannot be judged from the histogram (the interpolated value is an estimate, not
an observation): ``unverified``, with the bucket named. Objectives on the engine's bucket
bounds are always judged (vLLM's are listed in docs/daemon.md).

A window is at least one poll long. Until it is full, it covers what has been read so far
(and says how long that is); an engine that restarted counts from its restart. A window
without an observation gives no percentile: the objective is ``unverified``, never
``met`` (no claim without an observation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.serving import Histogram, ServingSample
from scheduler.service.demand import SlaState, merge_histograms


@dataclass(frozen=True)
class WindowHistograms:
    """The observations of the window, all engines merged."""

    span_s: float  # how long the window actually covers (the longest engine's)
    ttft_s: Histogram
    itl_s: Histogram


class ObjectiveWindow:
    """Each engine's readings over the last ``window_s`` seconds (and the one before)."""

    def __init__(self, window_s: float) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        self.window_s = window_s
        self._samples: dict[str, deque[ServingSample]] = {}

    def add(self, samples: Mapping[str, ServingSample]) -> None:
        """One poll's readings keyed by engine; older readings than the window's start
        are dropped."""
        for key, s in samples.items():
            q = self._samples.setdefault(key, deque())
            if q and s.at_s <= q[-1].at_s:
                continue  # not newer: keep the window monotonic
            q.append(s)
            start = s.at_s - self.window_s
            # keep the newest reading at or before the window's start (the baseline)
            while len(q) > 2 and q[1].at_s <= start:
                q.popleft()

    def histograms(self) -> WindowHistograms | None:
        """The window's observations, or None until some engine has been read twice."""
        spans: list[float] = []
        ttft: list[Histogram] = []
        itl: list[Histogram] = []
        for q in self._samples.values():
            if len(q) < 2:
                continue
            latest = q[-1]
            start = latest.at_s - self.window_s
            base = next((b for b in reversed(list(q)[:-1]) if b.at_s <= start), q[0])
            spans.append(latest.at_s - base.at_s)
            ttft.append(latest.ttft_s.minus(base.ttft_s))
            itl.append(latest.itl_s.minus(base.itl_s))
        if not spans:
            return None
        return WindowHistograms(max(spans), merge_histograms(ttft), merge_histograms(itl))


@dataclass(frozen=True)
class Judgement:
    state: SlaState
    value_s: float | None  # the interpolated quantile (histogram_quantile's estimate)
    bucket_s: tuple[float, float] | None  # the bucket the quantile lies in
    reason: str | None  # why unverified


def judge(hist: Histogram, q: float, target_s: float) -> Judgement:
    """Whether the window's ``q``-quantile is within ``target_s``, as far as the buckets
    show it."""
    bucket = hist.quantile_bucket(q)
    value = hist.quantile(q)
    if bucket is None or value is None:
        return Judgement(SlaState.UNVERIFIED, None, None, "no observation in the window")
    lower, upper = bucket
    if upper <= target_s:
        return Judgement(SlaState.MET, value, bucket, None)
    if lower >= target_s:
        return Judgement(SlaState.MISSED, value, bucket, None)
    return Judgement(
        SlaState.UNVERIFIED,
        value,
        bucket,
        f"the target {target_s:g} s lies inside the bucket ({lower:g}, {upper:g}] s holding "
        "the percentile: the histogram cannot tell which side it is on",
    )
