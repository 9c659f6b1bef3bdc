"""The site file's ``[inference]``: committed, spot and batch demand, latency objectives, and
where the serving engines' demand is read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from models.config_base import NonNeg, Pos, Strict


class BatchJob(Strict):
    """Deferrable inference: ``tokens`` must be served between release and deadline."""

    name: Annotated[str, Field(min_length=1)]
    tokens: Pos
    release: datetime | None = None
    deadline: datetime
    usd_per_mtok: NonNeg = 0.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("release", "deadline"):
            v = getattr(self, name)
            if v is not None and v.tzinfo is None:
                raise ValueError(f"{name} {v.isoformat()} has no UTC offset")
        if self.release is not None and self.deadline <= self.release:
            raise ValueError("deadline must be after release")
        return self


#: the PromQL keys, each only with engine = "promql"
_QUERIES = ("query", "ttft_p95_query", "itl_p95_query")
Query = Annotated[str, Field(min_length=1)]


class InferenceDemand(Strict):
    """Inference demand read from the serving stack (docs/daemon.md): the engines' own
    metrics pages (``engine = "vllm"`` or ``"tgi"``, ``urls`` the pages, summed), or a
    PromQL query against an existing Prometheus (``engine = "promql"``, ``urls`` its one
    base URL, ``query`` the demand in tokens/s, ``ttft_p95_query`` / ``itl_p95_query`` the
    latency objectives' 95th percentiles in seconds)."""

    engine: Literal["promql", "vllm", "tgi"] = "vllm"
    #: the engines' metrics pages (``http://host:8000/metrics``); their demand is summed.
    #: engine = "promql": the one Prometheus base URL (``http://prometheus:9090``)
    urls: Annotated[tuple[Annotated[str, Field(pattern=r"^https?://")], ...], Field(min_length=1)]
    #: engine = "promql": PromQL whose value is the demand now, tokens/s (a vector: summed)
    query: Query | None = None
    #: engine = "promql": PromQL giving the 95th-percentile time to first token, seconds
    ttft_p95_query: Query | None = None
    #: engine = "promql": PromQL giving the 95th-percentile inter-token latency, seconds
    itl_p95_query: Query | None = None
    poll_s: Annotated[float, Field(ge=1, le=3600)] = 15.0
    #: a measured demand this far (relative) from what the plan assumed re-plans
    replan_threshold: Annotated[float, Field(gt=0, le=10)] = 0.2
    #: the latency objectives' percentiles are over this window's observations (at least
    #: one poll), like ``histogram_quantile`` over ``rate(...[5m])`` in a Prometheus
    objective_window_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    #: how fast a surge or lull seen now fades back to the hourly profile in the forecast
    tau_h: Pos = 1.0
    #: the time in which a queue of waiting requests should be served (backlog demand)
    backlog_s: Pos = 60.0
    #: longest wait for a GPU's in-flight requests to finish before its power goes down
    drain_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    #: a reading older than this is not used: the site file's figures are (default 4 polls)
    stale_s: Pos | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: device id -> the metrics page of the engine on that GPU, read for its drain
    gpu_engines: dict[str, Annotated[str, Field(pattern=r"^https?://")]] = Field(
        default_factory=dict
    )
    #: the kind of the gpu_engines pages (default: engine; required with engine = "promql")
    drain_engine: Literal["vllm", "tgi"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        queries = [k for k in _QUERIES if getattr(self, k) is not None]
        if self.engine != "promql":
            if queries:
                raise ValueError(
                    f"{', '.join(queries)}: only with engine = 'promql' (engine = "
                    f"'{self.engine}' reads the metrics pages in urls)"
                )
            if self.drain_engine not in (None, self.engine):
                raise ValueError(
                    f"drain_engine = '{self.drain_engine}' differs from engine = "
                    f"'{self.engine}' (leave it out: the gpu_engines pages are the engine's)"
                )
            return self
        if len(self.urls) != 1:
            raise ValueError(
                f"urls: engine = 'promql' takes one Prometheus base URL "
                f"(e.g. http://prometheus:9090), got {len(self.urls)}"
            )
        path = self.urls[0].split("://", 1)[1].partition("/")[2].rstrip("/")
        if path.endswith("metrics") or "api/v1" in path:
            raise ValueError(
                f"urls: {self.urls[0]} is not a Prometheus base URL (e.g. "
                "http://prometheus:9090; /api/v1/query is added to it)"
            )
        if self.query is None:
            raise ValueError(
                "query: required with engine = 'promql' (PromQL whose value is the demand "
                "in tokens/s now, e.g. sum(rate(vllm:generation_tokens_total[1m])))"
            )
        if self.gpu_engines and self.drain_engine is None:
            raise ValueError(
                "drain_engine: required with engine = 'promql' and gpu_engines ('vllm' or "
                "'tgi': the kind of the engines' metrics pages read for a drain)"
            )
        return self


class Inference(Strict):
    committed_tokens_s: NonNeg = 0.0
    committed_usd_per_mtok: NonNeg = 0.0
    spot_tokens_s: NonNeg = 0.0
    spot_usd_per_mtok: NonNeg = 0.0
    hourly_profile: tuple[NonNeg, ...] | None = None
    batch: tuple[BatchJob, ...] = ()
    #: latency objectives of committed inference (95th percentile, seconds): reported as
    #: met / missed / unverified from the serving metrics, not planned for
    ttft_p95_s: Pos | None = None
    itl_p95_s: Pos | None = None
    #: 95th-percentile over mean inter-token latency, for mapping itl_p95_s to GPU modes
    #: (none: 2.09 from a published vLLM run; the daemon's status reports the fleet's own)
    itl_p95_over_mean: Annotated[float, Field(ge=1, le=100)] | None = None
    #: ttft_p95_s mapped to modes where classes declare prefill_tokens_s
    #: (models/inference_ttft.py): the prompt length the objective is held for (tokens,
    #: e.g. the fleet's 95th-percentile prompt) and the allowance for the wait before
    #: prefill starts (s; 0 counts the prefill alone)
    ttft_prompt_tokens: Pos | None = None
    ttft_queue_s: NonNeg = 0.0
    demand: InferenceDemand | None = None

    @field_validator("hourly_profile")
    @classmethod
    def _profile(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and len(v) != 24:
            raise ValueError(f"hourly_profile needs 24 values (local hours 0-23), got {len(v)}")
        return v

    @model_validator(mode="after")
    def _objective_queries(self) -> Self:
        """A percentile query without its objective would be read and compared with
        nothing: a misplaced key, named."""
        for target in ("ttft_p95_s", "itl_p95_s"):
            key = target.removesuffix("_s") + "_query"
            demand = self.demand
            if (
                demand is not None
                and getattr(demand, key) is not None
                and getattr(self, target) is None
            ):
                raise ValueError(
                    f"demand.{key} is set but {target} is not (the objective its "
                    "value is compared with)"
                )
        return self
