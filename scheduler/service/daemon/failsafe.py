"""When the site holds the fail-safe cap: the price feed silent past its limit, the signal
feed silent (when configured), or no good plan covering now. docs/daemon.md, "Fail-safe
semantics"."""

from __future__ import annotations

from models.site import SiteConfig
from scheduler.service.daemon.clock import Clock
from scheduler.service.daemon.feeds import Feeds
from scheduler.service.daemon.plans import CurrentPlan


class FailSafe:
    def __init__(self, config: SiteConfig, clock: Clock, feeds: Feeds, plans: CurrentPlan) -> None:
        self.config = config
        self.feeds = feeds
        self.plans = plans
        self.last_signal_at = clock.time()
        self.started_at = clock.time()  # a feed that never answered is silent from here
        self.state: str | None = None  # the reason in force at the latest poll

    def cap_kw(self) -> float:
        d = self.config.daemon
        if d.failsafe_cap_kw is not None:
            return d.failsafe_cap_kw
        levels = self.config.tariff.dr_levels_kw
        return levels.get("1", self.config.site.interconnect_kw)

    def reason(self, now: float) -> str | None:
        """Why the site is held at the fail-safe cap now, or None."""
        d = self.config.daemon
        feed = d.price_feed
        reasons = []
        ok_at = self.feeds.prices_ok_at
        since = self.started_at if ok_at is None else ok_at
        if now - since > feed.silent_after_s:
            never = ", never answered since the start" if ok_at is None else ""
            reasons.append(
                f"price feed silent for {now - since:.0f} s{never} "
                f"(limit {feed.silent_after_s:g} s)"
            )
        if d.signal_silence_s is not None and now - self.last_signal_at > d.signal_silence_s:
            silent = now - self.last_signal_at
            reasons.append(
                f"signal feed silent for {silent:.0f} s (limit {d.signal_silence_s:g} s)"
            )
        if (gap := self.plans.gap(now)) is not None:
            reasons.append(gap)
        return "; ".join(reasons) or None
