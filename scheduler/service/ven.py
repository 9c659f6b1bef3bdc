"""gridsched as an OpenADR 3 VEN: enrolls with a VTN, listens, polls and reports.

On ``start``: a token (``ven_auth``), this VEN's ven object and resources (``ven_client``),
every program and event the VTN shows this VEN (handed on as notifications, so they take the
same path as a webhook), a subscription with this daemon's callback URL and bearer token,
and MQTT where the VTN offers it (``ven_mqtt``). Then, in the background: polling (the
fall-back if a notification is lost, timed by ``ven_poll`` so that an event is handed on
within the polling period), subscription renewal, and reports (``ven_reporter``).
On ``stop`` the background tasks end (the MQTT listener's with them) and the subscription is
deleted.

Failing safe: a VTN that does not answer leaves every event already delivered in force (the
daemon holds them); the VEN retries with back-off, and ``status()`` says when it last
succeeded and what last failed. Nothing here drops an event on a failure: an event is
marked seen (by id and ``modificationDateTime``) only after the daemon took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.neterrors import describe
from models.site import OpenADR
from scheduler.service.ven_auth import TokenSource
from scheduler.service.ven_client import PAGE_LIMIT, VtnClient
from scheduler.service.ven_intake import Deliver, VenIntake
from scheduler.service.ven_mqtt import MqttListener, parse_binding
from scheduler.service.ven_poll import PollCadence
from scheduler.service.ven_reporter import Interpret, Reporter
from scheduler.service.ven_reports import Measure, ReportJob
from scheduler.service.ven_subscriptions import Subscriptions

__all__ = ["Deliver", "Interpret", "Ven", "VenConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VenConfig:
    """How to reach the VTN; who this VEN is comes from the site's ``[openadr]``."""

    vtn_url: str
    client_id: str
    client_secret: str
    site: OpenADR = field(default_factory=OpenADR)
    version: str = "3.1.0"
    token_url: str | None = None  # None: GET /auth/server, else <vtn>/auth/token
    scope: str | None = None
    callback_url: str | None = None  # this daemon's /openadr3/notifications, reachable by the VTN
    callback_token: str | None = None  # the bearer token the VTN is to send back
    poll_s: float = 60.0
    subscription_renew_s: float = 3600.0
    mqtt: bool = True
    sample_s: float = 10.0
    max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.vtn_url.startswith(("http://", "https://")):
            raise ValueError(f"vtn_url {self.vtn_url!r}: expected http(s)://host[:port]/path")
        if not self.site.ven_name:
            raise ValueError("[openadr] ven_name is needed to enroll with a VTN")
        if self.version not in ("3.0.1", "3.1.0"):
            raise ValueError(f"version {self.version!r}: valid are '3.0.1', '3.1.0'")
        for name in ("poll_s", "subscription_renew_s", "sample_s", "max_backoff_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} {getattr(self, name)!r}: must be > 0")


