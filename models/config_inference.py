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


class InferenceDemand(Strict):
    """Inference demand read from the serving engines' own metrics pages (docs/daemon.md)."""

    engine: Literal["vllm", "tgi"] = "vllm"
    #: the engines' metrics pages (``http://host:8000/metrics``); their demand is summed
    urls: Annotated[tuple[Annotated[str, Field(pattern=r"^https?://")], ...], Field(min_length=1)]
    poll_s: Annotated[float, Field(ge=1, le=3600)] = 15.0
    #: a measured demand this far (relative) from what the plan assumed re-plans
    replan_threshold: Annotated[float, Field(gt=0, le=10)] = 0.2
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
    demand: InferenceDemand | None = None

    @field_validator("hourly_profile")
    @classmethod
    def _profile(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and len(v) != 24:
            raise ValueError(f"hourly_profile needs 24 values (local hours 0-23), got {len(v)}")
        return v
