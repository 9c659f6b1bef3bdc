"""Inference serving engines read through their own Prometheus metrics (vLLM, TGI).

The serving stack already measures what the plan needs to know about inference demand:
how many requests run and wait, how many tokens it generated, and how long users waited
for the first token and between tokens. This module reads one engine's ``/metrics`` page
and returns a typed :class:`ServingSample`; ``scheduler.service.demand`` turns successive
samples into tokens/s demand and latency percentiles.

Metric names and types, by engine (the engines' own documentation):

- vLLM (docs.vllm.ai, "Production Metrics"; labelled by ``model_name``):
  ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (gauges),
  ``vllm:generation_tokens_total`` and ``vllm:prompt_tokens_total`` (counters),
  ``vllm:time_to_first_token_seconds`` and ``vllm:inter_token_latency_seconds``
  (histograms; releases before the rename expose the latter as
  ``vllm:time_per_output_token_seconds``, some both), ``vllm:request_generation_tokens``
  (histogram of output tokens per finished request).
- TGI (huggingface.co/docs/text-generation-inference, "Metrics"): ``tgi_queue_size`` and
  ``tgi_batch_current_size`` (gauges), ``tgi_request_generated_tokens`` (histogram of output
  tokens per request: its ``_sum`` counts every generated token),
  ``tgi_request_mean_time_per_token_duration`` (histogram, seconds). TGI has no
  time-to-first-token histogram; its queue time (``tgi_request_queue_duration``) is the
  closest measure and is reported as such.

Series of several models or label sets are summed (gauges, counters) or merged bucket by
bucket (histograms). A page that lacks a required metric is a ``BadReply`` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import BadReply, DeviceTimeout, DeviceUnreachable
from adapters.neterrors import describe

ENGINES = ("vllm", "tgi")


@dataclass(frozen=True)
class Histogram:
    """A cumulative Prometheus histogram: counts at or below each upper bound (``le``)."""

    bounds: tuple[float, ...] = ()  # ascending, the last +inf
    counts: tuple[float, ...] = ()
    total: float = 0.0  # the _sum
    count: float = 0.0  # the _count

    def minus(self, earlier: Histogram) -> Histogram:
        """Observations between ``earlier`` and this one (same buckets); after a restart
        of the engine (a count that went down) this one alone."""
        if earlier.bounds != self.bounds or self.count < earlier.count:
            return self
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)),
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile by linear interpolation inside its bucket, as PromQL's
        ``histogram_quantile`` does; None without observations. A quantile that falls in
        the +Inf bucket is the highest finite bound (the histogram cannot say more)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside 0-1")
        if not self.counts or self.counts[-1] <= 0:
            return None
        rank = q * self.counts[-1]
        lower_bound, lower_count = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.counts, strict=True):
            if cum >= rank:
                if math.isinf(bound):
                    return lower_bound
                if cum == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                    cum - lower_count
                )
            lower_bound, lower_count = bound, cum
        return lower_bound

    def quantile_bucket(self, q: float) -> tuple[float, float] | None:
        """The bucket ``(lower, upper]`` the q-quantile lies in: fewer than a share q of
        the observations are at or below ``lower`` and at least q at or below ``upper``,
        so the true quantile is above ``lower`` and at most ``upper`` (the first bucket's
        lower bound is 0, the last's upper +inf). None without observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside 0-1")
        if not self.counts or self.counts[-1] <= 0:
            return None
        rank = q * self.counts[-1]
        lower = 0.0
        for bound, cum in zip(self.bounds, self.counts, strict=True):
            if cum >= rank:
                return lower, bound
            lower = bound
        return lower, math.inf


@dataclass(frozen=True)
class ServingSample:
    """One reading of an engine's metrics page."""

    engine: str
    at_s: float  # monotonic seconds when it was read
    running: float  # requests being generated now (vLLM running, TGI batch size)
    waiting: float  # requests queued
    generated_tokens: float  # cumulative output tokens
    ttft_s: Histogram = field(default_factory=Histogram)  # TGI: queue time, see module doc
    itl_s: Histogram = field(default_factory=Histogram)  # time between output tokens
    output_tokens_per_request: Histogram = field(default_factory=Histogram)


def _families(text: str, what: str) -> dict[str, Any]:
    try:
        return {f.name: f for f in text_string_to_metric_families(text)}
    except (ValueError, TypeError, IndexError) as exc:
        raise BadReply(what, f"not a Prometheus text exposition: {exc}") from None


def _scalar(fams: dict[str, Any], name: str, what: str, required: bool = True) -> float:
    """Sum of a gauge's or counter's samples over label sets. The parser names a counter's
    family without ``_total`` and its samples with it, so both spellings are looked up."""
    fam = fams.get(name) or fams.get(name.removesuffix("_total"))
    if fam is None:
        if required:
            raise BadReply(what, f"metric {name} missing from the page")
        return 0.0
    values = [s.value for s in fam.samples if s.name in (name, f"{fam.name}_total", fam.name)]
    return float(sum(values))


def _histogram(fams: dict[str, Any], names: Iterable[str]) -> Histogram:
    """The first of ``names`` present, its label sets merged bucket by bucket."""
    for name in names:
        fam = fams.get(name)
        if fam is None:
            continue
        buckets: dict[float, float] = {}
        total = count = 0.0
        for s in fam.samples:
            if s.name == f"{name}_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + float(s.value)
            elif s.name == f"{name}_sum":
                total += float(s.value)
            elif s.name == f"{name}_count":
                count += float(s.value)
        bounds = tuple(sorted(buckets))
        return Histogram(bounds, tuple(buckets[b] for b in bounds), total, count)
    return Histogram()


def parse_metrics(engine: str, text: str, at_s: float, what: str = "serving") -> ServingSample:
    """A sample from an engine's ``/metrics`` text; BadReply naming what is missing."""
    fams = _families(text, what)
    if engine == "vllm":
        return ServingSample(
            engine,
            at_s,
            running=_scalar(fams, "vllm:num_requests_running", what),
            waiting=_scalar(fams, "vllm:num_requests_waiting", what),
            generated_tokens=_scalar(fams, "vllm:generation_tokens_total", what),
            ttft_s=_histogram(fams, ["vllm:time_to_first_token_seconds"]),
            itl_s=_histogram(
                fams, ["vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"]
            ),
            output_tokens_per_request=_histogram(fams, ["vllm:request_generation_tokens"]),
        )
    if engine == "tgi":
        tokens = _histogram(fams, ["tgi_request_generated_tokens"])
        if "tgi_request_generated_tokens" not in fams:
            raise BadReply(what, "metric tgi_request_generated_tokens missing from the page")
        return ServingSample(
            engine,
            at_s,
            running=_scalar(fams, "tgi_batch_current_size", what),
            waiting=_scalar(fams, "tgi_queue_size", what),
            generated_tokens=tokens.total,
            ttft_s=_histogram(fams, ["tgi_request_queue_duration"]),
            itl_s=_histogram(fams, ["tgi_request_mean_time_per_token_duration"]),
            output_tokens_per_request=tokens,
        )
    raise ValueError(f"unknown serving engine {engine!r}: {' or '.join(ENGINES)}")


@dataclass
class ServingEndpoint:
    """One engine's metrics page over HTTP."""

    engine: str
    url: str
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown serving engine {self.engine!r}: {' or '.join(ENGINES)}")

    async def read(self, client: httpx.AsyncClient, at_s: float) -> ServingSample:
        try:
            r = await client.get(self.url, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise DeviceTimeout(self.url, f"no answer in {self.timeout_s} s") from None
        except httpx.HTTPError as exc:
            raise DeviceUnreachable(self.url, describe(exc)) from None
        if r.status_code != 200:
            raise BadReply(self.url, f"HTTP {r.status_code} from the metrics page")
        return parse_metrics(self.engine, r.text, at_s, self.url)
