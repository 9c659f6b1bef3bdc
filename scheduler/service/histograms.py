"""The daemon's duration histograms: prometheus-client's own, kept in no registry.

The daemon's counters observe into them as things happen; the metrics collector
(:mod:`scheduler.service.metrics`) yields each under its name at scrape time, beside the
gauges it reads from the daemon's state.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import HistogramMetricFamily

SOLVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FAST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DRAIN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The name of the unregistered histograms; each is exposed under its own (Histogram.family).
_UNNAMED = "gridsched_unnamed_seconds"


class Histogram:
    """prometheus-client's ``Histogram`` with no name of its own: :meth:`family` exposes it
    under the name the collector gives.

    ``buckets`` are the upper bounds in increasing order (``+Inf`` is added); others raise
    ``ValueError``.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self._h = PromHistogram(_UNNAMED, "", buckets=self.buckets, registry=None)

    def observe(self, value: float) -> None:
        self._h.observe(value)

    def _samples(self) -> dict[tuple[str, str | None], float]:
        return {
            (s.name.removeprefix(_UNNAMED), s.labels.get("le")): s.value
            for m in self._h.collect()
            for s in m.samples
        }

    @property
    def count(self) -> int:
        """Observations so far."""
        return int(self._samples()[("_count", None)])

    @property
    def total(self) -> float:
        """Sum of the observations so far."""
        return self._samples()[("_sum", None)]

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        """The histogram as ``name`` (cumulative ``_bucket`` series, ``_count``, ``_sum``);
        no ``_created`` series, as before prometheus-client counted the buckets."""
        samples = self._samples()
        rows = [(le, v) for (suffix, le), v in samples.items() if suffix == "_bucket" and le]
        return HistogramMetricFamily(name, doc, buckets=rows, sum_value=samples[("_sum", None)])
