"""Time to first token (TTFT) mapped to GPU modes, from the site's own measured prefill
rates.

TTFT is the wait before a request's prefill starts plus its prefill: at the percentile
of the objective, ``ttft_queue_s + ttft_prompt_tokens / prefill rate of the mode``. The
prefill rate is what a power cap or a clock lock changes: prefill is compute-bound, so
it slows with the SM clock, where decode hardly does (``models.gpu_modes``).

No public figure gives that rate per mode for the catalog's GPUs and workloads, so none
is built in: the ML.ENERGY leaderboard v2 runs (``mlenergy_llm_inference_a100_h100_v2``)
publish the time per output token only, no TTFT and no prompt tokens/s; the A100
power-cap sweep (arXiv 2507.00909, ``emerald_a100_dvfs_power_cap_sweep``) gives an
inference job's throughput relative to its 400 W cap, not a prefill rate; the tabulated
prefill-against-power-limit figures found were for a consumer GPU under another engine.
A site maps ``[inference] ttft_p95_s`` by declaring its own measured rates per mode
(``[[devices]] prefill_tokens_s``, e.g. prompt tokens over vLLM's
``vllm:request_prefill_time_seconds`` with the GPUs held in each mode) and the prompt
length the objective is held for (``ttft_prompt_tokens``, e.g. the fleet's
95th-percentile prompt from ``vllm:request_prompt_tokens``). Without them the objective is
reported as met or missed from the serving metrics, not mapped, and the plan says so.

``ttft_queue_s`` (default 0) is the allowance for the wait: with 0 the check counts the
prefill alone, so it rules out the modes that cannot meet the objective even with no
queue, and claims no more than that.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.devices import DeviceClass, Mode

Offer = list[tuple[Mode, float]]


@dataclass(frozen=True)
class TtftTerms:
    """The objective and the site's figures for it (``[inference]``)."""

    ttft_p95_s: float
    prompt_tokens: float
    queue_s: float = 0.0

    def modelled_s(self, prefill_tokens_s: float) -> float:
        return self.queue_s + self.prompt_tokens / prefill_tokens_s


def ttft_offer(dc: DeviceClass, offer: Offer, terms: TtftTerms | None) -> tuple[Offer, str]:
    """``offer`` (the class's modes offered under the other objectives) less the serving
    modes whose modelled TTFT misses ``terms.ttft_p95_s``, and the plan's note on it.

    A class without measured rates (or a site without ``ttft_prompt_tokens``) keeps its
    offer, noted as not mapped. A mode that produces no tokens is not constrained. A
    class none of whose offered modes meets the objective keeps serving in the one with
    the quickest prefill, where the objective is expected missed (as for ITL: sleeping
    every GPU of the class would harm committed inference more than the latency does)."""
    rates = dc.prefill_tokens_s
    if terms is None or not rates:
        return offer, (
            f"ttft_p95_s: not mapped to modes for class {dc.name} (no public per-mode "
            "prefill figures; declare the fleet's measured prefill_tokens_s to map it); "
            "reported from the serving metrics"
        )
    kept: Offer = []
    said: list[str] = []
    serving: list[tuple[float, Mode, float]] = []
    for m, tok in offer:
        if m.throughput_tokens_s <= 0 or m.name not in rates:
            kept.append((m, tok))
            continue
        ttft_s = terms.modelled_s(rates[m.name])
        serving.append((ttft_s, m, tok))
        meets = ttft_s <= terms.ttft_p95_s
        if meets:
            kept.append((m, tok))
        said.append(
            f"{m.name} {'offered' if meets else 'not offered'} (modelled TTFT {ttft_s:.3f} s "
            f"at {rates[m.name]:,.0f} prompt tokens/s)"
        )
    head = (
        f"ttft_p95_s = {terms.ttft_p95_s:g} s, class {dc.name}: "
        f"{terms.queue_s:g} s queue + {terms.prompt_tokens:g} prompt tokens at the site's "
        "measured prefill rates"
    )
    if not serving or any(t <= terms.ttft_p95_s for t, _m, _tok in serving):
        return kept, f"{head}; " + "; ".join(said)
    quickest_s, quickest, tok = min(serving, key=lambda s: s[0])
    names = [m.name for m in dc.modes]
    kept.append((quickest, tok))
    kept.sort(key=lambda mt: names.index(mt[0].name))
    return kept, (
        f"{head}; no mode meets it (the quickest, {quickest.name}, is modelled at "
        f"{quickest_s:.3f} s): {quickest.name} serves, where the objective is expected missed"
    )
