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
"""

from __future__ import annotations

from models.devices import DeviceClass, DeviceKind, Mode
from models.inference_objectives import ITL_P95_OVER_MEAN, ModeOffer, mode_offers
from models.site import SiteConfig

Offer = list[tuple[Mode, float]]


def _class_offer(
    dc: DeviceClass, itl_p95_s: float, p95_over_mean: float
) -> tuple[Offer, str | None]:
    offers = mode_offers(dc, itl_p95_s, p95_over_mean)
    if offers is None:
        if dc.kind is DeviceKind.GPU:
            return [(m, m.throughput_tokens_s) for m in dc.modes], (
                f"itl_p95_s: class {dc.name} has no latency figures (a catalog GPU and "
                "workload with a measured curve): its modes are counted as stated, not mapped"
            )
        return [(m, m.throughput_tokens_s) for m in dc.modes], None
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
    fastest: ModeOffer = min(offers, key=lambda o: o.floor_itl_p95_s)
    kept.append((fastest.mode, fastest.floor_tokens_s))
    kept.sort(key=lambda mt: [m.name for m in dc.modes].index(mt[0].name))
    return kept, (
        f"itl_p95_s = {itl_p95_s:g} s, class {dc.name}: no mode meets it (the tightest "
        f"it can be counted for is {fastest.floor_itl_p95_s:.3f} s); {fastest.mode.name} "
        f"is offered at its lowest measured load, {fastest.floor_tokens_s:,.0f} tokens/s, "
        "where the objective is expected missed"
    )


def offered_modes(config: SiteConfig) -> tuple[list[Offer], list[str]]:
    """Per device class (in order), the modes offered and the tokens/s counted per unit;
    and the plan's notes on the mapping."""
    inf = config.inference
    notes: list[str] = []
    if inf.ttft_p95_s is not None:
        notes.append(
            "ttft_p95_s: not mapped to modes (no per-mode time-to-first-token figures); "
            "reported from the serving metrics"
        )
    if inf.itl_p95_s is None:
        return [[(m, m.throughput_tokens_s) for m in dc.modes] for dc in config.devices], notes
    ratio = inf.itl_p95_over_mean or ITL_P95_OVER_MEAN
    source = "the site's" if inf.itl_p95_over_mean else "a published vLLM run's"
    notes.append(f"itl_p95_s mapped with p95 = {ratio:.2f} x mean ITL ({source})")
    out = []
    for dc in config.devices:
        offer, note = _class_offer(dc, inf.itl_p95_s, ratio)
        out.append(offer)
        if note is not None:
            notes.append(note)
    return out, notes
