"""Latency objectives of committed inference mapped to the GPU modes and tokens/s that
meet them.

A serving engine batches every request it runs, so the inter-token latency (ITL) of all
of them is the time of one decode step at that batch size. A larger batch gives more
tokens/s per GPU and a longer step: an ITL objective is a ceiling on the load an engine
may carry. The model here, each figure with its source (docs/hardware.md has the table):

- [M] ML.ENERGY leaderboard v2 (``mlenergy_llm_inference_a100_h100_v2.csv``, task
  ``chat``, vLLM 0.5.4 at default clocks, no cap): for each batch size of the
  configuration the catalog uses (``catalog.GPU_WORKLOADS``), the mean time per output
  token (``avg_tpot_s``) and the output tokens/s of the whole configuration. That is the
  curve of mean ITL against load at full power.
- [V] vLLM pull request #7062 (ShareGPT, 1,000 prompts, 7.79 requests/s): mean TPOT
  218.36 ms and 95th-percentile ITL 456.39 ms in the same run. [M] publishes means only;
  the 95th percentile is taken as the mean times 456.39 / 218.36 = 2.09 (one published
  run, its first of three; the others' p95 ITL, 482.56 and 469.09 ms, are higher still,
  and so is the ratio they would give). An assumption, stated: replace it with the
  fleet's own ratio (``[inference] itl_p95_over_mean``) once the daemon has measured
  ``vllm:inter_token_latency_seconds`` (its status gives the window's p95 and mean).
- A mode that keeps a fraction ``f`` of the full-power throughput (a cap: [E]'s curve
  in ``catalog``/``gpu_modes``; a clock lock: ``gpu_modes.CLOCK_THROUGHPUT_LOSS``) runs
  each decode step ``1/f`` times as long at the same batch: its ITL at a batch is the
  curve's divided by ``f``, its tokens/s the curve's times ``f``.

The tokens/s a mode is counted for under an objective is the highest load on the curve
(linear between measured batch sizes) whose modelled p95 ITL is within it. A mode whose
lowest measured load (batch 32 or 64) already misses it is not offered: the curve says
nothing below that load, and the plan does not claim what no figure shows.

Time to first token is not mapped from these sources: none publishes it, or a prefill
rate, per configuration. A class that declares the fleet's measured prefill rates per mode
is mapped by ``models.inference_ttft``; otherwise a stated ``ttft_p95_s`` is reported
from the serving metrics only, and the plan says so.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

from models import catalog
from models.devices import DeviceClass, DeviceKind, Mode


@dataclass(frozen=True)
class LoadPoint:
    """[M] one batch size of a configuration: mean time per output token and the output
    tokens/s of the whole configuration (all its GPUs)."""

    batch_size: int
    mean_itl_s: float
    tokens_s: float


@dataclass(frozen=True)
class ItlCurve:
    """[M] mean ITL against load for one configuration, batch sizes ascending."""

    gpu_csv: str  # the ``gpu`` column of the ML.ENERGY file
    model_id: str  # its ``model`` column
    num_gpus: int
    points: tuple[LoadPoint, ...]


_A100 = "NVIDIA A100-SXM4-40GB"
_H100 = "NVIDIA H100 80GB HBM3"
_L8 = "meta-llama/Meta-Llama-3.1-8B-Instruct"
_L70 = "meta-llama/Meta-Llama-3.1-70B-Instruct"

#: [M] keyed like ``catalog.GPU_WORKLOADS`` (the same configurations, every batch size).
ITL_CURVES: dict[tuple[str, str], ItlCurve] = {
    ("A100 SXM4", "llama-3.1-8b"): ItlCurve(
        _A100,
        _L8,
        1,
        (
            LoadPoint(32, 0.033822, 938.5),
            LoadPoint(64, 0.050209, 1245.2),
            LoadPoint(128, 0.079266, 1516.8),
            LoadPoint(192, 0.109367, 1597.9),
            LoadPoint(256, 0.127255, 1736.5),
            LoadPoint(320, 0.146181, 1850.3),
        ),
    ),
    ("A100 SXM4", "llama-3.1-70b"): ItlCurve(
        _A100,
        _L70,
        8,
        (
            LoadPoint(32, 0.107346, 296.5),
            LoadPoint(64, 0.119348, 529.7),
            LoadPoint(128, 0.147618, 828.0),
            LoadPoint(192, 0.171815, 1023.4),
            LoadPoint(256, 0.209550, 1073.0),
            LoadPoint(320, 0.241012, 1116.6),
            LoadPoint(512, 0.313465, 1218.4),
            LoadPoint(768, 0.408441, 1229.0),
        ),
    ),
    ("H100 SXM", "llama-3.1-8b"): ItlCurve(
        _H100,
        _L8,
        1,
        (
            LoadPoint(64, 0.035055, 1784.7),
            LoadPoint(128, 0.056651, 2152.5),
            LoadPoint(192, 0.069951, 2474.6),
            LoadPoint(256, 0.097113, 2289.1),
            LoadPoint(320, 0.116086, 2342.6),
            LoadPoint(512, 0.186273, 2022.0),
            LoadPoint(768, 0.231723, 2176.7),
            LoadPoint(1024, 0.278971, 2177.7),
        ),
    ),
    ("H100 SXM", "llama-3.1-70b"): ItlCurve(
        _H100,
        _L70,
        4,
        (
            LoadPoint(64, 0.076770, 811.5),
            LoadPoint(128, 0.100709, 1159.0),
            LoadPoint(192, 0.117724, 1390.8),
            LoadPoint(256, 0.137859, 1463.7),
            LoadPoint(320, 0.150237, 1548.6),
            LoadPoint(512, 0.181040, 1664.6),
            LoadPoint(768, 0.242473, 1680.0),
            LoadPoint(1024, 0.267888, 1923.3),
        ),
    ),
}

#: [V] 95th-percentile ITL over mean TPOT in one published vLLM serving run.
ITL_P95_OVER_MEAN = 456.39 / 218.36


def itl_curve(gpu: catalog.GpuSpec, workload: str) -> ItlCurve | None:
    return ITL_CURVES.get((gpu.model, workload))


def tokens_s_within(curve: ItlCurve, mean_itl_s: float) -> float | None:
    """[M] the most tokens/s per GPU at a mean ITL within ``mean_itl_s``: the best of the
    measured loads within it and of the point where a segment between two measured batch
    sizes crosses it. None when even the lowest measured load is slower."""
    pts = curve.points
    if pts[0].mean_itl_s > mean_itl_s:
        return None
    best = max(p.tokens_s for p in pts if p.mean_itl_s <= mean_itl_s)
    for a, b in itertools.pairwise(pts):
        if a.mean_itl_s <= mean_itl_s < b.mean_itl_s:
            share = (mean_itl_s - a.mean_itl_s) / (b.mean_itl_s - a.mean_itl_s)
            best = max(best, a.tokens_s + share * (b.tokens_s - a.tokens_s))
    return best / curve.num_gpus


@dataclass(frozen=True)
class ModeOffer:
    """One mode of a class under the objectives: the tokens/s per unit the plan counts,
    or None when it is not offered, and why."""

    mode: Mode
    tokens_s: float | None
    #: the modelled p95 ITL at the mode's lowest measured load, and its tokens/s there
    floor_itl_p95_s: float
    floor_tokens_s: float
    reason: str


def lowest_itl_p95_s(
    curve: ItlCurve, fraction: float, p95_over_mean: float = ITL_P95_OVER_MEAN
) -> float:
    """The modelled p95 ITL of a mode keeping ``fraction`` of full throughput at the
    curve's lowest measured load: the tightest objective the mode can be counted for."""
    return curve.points[0].mean_itl_s * p95_over_mean / fraction


