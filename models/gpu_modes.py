"""GPU inference modes by power cap and by SM clock, for prefill-heavy and decode-heavy work.

LLM serving has two phases that draw power differently. Prefill (the prompt) is
compute-bound: it draws close to whatever cap is set, so a cap trades throughput for power.
Decode (token by token) is memory-bound: it draws well below the power limit, so a cap above
that draw never binds, and a lower SM clock is what saves energy. Every figure below names
its source; ``derive_*`` re-computes the ones taken from ../shared/data so a test can check
them (``tests/test_gpu_modes.py``), and docs/hardware.md has the table and the command.

Sources:

- [E] Emerald AI field demonstration, arXiv 2507.00909, the A100 power-cap sweep
  (``emerald_a100_dvfs_power_cap_sweep.csv``, workload ``infer_llama_8b``): throughput
  kept and power per GPU measured at caps of 100-400 W. That workload draws 92-98 % of
  every cap, as compute-bound work does, so it is the prefill-heavy profile here.
- [M] ML.ENERGY leaderboard v2 (``mlenergy_llm_inference_a100_h100_v2.csv``, task
  ``chat``, vLLM at default clocks, no cap set): the steady-state GPU power of the
  configuration whose throughput the catalog uses (``catalog.GPU_WORKLOADS``). Chat on
  ShareGPT is decode-dominated; the H100 draws 294-297 W of its 700 W there, inside the
  137-300 W that [P] measured for H200 decode.
- [P] Ma, Afzal, Eitzinger, Wellein, "The Illusion of Power Capping in LLM Decode",
  arXiv 2605.11999 (H200): decode draws 137-300 W of 700 W, no cap triggers, and SM clock
  locking recovers "up to 32 %" of decode energy "at minimal throughput loss".
- [L] Maliakel, Ilager, Brandic, arXiv 2501.08219: decode is 77-91 % of inference time and
  largely insensitive to GPU frequency; a lower clock cost 1-6 % latency.

Values taken where only a range or a bound is published, and why:

- Energy saved per decode token by the clock lock: 32 %, the one figure [P] gives (its
  best case). It is an upper bound, so the energy a backtest reports as saved by clock
  modes is an upper bound too; replace the mode with measured figures
  (``[[devices.modes]]``, ``sm_clock_mhz``) once a fleet is profiled.
- Throughput lost to the clock lock: 6 %, the high end of [L]'s 1-6 % ([P] gives no
  number): committed inference must not be planned on tokens a GPU may not deliver.
- The clock range to lock: not published for these parts ([P] does not give the clock its
  32 % came from in the abstract we could read), so the site names it
  (``decode_clock_mhz``); the catalog does not invent one.
- A cap below the decode draw: no published sweep has a cap binding in decode. It is
  taken like a cap on compute-bound work at the same share of its own draw ([E]'s curve
  keyed by cap / draw): an assumption, said here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from models import catalog

Phase = Literal["prefill", "decode"]
PHASES: tuple[str, ...] = ("prefill", "decode")

#: [E] (cap / TDP, measured power per GPU / cap), workload infer_llama_8b on A100 400 W.
PREFILL_CAP_DRAW: tuple[tuple[float, float], ...] = (
    (0.25, 0.9794),
    (0.50, 0.9734),
    (0.625, 0.9672),
    (0.75, 0.9632),
    (0.875, 0.9512),
    (1.00, 0.9209),
)


@dataclass(frozen=True)
class DecodePoint:
    """[M] one measured configuration: steady-state power per GPU with no cap set."""

    gpu_csv: str  # the ``gpu`` column of the ML.ENERGY file
    model_id: str  # its ``model`` column
    tensor_parallel: int
    batch_size: int
    power_w_per_gpu: float


#: [M] keyed like ``catalog.GPU_WORKLOADS`` (the same configurations).
DECODE_DRAW: dict[tuple[str, str], DecodePoint] = {
    ("A100 SXM4", "llama-3.1-8b"): DecodePoint(
        "NVIDIA A100-SXM4-40GB", "meta-llama/Meta-Llama-3.1-8B-Instruct", 1, 320, 195.23
    ),
    ("A100 SXM4", "llama-3.1-70b"): DecodePoint(
        "NVIDIA A100-SXM4-40GB", "meta-llama/Meta-Llama-3.1-70B-Instruct", 8, 768, 147.78
    ),
    ("H100 SXM", "llama-3.1-8b"): DecodePoint(
        "NVIDIA H100 80GB HBM3", "meta-llama/Meta-Llama-3.1-8B-Instruct", 1, 192, 294.00
    ),
    ("H100 SXM", "llama-3.1-70b"): DecodePoint(
        "NVIDIA H100 80GB HBM3", "meta-llama/Meta-Llama-3.1-70B-Instruct", 4, 1024, 297.25
    ),
}

#: [P] energy per decode token saved by locking the SM clock (its "up to" figure).
CLOCK_ENERGY_SAVING = 0.32
#: [L] throughput lost with the clock lowered (the high end of 1-6 %).
CLOCK_THROUGHPUT_LOSS = 0.06


@dataclass(frozen=True)
class GpuModeFigure:
    """One catalog mode of a GPU, per unit, before host overhead."""

    name: str
    control: Literal["cap", "clock"]
    #: the power the plan budgets: the measured draw, or the cap where the cap binds
    draw_w: float
    #: the NVML power limit the adapter sets (the cap; for a clock mode a bound above its draw)
    limit_w: float
    throughput_tokens_s: float
    sm_clock_mhz: tuple[int, int] | None
    source: str


def _interp(table: tuple[tuple[float, float], ...], x: float) -> float:
    xs = np.array([p[0] for p in table])
    ys = np.array([p[1] for p in table])
    return float(np.interp(min(x, 1.0), xs, ys))


def decode_draw_w(gpu: catalog.GpuSpec, workload: str) -> float:
    try:
        return DECODE_DRAW[(gpu.model, workload)].power_w_per_gpu
    except KeyError:
        known = ", ".join(sorted(w for (g, w) in DECODE_DRAW if g == gpu.model))
        raise KeyError(
            f"no measured decode power for {workload!r} on {gpu.model}; known: {known}"
        ) from None


def gpu_mode_figures(
    gpu: catalog.GpuSpec,
    workload: str,
    phase: Phase,
    caps_w: tuple[float, ...],
    clock_mhz: tuple[int, int] | None = None,
) -> list[GpuModeFigure]:
    """The modes of one GPU serving ``workload`` in ``phase``: one per cap, and with
    ``clock_mhz`` (decode only) one clock-locked mode. Caps that give the same figures as
    a lower cap (decode never reaching them) are folded into that lower cap."""
    full = catalog.gpu_full_throughput(gpu, workload)
    out: list[GpuModeFigure] = []
    if phase == "prefill":
        if clock_mhz is not None:
            raise ValueError(
                "decode_clock_mhz: no published clock figures for prefill-heavy work "
                "(compute-bound: a lower clock costs throughput about in proportion)"
            )
        for cap in sorted(caps_w, reverse=True):
            frac = catalog.cap_throughput_fraction(cap, gpu.tdp_w)
            draw = cap * _interp(PREFILL_CAP_DRAW, cap / gpu.tdp_w)
            out.append(GpuModeFigure(f"infer@{cap:g}W", "cap", draw, cap, full * frac, None, "[E]"))
        return out
    draw_full = decode_draw_w(gpu, workload)
    for cap in sorted(caps_w):
        if cap >= draw_full:
            if any(m.draw_w == draw_full for m in out):
                continue  # a higher cap decode never reaches: same figures as the lower one
            out.append(
                GpuModeFigure(f"infer@{cap:g}W", "cap", draw_full, cap, full, None, "[M][P]")
            )
        else:
            frac = _interp(catalog.GPU_CAP_CURVE, cap / draw_full)
            out.append(
                GpuModeFigure(
                    f"infer@{cap:g}W", "cap", cap, cap, full * frac, None, "[E] by cap/draw"
                )
            )
    if clock_mhz is not None:
        keep = 1.0 - CLOCK_THROUGHPUT_LOSS
        draw = draw_full * (1.0 - CLOCK_ENERGY_SAVING) * keep  # energy/token x tokens/s
        bound = min((c for c in caps_w if c >= draw_full), default=gpu.tdp_w)
        out.append(
            GpuModeFigure(
                f"infer@{clock_mhz[1]}MHz",
                "clock",
                draw,
                bound,
                full * keep,
                clock_mhz,
                "[M][P][L]",
            )
        )
    return out


def derive_decode_draw_w(path: str | Path, point: DecodePoint) -> float:
    """[M] re-derived: ``derived_avg_power_w_per_gpu`` of the chat row of ``point``,
    recomputed from the published columns (energy per request x throughput / output
    tokens / GPUs)."""
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            if (
                r["task"] == "chat"
                and r["gpu"] == point.gpu_csv
                and r["model"] == point.model_id
                and int(r["tensor_parallel"]) == point.tensor_parallel
                and int(r["config_batch_size"]) == point.batch_size
            ):
                energy_j = float(r["energy_per_request_j"])
                tok_s = float(r["token_throughput_tok_per_s"])
                out_tok = float(r["avg_output_tokens"])
                return energy_j * tok_s / out_tok / int(r["num_gpus"])
    raise KeyError(f"no chat row for {point} in {path}")


def derive_prefill_cap_draw(
    path: str | Path, workload: str = "infer_llama_8b"
) -> list[tuple[float, float]]:
    """[E] re-derived: (cap / 400 W, measured power per GPU / cap) of one workload."""
    with Path(path).open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Workload"] == workload]
    caps = [float(r["GPU power cap"]) for r in rows]
    tdp = max(caps)
    return [(c / tdp, float(r["power per GPU"]) / c) for c, r in zip(caps, rows, strict=True)]
