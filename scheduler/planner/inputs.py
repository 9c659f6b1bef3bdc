"""Everything the optimiser needs, as arrays over (class-mode, step).

``assemble_inputs`` turns a validated site, a price series, grid events and the measured
state into ``PlanInputs``: the one object the pure model builder reads. It is the only
place where local time (tariff windows, hourly profiles) and calendar logic live.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.economics import site_load_kw
from models.errors import ConfigError
from models.market import Series, load_csv_series, solar_profile_kw
from models.signals import GridEvent, resolve_cancels
from models.site import Penalties, SiteConfig
from scheduler.planner.class_caps import class_cap_series
from scheduler.planner.dwell import held_off, held_on
from scheduler.planner.event_caps import event_caps, overlap
from scheduler.planner.objectives import Offer, offered_modes
from scheduler.planner.timegrid import TimeGrid


@dataclass(frozen=True)
class SiteState:
    """What telemetry says now; ``None`` falls back to the config."""

    current_load_kw: float | None = None
    units_on: dict[str, int] | None = None
    #: the peak import already billed in the month the plan starts in (a later month in
    #: the horizon starts at 0)
    billing_peak_kw: float | None = None
    #: class -> when each of its units now asleep was put to sleep (unix s): a unit stopped
    #: less than the class's ``min_off_s`` before a step may not start in it
    asleep_since: dict[str, list[float]] | None = None
    #: class -> when each of its units now awake was woken (unix s): a unit woken less
    #: than the class's ``min_on_s`` before a step runs in it, unless a grid cap stops it
    awake_since: dict[str, list[float]] | None = None
    #: when the plan is made (unix s): its first step, begun before, counts from here
    now_s: float | None = None


@dataclass(frozen=True)
class PeakGroup:
    """Steps whose maximum import is billed per kW (a billing month, a 4CP window)."""

    name: str
    kind: str  # "demand-charge" | "coincident-peak"
    usd_per_kw: float
    floor_kw: float
    steps: np.ndarray  # int step indices
    slot: int = -1  # with PlanInputs.peak_slots: the peak variable this group uses


@dataclass(frozen=True)
class BatchWindow:
    name: str
    tokens: float  # tokens due within this horizon
    usd_per_mtok: float
    steps: np.ndarray
    deadline_s: int


@dataclass
class PlanInputs:
    grid: TimeGrid
    class_names: list[str]
    class_kind: list[str]
    units: np.ndarray  # (C,)
    idle_kw: np.ndarray  # (C,)
    start_cost_usd: np.ndarray  # (C,)
    min_on_s: np.ndarray  # (C,)
    min_off_s: np.ndarray  # (C,)
    initial_on: np.ndarray  # (C,), -1 when unknown
    # flat (class, mode) pairs
    cm_class: np.ndarray  # (K,)
    mode_names: list[str]
    power_kw: np.ndarray  # (K,)
    hashrate_ths: np.ndarray  # (K,)
    tput_tok_s: np.ndarray  # (K,)
    # series over steps (T,)
    price_usd_per_mwh: np.ndarray
    hashprice: np.ndarray  # USD per TH/s per day, net of pool fee
    base_load_kw: np.ndarray
    onsite_kw: np.ndarray
    cap_kw: np.ndarray  # min(interconnect, DR cap)
    dr_cap_kw: np.ndarray  # inf where no event
    committed_tok_s: np.ndarray
    spot_tok_s: np.ndarray
    ramp_up_kw: np.ndarray | None
    ramp_down_kw: np.ndarray | None
    # scalars
    interconnect_kw: float
    pue: float
    onsite_usd_per_mwh: float
    committed_usd_per_mtok: float
    spot_usd_per_mtok: float = 0.0
    dr_payment_usd_per_mwh: float = 0.0
    dr_baseline_kw: float = 0.0
    initial_import_kw: float | None = None
    peaks: list[PeakGroup] = field(default_factory=list)
    batches: list[BatchWindow] = field(default_factory=list)
    penalties: Penalties = field(default_factory=Penalties)
    price_label: str = ""
    price_synthetic: bool = False
    events: list[GridEvent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: None: one row per (group, member step). An int S: S peak variables with a row for
    #: every (slot, step) whose bound switches membership, so that the matrix stays the
    #: same while a rolling horizon moves across billing months and windows.
    peak_slots: int | None = None
    #: caps on part of the site (``scheduler.planner.class_caps``): the class indices of
    #: each capped group, and its cap per step, (G, T) kW at the meter, inf where none
    class_cap_groups: list[tuple[int, ...]] = field(default_factory=list)
    #: (C, T) units of each class that must stay asleep in each step: stopped before the
    #: horizon less than ``min_off_s`` before the step starts (None: none known)
    held_off: np.ndarray | None = None
    #: (C, T) units of each class that should stay awake in each step: woken before the
    #: horizon less than ``min_on_s`` before the step starts (a soft floor; None: none)
    held_on: np.ndarray | None = None
    class_cap_kw: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: (K,) the most units of each class-mode's class that can reach the mode (a stock-
    #: firmware miner reaches only its own setting; a GPU refused clock locks, no clock
    #: mode). None: every unit reaches every mode of its class (the backtest, a plan).
    mode_units_max: np.ndarray | None = None

    @property
    def mode_units_cap(self) -> np.ndarray:
        """(K,) units each class-mode may hold: the class's units, less where fewer reach
        the mode (``mode_units_max``)."""
        units = self.units[self.cm_class]
        if self.mode_units_max is None:
            return units
        bound = np.asarray(self.mode_units_max, dtype=np.float64)
        if bound.shape != units.shape or not (bound >= 0).all():
            raise ValueError(
                f"mode_units_max needs {self.K} non-negative unit counts (one per class-mode), "
                f"got {bound.tolist()}"
            )
        return np.minimum(units, np.floor(bound))

    @property
    def T(self) -> int:
        return self.grid.n

    @property
    def C(self) -> int:
        return len(self.class_names)

    @property
    def K(self) -> int:
        return len(self.cm_class)

    @property
    def marginal_kw(self) -> np.ndarray:
        """Meter kW added by waking one unit of each class-mode (above its idle power)."""
        return site_load_kw(self.power_kw - self.idle_kw[self.cm_class], self.pue, 0.0)

    @property
    def fixed_kw(self) -> np.ndarray:
        """Meter kW per step with every unit in service idle: idle power and base load."""
        idle = np.full_like(self.base_load_kw, float(self.idle_kw @ self.units))
        return site_load_kw(idle, self.pue, self.base_load_kw)


def _local(grid: TimeGrid, tz: str) -> pd.DatetimeIndex:
    mid = ((grid.starts_s + grid.ends_s) // 2).astype(np.int64)
    return pd.to_datetime(mid, unit="s", utc=True).tz_convert(tz)


def set_serving_demand(inputs: PlanInputs, demand_tok_s: np.ndarray, source: str) -> None:
    """Serving demand per step measured (and forecast) from the serving stack, in place of
    the site file's spot figures: committed stays the contract (the SLA floor), what the
    serving stack asks beyond it is spot demand, served where it pays."""
    demand = np.asarray(demand_tok_s, dtype=np.float64)
    if demand.shape != inputs.spot_tok_s.shape or not np.isfinite(demand).all():
        raise ValueError(f"serving demand needs {inputs.T} finite values, got {demand.shape}")
    inputs.spot_tok_s = np.maximum(demand - inputs.committed_tok_s, 0.0)
    inputs.notes.append(
        f"serving demand from {source}: {demand[0]:.0f} tokens/s now "
        f"({inputs.spot_tok_s[0]:.0f} beyond committed)"
    )


def protected_load_kw(config: SiteConfig, offered: list[Offer] | None = None) -> float:
    """The load that curtailment must never touch, at the meter: base load and committed
    inference at the site's most efficient serving mode (``offered``: the modes offered
    per class, :func:`offered_modes`). What an alert with no figure caps import at on a
    site without a DR level 3, in the plan and in the daemon's fast path alike."""
    site = config.site
    if offered is None:
        offered, _ = offered_modes(config)
    per_tok = [m.power_kw / tok for offer in offered for m, tok in offer if tok > 0]
    best_kw_per_tok = min(per_tok, default=0.0)
    return site.base_load_kw + site.pue * config.inference.committed_tokens_s * best_kw_per_tok


