"""The modes the plan offers each class, and the tokens/s it counts for them, under the
committed inference's latency objectives (``models.inference_objectives``).

Without ``[inference] itl_p95_s`` every mode is offered at its stated tokens/s. With it,
each serving mode of a catalog GPU class is counted at the load whose modelled 95th
percentile ITL meets the objective, and a mode that misses it even at its lowest
measured load is not offered. An engine batches all its requests together, so the
objective bounds the load of every engine in the class, spot and batch work included:
the lowered tokens/s is the mode's for every use, not for committed tokens alone.

A class none of whose modes meets the objective keeps serving: its fastest mode is
offered at its lowest measured load, and a note says the objective is expected missed
there (sleeping every GPU of the class would harm committed inference more than the
latency does). A class without latency figures (custom modes, or a workload with no
measured curve) is offered as stated, and a note says its modes are not mapped.

With ``[inference] ttft_p95_s``, a class that declares its measured prefill rates
(``prefill_tokens_s``) is offered only the modes whose modelled time to first token meets
it (``models.inference_ttft``); one without them is reported from the serving metrics,
not mapped (no public per-mode prefill figures), and a note says so.

The rule per class is ``models.inference_objectives.class_offer`` then
``models.inference_ttft.ttft_offer``: the daemon's fast path and fail-safe posture
(``DeviceModes.offered``, built here) follow the same one, and the adapters' serving hook
the ITL part of it (TTFT bounds no tokens/s).
"""

from __future__ import annotations

from models.devices import DeviceClass
from models.inference_objectives import ITL_P95_OVER_MEAN, Offer, class_offer
from models.inference_ttft import TtftTerms, ttft_offer
from models.site import SiteConfig

__all__ = ["Offer", "offered_modes"]


def offered_modes(config: SiteConfig) -> tuple[list[Offer], list[str]]:
    """Per device class (in order), the modes offered and the tokens/s counted per unit;
    and the plan's notes on the mapping."""
    inf = config.inference
    notes: list[str] = []
    ratio = inf.itl_p95_over_mean or ITL_P95_OVER_MEAN
    if inf.itl_p95_s is not None:
        source = "the site's" if inf.itl_p95_over_mean else "a published vLLM run's"
        notes.append(f"itl_p95_s mapped with p95 = {ratio:.2f} x mean ITL ({source})")
    terms = None
    if inf.ttft_p95_s is not None and inf.ttft_prompt_tokens is not None:
        terms = TtftTerms(inf.ttft_p95_s, inf.ttft_prompt_tokens, inf.ttft_queue_s)
    out = []
    for dc in config.devices:
        offer, note = class_offer(dc, inf.itl_p95_s, ratio)
        if note is not None:
            notes.append(note)
        if inf.ttft_p95_s is not None and (dc.prefill_tokens_s or _serves(dc)):
            offer, note = ttft_offer(dc, offer, terms)
            notes.append(note)
        out.append(offer)
    return out, notes


def _serves(dc: DeviceClass) -> bool:
    return any(m.throughput_tokens_s > 0 for m in dc.modes)
