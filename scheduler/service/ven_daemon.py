"""The VEN inside the daemon: its configuration, and the path its events take.

Who this VEN is comes from the site file's ``[openadr]`` (``ven_name``, ``resources``); how
to reach the VTN, and the credentials the utility issued, from the environment, like every
other secret of the daemon (docs/operations.md, "Enrolling with a utility's VTN"):

- ``GRIDSCHED_VTN_URL``: the VTN's base URL (the VEN is off without it);
- ``GRIDSCHED_VTN_CLIENT_ID`` and ``GRIDSCHED_VTN_CLIENT_SECRET`` (or ``..._SECRET_FILE``);
- ``GRIDSCHED_VTN_CALLBACK_URL``: this daemon's ``/openadr3/notifications`` as the VTN
  reaches it (optional: without it the VEN relies on MQTT and polling), answered with the
  first of ``GRIDSCHED_OPENADR_TOKENS``; ``{port}`` in it stands for the port the API is
  bound to (with ``--listen HOST:0``, the one the OS chose at start);
- ``GRIDSCHED_VTN_VERSION`` (``3.1.0``, or ``3.0.1``), ``GRIDSCHED_VTN_TOKEN_URL``,
  ``GRIDSCHED_VTN_POLL_S`` (default 60).

Events fetched by polling or MQTT are read by the same function and stored by the same
``Daemon.accept`` as a webhook's, under source ``openadr3``; PROGRAM objects go the same way
(their payload descriptors are the defaults of their events).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from models.signals import GridEvent
from models.site import OpenADR
from scheduler.service.openadr import Reading, read_notification
from scheduler.service.security import read_secret_list
from scheduler.service.ven import Deliver, Ven, VenConfig
from scheduler.service.ven_reports import ImportSample

if TYPE_CHECKING:
    from scheduler.service.daemon import Daemon

__all__ = ["deliverer", "held_events", "reader", "start_ven", "ven_config_from_env"]


def ven_config_from_env(
    site: OpenADR, environ: Mapping[str, str] | None = None, listen_port: int | None = None
) -> VenConfig | None:
    """The VEN's configuration, or None when ``GRIDSCHED_VTN_URL`` is not set;
    ``listen_port`` (the API's bound port) fills ``{port}`` in the callback URL.

    Raises ValueError naming the variable that is missing or wrong."""
    env = os.environ if environ is None else environ
    url = env.get("GRIDSCHED_VTN_URL", "").strip()
    if not url:
        return None
    client_id = env.get("GRIDSCHED_VTN_CLIENT_ID", "").strip()
    secrets = read_secret_list(
        "GRIDSCHED_VTN_CLIENT_SECRET", "GRIDSCHED_VTN_CLIENT_SECRET_FILE", env
    )
    if not client_id or not secrets:
        raise ValueError(
            "GRIDSCHED_VTN_URL is set, so GRIDSCHED_VTN_CLIENT_ID and GRIDSCHED_VTN_CLIENT_SECRET "
            "(or GRIDSCHED_VTN_CLIENT_SECRET_FILE) are needed: the credentials the utility issued"
        )
    tokens = read_secret_list("GRIDSCHED_OPENADR_TOKENS", "GRIDSCHED_OPENADR_TOKENS_FILE", env)
    callback = env.get("GRIDSCHED_VTN_CALLBACK_URL", "").strip() or None
    if callback and not tokens:
        raise ValueError(
            "GRIDSCHED_VTN_CALLBACK_URL is set but GRIDSCHED_OPENADR_TOKENS is not: the VTN "
            "would be given a callback that refuses it"
        )
    if callback and "{port}" in callback:
        if not listen_port:
            raise ValueError(
                f"GRIDSCHED_VTN_CALLBACK_URL={callback!r} has {{port}}, the port the API listens "
                "on, but that port is not known here; name the port, or start with gridsched run"
            )
        callback = callback.replace("{port}", str(listen_port))
    poll = env.get("GRIDSCHED_VTN_POLL_S", "60")
    try:
        poll_s = float(poll)
    except ValueError:
        raise ValueError(f"GRIDSCHED_VTN_POLL_S={poll!r}: expected seconds, e.g. 60") from None
    return VenConfig(
        vtn_url=url,
        client_id=client_id,
        client_secret=secrets[0],
        site=site,
        version=env.get("GRIDSCHED_VTN_VERSION", "3.1.0").strip(),
        token_url=env.get("GRIDSCHED_VTN_TOKEN_URL", "").strip() or None,
        callback_url=callback,
        callback_token=tokens[0] if callback else None,
        poll_s=poll_s,
    )


def reader(daemon: Daemon) -> Callable[[dict[str, Any]], Reading]:
    """How the daemon reads one notification the VEN fetched (now, this site's VEN)."""

    def read(body: dict[str, Any]) -> Reading:
        # the programs heard of (their payload descriptors), where the daemon keeps them
        programs = getattr(daemon, "openadr_programs", None)
        kw: dict[str, Any] = {"programs": programs} if programs is not None else {}
        return read_notification(body, datetime.now(UTC), daemon.config.openadr, **kw)

    return read


def deliverer(daemon: Daemon) -> Deliver:
    """What the VEN hands a notification to: the events stored by ``daemon.accept`` under
    source ``openadr3``; each payload counted under its metric label (``PayloadOutcome.label``:
    the enumerated type, or ``private``), as the webhook route counts it, so that a VTN's
    private names cannot grow the metric's label set without bound."""
    read = reader(daemon)

    async def deliver(body: dict[str, Any]) -> None:
        reading = read(body)  # an unreadable event raises: the VEN counts and reports it
        await daemon.openadr_programs.flush()  # a program learned: on disk before it is seen
        events = [GridEvent.model_validate(d) for d in reading.events]
        if events:
            await daemon.accept(events, "openadr3", None, json.dumps(body))
        for p in reading.payloads:
            daemon.counters.openadr_payload(p.label, p.acted)

    return deliver


async def start_ven(daemon: Daemon, environ: Mapping[str, str] | None = None) -> Ven | None:
    """Start the VEN when configured; it hands what it fetches to ``daemon.accept``."""
    # gridsched run puts the bound address in the config (port 0: the port the OS chose)
    listen_port = int(daemon.config.daemon.listen.rpartition(":")[2])
    config = ven_config_from_env(daemon.config.openadr, environ, listen_port)
    if config is None:
        return None
    read = reader(daemon)
    deliver = deliverer(daemon)

    def interpret(body: dict[str, Any]) -> list[dict[str, Any]]:
        return list(read(body).events)

    def measure() -> ImportSample:
        meter_kw = daemon.meter_kw()
        if meter_kw is not None:
            return ImportSample(meter_kw, verified=True)
        # no meter reading: the devices' figure (read, else last known) is an estimate
        return ImportSample(daemon.measured()["import_kw"], verified=False)

    ven = Ven(config, deliver, interpret=interpret, measure=measure, held=held_events(daemon))
    # reports sent or given up, and the samples for those not due yet, survive a restart
    ven.reports.keep_in(daemon.store)
    await ven.start()
    return ven


def held_events(daemon: Daemon) -> list[str]:
    """The VTN event ids behind the OpenADR signals stored and in force or to come
    (``oadr:<event id>:...``): the restarted VEN checks them for deletion."""
    ids = {
        str(ev["id"]).split(":")[1]
        for ev in daemon.store.signals(include_ended_after=time.time())
        if ev.get("_source") == "openadr3" and str(ev.get("id", "")).count(":") >= 2
    }
    return sorted(ids)