def mode_offers(
    dc: DeviceClass, itl_p95_s: float, p95_over_mean: float = ITL_P95_OVER_MEAN
) -> list[ModeOffer] | None:
    """Each serving mode of a catalog GPU class, counted at the load that meets
    ``itl_p95_s``; None when the class has no latency figures (not a catalog GPU serving
    a workload with an [M] curve). ``p95_over_mean``: [V]'s ratio, or the fleet's own
    (``[inference] itl_p95_over_mean``, as the daemon measures it)."""
    if dc.kind is not DeviceKind.GPU or dc.model is None:
        return None
    try:
        gpu = catalog.find_gpu(dc.model)
    except KeyError:
        return None
    workload = dc.workload or "llama-3.1-70b"  # the catalog's default, as in devices
    curve = itl_curve(gpu, workload)
    if curve is None:
        return None
    full = catalog.gpu_full_throughput(gpu, workload)
    out = []
    low = curve.points[0]
    for m in dc.modes:
        if m.throughput_tokens_s <= 0:
            continue
        f = min(m.throughput_tokens_s / full, 1.0)
        floor_s = lowest_itl_p95_s(curve, f, p95_over_mean)
        floor_tok = min(m.throughput_tokens_s, low.tokens_s / curve.num_gpus * f)
        within = tokens_s_within(curve, itl_p95_s / p95_over_mean * f)
        if within is None:
            why = (
                f"{m.name} not offered (p95 ITL {floor_s * 1e3:.0f} ms at its lowest "
                f"measured load, batch {low.batch_size})"
            )
            out.append(ModeOffer(m, None, floor_s, floor_tok, why))
            continue
        tok = min(m.throughput_tokens_s, within * f)
        why = f"{m.name} counted at {tok:,.0f} of {m.throughput_tokens_s:,.0f} tokens/s"
        out.append(ModeOffer(m, tok, floor_s, floor_tok, why))
    return out