class Ven(VenIntake):
    """One VEN session with one VTN; ``start``/``stop`` from the daemon's life cycle."""

    def __init__(
        self,
        config: VenConfig,
        deliver: Deliver,
        interpret: Interpret | None = None,
        measure: Measure | None = None,
        http: httpx.AsyncClient | None = None,
        held: Iterable[str] = (),
    ) -> None:
        """``held``: the ids of the VTN events the daemon stored before this start and still
        holds; the first complete listing checks them for deletion as it does the events
        it hands on (before, they were held in memory only, and an event the VTN deleted
        while gridsched was down stayed in force after the restart)."""
        self.config = config
        self._deliver = deliver
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=10.0)
        self.tokens = TokenSource(
            self._http,
            config.vtn_url,
            config.client_id,
            config.client_secret,
            config.token_url,
            config.scope,
            discover=config.version == "3.1.0",
        )
        self.vtn = VtnClient(self._http, config.vtn_url, self.tokens, config.version)
        self.ven_id: str | None = None
        self.resource_ids: dict[str, str] = {}
        self.subs = Subscriptions(
            self.vtn, str(config.site.ven_name), config.callback_url, config.callback_token
        )
        self.mqtt: MqttListener | None = None
        self._seen: dict[tuple[str, str], str] = {}  # (objectType, id) -> modificationDateTime
        # the VTN's events as last delivered (those stored before this start: by id alone)
        self._events: dict[str, dict[str, Any]] = {eid: {"id": eid} for eid in held}
        self._tasks: list[asyncio.Task[None]] = []
        self.cadence = PollCadence(config.poll_s)
        self._handed = 0  # deliveries counted at the last poll's end (its log line)
        #: the step whose failure last_error says (cleared once that step succeeds again)
        self._failed_step: str | None = None
        self.polled = asyncio.Event()  # set after each successful poll (tests, readiness)
        self._status: dict[str, Any] = {
            "vtn": config.vtn_url,
            "version": config.version,
            "ven_name": config.site.ven_name,
            "enrolled": False,
            "last_success_at": None,
            "last_error": None,
            "last_error_at": None,
            "consecutive_failures": 0,
            "events_known": 0,
            "deliveries": 0,
            "delivery_failures": 0,  # the daemon could not take what it was handed
            "events_refused": {},  # event id -> why the daemon refuses what it says
            "reports_sent": 0,
            "not_reported": [],
            "notifiers": None,
            "started_at": None,
            "last_poll_at": None,  # the last complete listing of programs and events
            "polls": 0,
            "poll_failures": 0,
            # the last complete poll's seconds; polls start this far apart (start to start),
            # and whether that hands an event on within the period (False: VTN too slow)
            "poll_took_s": None,
            "poll_interval_s": config.poll_s,
            "poll_within_period": None,
            # EVENT notifications taken (new, changed or deleted), by the channel that brought
            # them first: the others see them as already delivered
            "events_received": {"poll": 0, "mqtt": 0, "webhook": 0},
        }
        self.reports = Reporter(
            self.vtn, config.site, self._status, self._attempt, interpret, measure
        )

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Enroll and fetch now if the VTN answers; keep trying in the background if not."""
        self._status["started_at"] = time.time()
        ok = await self._attempt(self._enroll, "enroll")
        began = time.monotonic()
        if ok and await self._attempt(self.poll_once, "poll"):
            self._polled(time.monotonic() - began)
        # appended: enrolling may have started the MQTT listener, which stop() ends too
        self._tasks.append(asyncio.create_task(self._loop(), name="ven-poll"))
        if (measure := self.reports.measure) is not None:
            loop = self.reports.loop(measure, self.config.sample_s)
            self._tasks.append(asyncio.create_task(loop, name="ven-reports"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        await self.subs.delete_all()
        if self._own_http:
            await self._http.aclose()

    def status(self) -> dict[str, Any]:
        out = dict(self._status)
        out |= {
            "ven_id": self.ven_id,
            "resources": dict(self.resource_ids),
            "subscription_id": self.subs.first,
            "subscriptions": dict(self.subs.ids),
            "mqtt": dict(self.mqtt.status) if self.mqtt else None,
            "tokens_fetched": self.tokens.fetched,
            "reports_pending": self.reports.pending,
            "subscription_state": self.subscription_state,
            "events_received": dict(self._status["events_received"]),
        }
        return out

    @property
    def subscription_state(self) -> str:
        """``active``: the VTN holds this daemon's callback; ``missing``: a callback is
        configured but no subscription is held (not enrolled yet, or lost and not posted
        again): only MQTT and polling bring events; ``not_configured``: no callback URL."""
        if not self.config.callback_url:
            return "not_configured"
        return "active" if self.subs.ids else "missing"

    # -- steps --------------------------------------------------------------------------------

    async def _attempt(self, step: Callable[[], Awaitable[None]], what: str) -> bool:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._status |= {
                "last_error": f"{what}: {describe(exc)}"[:400],
                "last_error_at": time.time(),
                "consecutive_failures": self._status["consecutive_failures"] + 1,
            }
            self._failed_step = what
            log.warning("VEN %s failed: %s", what, exc)
            if what == "poll":
                self._status["poll_failures"] += 1
            return False
        self._status |= {"last_success_at": time.time(), "consecutive_failures": 0}
        if what == self._failed_step:  # what failed works again (last_error_at stays)
            self._status["last_error"], self._failed_step = None, None
        return True

    async def _enroll(self) -> None:
        site = self.config.site
        ven = await self.vtn.ensure_ven(str(site.ven_name))
        self.ven_id = str(ven["id"])
        names = [r.name for r in site.resources]
        self.resource_ids = await self.vtn.ensure_resources(self.ven_id, names)
        self._status["enrolled"] = True
        await self.subs.renew(await self._program_ids())
        if self.config.mqtt and self.mqtt is None:
            await self._start_mqtt()

    @property
    def subscription_id(self) -> str | None:
        return self.subs.first

    async def _program_ids(self) -> list[str]:
        if self.vtn.version == "3.1.0" or not self.config.callback_url:
            return []  # only 3.0.1 subscribes per program
        got = await self.vtn.list_all("/programs")
        return [str(p["id"]) for p in got if isinstance(p, dict) and "id" in p]

    async def _start_mqtt(self) -> None:
        notifiers = await self.vtn.notifiers()
        self._status["notifiers"] = sorted(k for k, v in notifiers.items() if v)
        if "MQTT" not in notifiers:
            return
        binding = parse_binding(notifiers["MQTT"], self.config.client_id)
        topics: list[str] = []
        paths = ["programs", "events"]
        if self.ven_id:
            paths += [f"vens/{self.ven_id}/events", f"vens/{self.ven_id}/programs"]
        for path in paths:
            try:
                got = await self.vtn.mqtt_topics(path)
            except Exception as exc:  # a VTN may offer only some of the topic lists
                log.info("VEN: no MQTT topics for %s: %s", path, exc)
                continue
            topics += [got[k] for k in ("CREATE", "UPDATE", "DELETE") if k in got]
        if not topics:
            raise RuntimeError("the VTN offers MQTT but names no event or program topics")
        self.mqtt = MqttListener(
            binding, topics, self.handle, self.tokens.token, self.config.max_backoff_s
        )
        self._tasks.append(asyncio.create_task(self.mqtt.run(), name="ven-mqtt"))

    async def poll_once(self) -> None:
        """Fetch programs and events; hand on the new and changed, cancel the deleted.

        The programs and the events' pages are asked for at once (as many pages as the last
        listing had); each page's new and changed events are handed on as it arrives, the
        programs first (their descriptors are the events' defaults). An event we hold that
        a complete listing lacks is cancelled only once the VTN says it is gone: a deletion
        while we page shifts the later pages by one, and an event can fall between two."""
        programs_task = asyncio.ensure_future(self.vtn.list_all("/programs"))
        pages = self.vtn.pages("/events", batch=len(self._events) // PAGE_LIMIT + 1)
        live: set[str] = set()
        try:
            programs = await programs_task
            for p in programs:
                if isinstance(p, dict):
                    await self._offer("PROGRAM", "UPDATE", p, "poll")
            if self.vtn.version == "3.0.1":  # a new program needs its own subscription there
                await self.subs.ensure([str(p["id"]) for p in programs if isinstance(p, dict)])
            async with contextlib.aclosing(pages):
                async for page in pages:
                    for ev in page:
                        if isinstance(ev, dict) and isinstance(ev.get("id"), str):
                            live.add(ev["id"])
                            await self._offer("EVENT", "UPDATE", ev, "poll")
        finally:
            programs_task.cancel()
            await asyncio.gather(programs_task, return_exceptions=True)
        # a complete listing without an event we hold: deleted while we did not hear, or
        # shifted out of this listing by another's deletion (then the VTN still has it)
        for eid in [e for e in self._events if e not in live]:
            if await self.vtn.event_gone(eid):
                await self._offer("EVENT", "DELETE", self._events[eid], "poll")
        self._status["events_known"] = len(self._events)
        self._status["polls"] += 1
        self._status["last_poll_at"] = time.time()
        self.polled.set()

    # -- background ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        """Poll (and enroll, if that failed); renew the subscription; back off on failure.
        Polls are timed start to start by ``PollCadence``: early enough before the period
        is out that an event created just after a poll began is handed on within it."""
        renewed = time.monotonic()
        next_at = time.monotonic() + self.cadence.interval_s()
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            began = time.monotonic()
            enrolled = self._status["enrolled"]
            ok = await self._attempt(
                self.poll_once if enrolled else self._enroll, "poll" if enrolled else "enroll"
            )
            if ok and enrolled:
                self._polled(time.monotonic() - began)
            if ok and self.subs.ids:
                ok = await self._attempt(self.subs.check, "check subscriptions")
            if ok and time.monotonic() - renewed >= self.config.subscription_renew_s:
                ok = await self._attempt(self._renew, "renew subscriptions")
                renewed = time.monotonic() if ok else renewed
            fails = self._status["consecutive_failures"]
            # a VTN slower than the interval is not polled flat out: a tenth of the period
            floor_at = time.monotonic() + self.cadence.floor_s
            next_at = (
                max(began + self.cadence.interval_s(), floor_at)
                if ok
                else time.monotonic()
                + min(self.config.poll_s * 2 ** min(fails, 10), self.config.max_backoff_s)
            )

    def _polled(self, took_s: float) -> None:
        handed, self._handed = self._status["deliveries"] - self._handed, self._status["deliveries"]
        self._status |= self.cadence.polled(took_s, handed, len(self._events))

    async def _renew(self) -> None:
        await self.subs.renew(await self._program_ids())

    async def send_report(self, job: ReportJob) -> bool:
        """Post ``job``'s report; False if it failed or was sent already."""
        return await self.reports.send(job)

    def record(self, t: float, power_kw: float | None, verified: bool) -> None:
        """Add an import sample by hand (the daemon's poll, or tests)."""
        self.reports.record(t, power_kw, verified)

    def jobs(self) -> list[ReportJob]:
        return list(self.reports.jobs.values())