def assemble_inputs(
    config: SiteConfig,
    grid: TimeGrid,
    prices: Series,
    events: list[GridEvent] | None = None,
    state: SiteState | None = None,
    hashprice: Series | None = None,
) -> PlanInputs:
    """Build the optimiser's arrays from the site, prices, events and measured state."""
    state = state or SiteState()
    site = config.site
    tz = site.timezone
    local = _local(grid, tz)
    devices = config.devices

    cm_class, names, power, hr, tput = [], [], [], [], []
    offered, objective_notes = offered_modes(config)
    for c, offer in enumerate(offered):
        for m, tok_s in offer:
            cm_class.append(c)
            names.append(m.name)
            power.append(m.power_kw)
            hr.append(m.hashrate_ths)
            tput.append(tok_s)
    units = np.array([dc.units for dc in devices], dtype=np.float64)
    initial = np.array(
        [-1 if dc.initial_on is None else dc.initial_on for dc in devices], dtype=np.float64
    )
    if state.units_on:
        unknown = sorted(set(state.units_on) - {dc.name for dc in devices})
        if unknown:
            raise ConfigError("state", [("units_on", f"unknown device classes {unknown}")])
        for c, dc in enumerate(devices):
            if dc.name in state.units_on:
                initial[c] = min(state.units_on[dc.name], dc.units)

    held, held_notes = held_off(devices, grid, state)
    kept, kept_notes = held_on(devices, grid, state)
    held_notes += kept_notes
    price = prices.mean_over(grid.starts_s, grid.ends_s)
    if hashprice is not None:
        hp = hashprice.mean_over(grid.starts_s, grid.ends_s) * (1.0 - config.mining.pool_fee)
    else:
        hp = np.full(grid.n, config.mining.net_hashprice)

    inf = config.inference
    profile = (
        np.array(inf.hourly_profile)[local.hour.to_numpy()]
        if inf.hourly_profile
        else np.ones(grid.n)
    )
    committed = inf.committed_tokens_s * profile
    spot = inf.spot_tokens_s * profile

    onsite = np.zeros(grid.n)
    onsite_price = 0.0
    if site.onsite is not None:
        onsite_price = site.onsite.price_usd_per_mwh
        if site.onsite.kind == "solar":
            onsite = solar_profile_kw(grid.starts_s, grid.ends_s, site.onsite.capacity_kw, tz)
        else:
            path, column = site.onsite.path or "", site.onsite.column or ""
            onsite = load_csv_series(
                config.resolve(path),
                column,
                site.onsite.timestamp_column,
                site.onsite.timezone,
                unit="kW",
            ).mean_over(grid.starts_s, grid.ends_s)

    base = np.full(grid.n, site.base_load_kw)
    # The load that curtailment must never touch: base load and committed inference at the
    # most efficient serving mode of the site.
    tput_arr = np.array(tput)
    pw_arr = np.array(power)
    protected = protected_load_kw(config, offered)

    all_events = resolve_cancels([*config.events, *(events or [])])
    dr_cap, price_override = event_caps(config, grid, all_events, protected)
    if price_override is not None:
        price = np.where(np.isfinite(price_override), price_override, price)
    cap = np.minimum(dr_cap, site.interconnect_kw)
    cap_groups, class_cap = class_cap_series([dc.name for dc in devices], grid, all_events)

    dt_min = grid.dur_s / 60.0
    ramp_up = None if site.ramp_up_kw_per_min is None else site.ramp_up_kw_per_min * dt_min
    ramp_down = None if site.ramp_down_kw_per_min is None else site.ramp_down_kw_per_min * dt_min
    current = state.current_load_kw if state.current_load_kw is not None else site.current_load_kw

    peaks: list[PeakGroup] = []
    tariff = config.tariff
    floor = state.billing_peak_kw
    floor = tariff.billing_peak_so_far_kw if floor is None else floor
    month_key = (local.year * 100 + local.month).to_numpy()
    if tariff.demand_charge_usd_per_kw_month > 0:
        # the peak so far is the first month's; a later month has billed nothing yet
        for mk in np.unique(month_key):
            peaks.append(
                PeakGroup(
                    f"demand-charge {mk // 100}-{mk % 100:02d}",
                    "demand-charge",
                    tariff.demand_charge_usd_per_kw_month,
                    floor if mk == month_key[0] else 0.0,
                    np.flatnonzero(month_key == mk),
                )
            )
    minutes = (local.hour * 60 + local.minute).to_numpy()
    weekday = local.day_of_week.to_numpy() < 5
    for cp in tariff.coincident_peaks:
        lo = cp.start.hour * 60 + cp.start.minute
        hi = cp.end.hour * 60 + cp.end.minute
        in_window = (minutes >= lo) & (minutes < hi) & np.isin(local.month.to_numpy(), cp.months)
        if cp.weekdays_only:
            in_window &= weekday
        for mk in np.unique(month_key[in_window]):
            steps = np.flatnonzero(in_window & (month_key == mk))
            peaks.append(
                PeakGroup(
                    f"{cp.name} {mk // 100}-{mk % 100:02d}",
                    "coincident-peak",
                    cp.usd_per_kw,
                    0.0,
                    steps,
                )
            )

    notes: list[str] = list(objective_notes) + held_notes
    batches: list[BatchWindow] = []
    h0, h1 = int(grid.starts_s[0]), int(grid.ends_s[-1])
    for job in inf.batch:
        rel = int(job.release.timestamp()) if job.release else h0
        dl = int(job.deadline.timestamp())
        if dl <= h0:
            notes.append(
                f"batch job {job.name!r}: deadline {job.deadline.isoformat()} has "
                "passed; not planned"
            )
            continue
        steps = np.flatnonzero((grid.starts_s >= rel) & (grid.ends_s <= dl))
        share = (min(dl, h1) - max(rel, h0)) / (dl - max(rel, h0)) if dl > h1 else 1.0
        if len(steps) == 0:
            if rel >= h1:
                continue
            notes.append(f"batch job {job.name!r}: no whole step between release and deadline")
        batches.append(BatchWindow(job.name, job.tokens * share, job.usd_per_mtok, steps, dl))

    baseline = tariff.dr_baseline_kw
    return PlanInputs(
        grid=grid,
        class_names=[dc.name for dc in devices],
        class_kind=[str(dc.kind) for dc in devices],
        units=units,
        idle_kw=np.array([dc.idle_kw for dc in devices]),
        start_cost_usd=np.array([dc.start_cost_usd for dc in devices]),
        min_on_s=np.array([dc.min_on_s for dc in devices]),
        min_off_s=np.array([dc.min_off_s for dc in devices]),
        initial_on=initial,
        cm_class=np.array(cm_class, dtype=np.int64),
        mode_names=names,
        power_kw=pw_arr,
        hashrate_ths=np.array(hr),
        tput_tok_s=tput_arr,
        price_usd_per_mwh=price * 1.0,
        hashprice=hp,
        base_load_kw=base,
        onsite_kw=onsite,
        cap_kw=cap,
        dr_cap_kw=dr_cap,
        committed_tok_s=committed,
        spot_tok_s=spot,
        ramp_up_kw=ramp_up,
        ramp_down_kw=ramp_down,
        interconnect_kw=site.interconnect_kw,
        pue=site.pue,
        onsite_usd_per_mwh=onsite_price,
        committed_usd_per_mtok=inf.committed_usd_per_mtok,
        spot_usd_per_mtok=inf.spot_usd_per_mtok,
        dr_payment_usd_per_mwh=tariff.dr_payment_usd_per_mwh,
        dr_baseline_kw=baseline if baseline is not None else (current or 0.0),
        initial_import_kw=current,
        peaks=peaks,
        batches=batches,
        penalties=config.penalties,
        price_label=prices.label,
        price_synthetic=prices.synthetic,
        events=[e for e in all_events if overlap(grid, e).any()],
        notes=notes,
        class_cap_groups=cap_groups,
        class_cap_kw=class_cap,
        held_off=held,
        held_on=kept,
    )