Offer = list[tuple[Mode, float]]


def class_offer(
    dc: DeviceClass, itl_p95_s: float | None, p95_over_mean: float | None = None
) -> tuple[Offer, str | None]:
    """The modes of ``dc`` offered under ``itl_p95_s`` (class order), each with the
    tokens/s per unit counted for it, and a note on the mapping (None: nothing to say).
    The one rule the plan, the daemon's fast path and fail-safe posture, and the serving
    hook's capacity all follow, so that what is committed in the plan holds in operation.

    Without an objective every mode is offered as stated. A mode that produces no tokens
    is not constrained. A class with no latency figures is offered as stated (noted). A
    class none of whose modes meets the objective keeps serving: its fastest mode is
    offered at its lowest measured load, where the objective is expected missed
    (sleeping every GPU of the class would harm committed inference more than the
    latency does). ``p95_over_mean``: the site's ratio, or None for [V]'s."""
    stated: Offer = [(m, m.throughput_tokens_s) for m in dc.modes]
    if itl_p95_s is None:
        return stated, None
    offers = mode_offers(dc, itl_p95_s, p95_over_mean or ITL_P95_OVER_MEAN)
    if offers is None:
        if dc.kind is DeviceKind.GPU:
            return stated, (
                f"itl_p95_s: class {dc.name} has no latency figures (a catalog GPU and "
                "workload with a measured curve): its modes are counted as stated, not mapped"
            )
        return stated, None
    serving = {o.mode.name: o for o in offers}
    kept: Offer = []
    for m in dc.modes:
        o = serving.get(m.name)
        if o is None:
            kept.append((m, m.throughput_tokens_s))  # produces no tokens: not constrained
        elif o.tokens_s is not None:
            kept.append((m, o.tokens_s))
    what = "; ".join(o.reason for o in offers)
    if any(o.tokens_s is not None for o in offers) or not offers:
        return kept, f"itl_p95_s = {itl_p95_s:g} s, class {dc.name}: {what}"
    fastest = min(offers, key=lambda o: o.floor_itl_p95_s)
    kept.append((fastest.mode, fastest.floor_tokens_s))
    kept.sort(key=lambda mt: [m.name for m in dc.modes].index(mt[0].name))
    return kept, (
        f"itl_p95_s = {itl_p95_s:g} s, class {dc.name}: no mode meets it (the tightest "
        f"it can be counted for is {fastest.floor_itl_p95_s:.3f} s); {fastest.mode.name} "
        f"is offered at its lowest measured load, {fastest.floor_tokens_s:,.0f} tokens/s, "
        "where the objective is expected missed"
    )


def told_capacity_tokens_s(
    dc: DeviceClass, itl_p95_s: float | None, p95_over_mean: float | None = None
) -> dict[str, float]:
    """What the serving layer is told each mode of ``dc`` serves, per unit: the tokens/s
    counted for it (``class_offer``); a mode not offered, its lowest measured load (the
    least it serves, where the objective is expected missed), so that the router never
    routes more to it than any figure shows meets the objective."""
    counted = {m.name: tok for m, tok in class_offer(dc, itl_p95_s, p95_over_mean)[0]}
    ratio = p95_over_mean or ITL_P95_OVER_MEAN
    for o in (mode_offers(dc, itl_p95_s, ratio) if itl_p95_s is not None else None) or []:
        counted.setdefault(o.mode.name, o.floor_tokens_s)
    return counted


def derive_itl_curve(path: str | Path, curve: ItlCurve) -> list[LoadPoint]:
    """[M] re-read: the chat rows of ``curve``'s configuration, batch sizes ascending."""
    with Path(path).open(newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["task"] == "chat"
            and r["gpu"] == curve.gpu_csv
            and r["model"] == curve.model_id
            and int(r["num_gpus"]) == curve.num_gpus
            and int(r["pipeline_parallel"]) == 1
        ]
    if not rows:
        raise KeyError(f"no chat rows for {curve.model_id} on {curve.gpu_csv} in {path}")
    return sorted(
        (
            LoadPoint(
                int(r["config_batch_size"]),
                float(r["avg_tpot_s"]),
                float(r["token_throughput_tok_per_s"]),
            )
            for r in rows
        ),
        key=lambda p: p.batch_size,
    )
