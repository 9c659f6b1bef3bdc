"""Latency objectives judged from the serving engines' histograms over a window.

vLLM exposes time to first token and inter-token latency as cumulative Prometheus
histograms (``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``,
``vllm:time_per_output_token_seconds`` before the rename; ``adapters.serving`` parses
them). The observations of a window are the latest reading's buckets less those of the
reading at the window's start, per engine, merged bucket by bucket over the engines; the
percentile is read from the merged buckets as PromQL's ``histogram_quantile`` reads them
(``Histogram.quantile``). This is what ``histogram_quantile(0.95, sum by (le)
(rate(..._bucket[5m])))`` computes in a Prometheus.

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


def merge(hists: list[Histogram]) -> Histogram:
    """Several engines' histograms with the same buckets, summed bucket by bucket; an
    engine whose buckets differ from the first's is left out (bucket counts of different
    bounds cannot be added)."""
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
        return WindowHistograms(max(spans), merge(ttft), merge(itl))
