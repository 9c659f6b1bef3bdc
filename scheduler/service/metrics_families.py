"""Metric families of the daemon's collector that stand on their own: per device (when
asked), the OpenADR VEN, inference demand and objectives, and power truth (what of import
is estimated, compliance, the site meter). :mod:`scheduler.service.metrics` yields them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from scheduler.service.power import ComplianceState

if TYPE_CHECKING:
    from scheduler.service.daemon import Daemon


def per_device(d: Daemon) -> Iterator[Metric]:
    """One series per device ([metrics] per_device): every device's power as the site's
    total counts it, whether that is a reading, and whether it answers; GPUs also with
    DCGM-exporter's labels."""
    power = GaugeMetricFamily(
        "gridsched_device_power_watts",
        "Power of each device as the site total counts it: its reading where "
        "gridsched_device_power_measured is 1, else an estimate (last known power, or its "
        "mode's nameplate)",
        labels=["device", "class", "kind"],
    )
    measured = GaugeMetricFamily(
        "gridsched_device_power_measured",
        "1 when gridsched_device_power_watts is a power the device reported in the latest "
        "poll or since; 0 when estimated (not read, or read without a power figure: stock "
        "Antminer firmware)",
        labels=["device"],
    )
    up = GaugeMetricFamily(
        "gridsched_device_up",
        "1 when the device was read in the latest poll or since",
        labels=["device"],
    )
    for device_id, st in d.fleet.status.items():
        kind = d.devices.classes[st.group].kind.value
        p = d.power.device(device_id, False)
        power.add_metric([device_id, st.group, kind], p.kw * 1000)
        measured.add_metric([device_id], 1.0 if p.read else 0.0)
        up.add_metric([device_id], 1.0 if device_id in d.power.answered else 0.0)
    yield power
    yield measured
    yield up
    gpu_power = GaugeMetricFamily(
        "gridsched_gpu_power_watts",
        "GPU power draw (DCGM-style labels)",
        labels=["gpu", "UUID", "modelName", "class"],
    )
    gpu_limit = GaugeMetricFamily(
        "gridsched_gpu_power_limit_watts",
        "GPU enforced power limit",
        labels=["gpu", "UUID", "modelName", "class"],
    )
    for adapter in d.fleet.adapters:
        if adapter.kind != "gpu" or adapter.info is None:
            continue
        t = d.power.readings.get(adapter.device_id)
        if t is None:
            continue
        labels = [
            adapter.address.rsplit(":", 1)[-1],
            adapter.info.serial,  # NVML's UUID, as DCGM's exporter labels it
            adapter.info.model,
            d.fleet.status[adapter.device_id].group,
        ]
        # not read is no sample: a GPU whose draw is unknown is not at 0 W
        if t.power_w is not None:
            gpu_power.add_metric(labels, t.power_w)
        if t.target_w is not None:
            gpu_limit.add_metric(labels, t.target_w)
    yield gpu_power
    yield gpu_limit


def ven(d: Daemon) -> Iterator[Metric]:
    """The OpenADR VEN, when a VTN is configured (the alerts GridschedOpenADRVenSilent,
    GridschedOpenADRSubscriptionMissing and GridschedOpenADRReportGivenUp in
    deploy/prometheus/gridsched.rules.yml)."""
    if d.ven is None:
        return
    st = d.ven.status()
    g = GaugeMetricFamily(
        "gridsched_openadr_ven_last_poll_timestamp_seconds",
        "Unix time of the VEN's last complete poll of the VTN (its start before the first)",
    )
    g.add_metric([], float(st.get("last_poll_at") or st.get("started_at") or 0.0))
    yield g
    g = GaugeMetricFamily(
        "gridsched_openadr_ven_poll_interval_seconds", "How often the VEN polls the VTN"
    )
    g.add_metric([], float(d.ven.config.poll_s))
    yield g
    c = CounterMetricFamily(
        "gridsched_openadr_ven_polls", "VEN polls of the VTN by result", labels=["result"]
    )
    failed = int(st.get("poll_failures", 0))
    c.add_metric(["ok"], int(st.get("polls", 0)))
    c.add_metric(["failed"], failed)
    yield c
    g = GaugeMetricFamily(
        "gridsched_openadr_ven_consecutive_failures", "VEN steps failed in a row (0: working)"
    )
    g.add_metric([], float(st.get("consecutive_failures", 0)))
    yield g
    g = GaugeMetricFamily(
        "gridsched_openadr_ven_subscription",
        "1 for the VEN's subscription state at the VTN",
        labels=["state"],
    )
    for state in ("active", "missing", "not_configured"):
        g.add_metric([state], 1.0 if st.get("subscription_state") == state else 0.0)
    yield g
    c = CounterMetricFamily(
        "gridsched_openadr_ven_events_received",
        "OpenADR events taken by the VEN, by the channel that brought them first",
        labels=["via"],
    )
    for via, n in sorted((st.get("events_received") or {}).items()):
        c.add_metric([via], n)
    yield c
    c = CounterMetricFamily(
        "gridsched_openadr_ven_reports",
        "VEN reports posted to the VTN (sent) or given up by this process, from 0",
        labels=["state"],
    )
    c.add_metric(["sent"], int(st.get("reports_sent", 0)))
    c.add_metric(["given_up"], d.ven.reports.given_up_here)
    yield c
    g = GaugeMetricFamily(
        "gridsched_openadr_ven_reports_pending", "VEN reports due or not yet due, not settled"
    )
    g.add_metric([], float(st.get("reports_pending", 0)))
    yield g
    mqtt = st.get("mqtt")
    if mqtt is not None:
        g = GaugeMetricFamily(
            "gridsched_openadr_ven_mqtt_connected", "1 while the VEN's MQTT client is connected"
        )
        g.add_metric([], 1.0 if mqtt.get("connected") else 0.0)
        yield g


def fleet_workers(d: Daemon) -> Iterator[Metric]:
    """The fleet's worker processes, as /v1/status ``fleet_workers`` gives them (the alert
    GridschedFleetWorkerDown). A fleet in the daemon's process: 0 running, 0 down, 0
    restarts, so that the alert needs no special case."""
    from scheduler.service.daemon.status import fleet_workers as workers_now

    w = workers_now(d)
    g = GaugeMetricFamily(
        "gridsched_fleet_workers",
        "Fleet worker processes by state (running, down: its miners unreachable)",
        labels=["state"],
    )
    g.add_metric(["running"], w["running"])
    g.add_metric(["down"], w["down"])
    yield g
    c = CounterMetricFamily(
        "gridsched_fleet_worker_restarts", "Fleet worker processes started again after dying"
    )
    c.add_metric([], w["restarts"])
    yield c


def class_caps(d: Daemon, now: float) -> Iterator[Metric]:
    """Caps on some device classes (events naming classes: an OpenADR setpoint for a
    resource), as /v1/status ``class_caps`` gives them; ``classes`` is the capped classes,
    sorted, comma-joined (the alert GridschedClassCapNotMet reads the state)."""
    from scheduler.service.daemon.status import class_caps as caps_now

    cap = GaugeMetricFamily(
        "gridsched_class_cap_watts", "Cap in force on some device classes", labels=["classes"]
    )
    power = GaugeMetricFamily(
        "gridsched_class_cap_power_watts",
        "The capped classes' power at the meter (PUE, no base load; unread: last known)",
        labels=["classes"],
    )
    state = GaugeMetricFamily(
        "gridsched_class_cap_compliance",
        "1 for the capped classes' state against their cap: met, not_met or unverified",
        labels=["classes", "state"],
    )
    for c in caps_now(d, now):
        label = ",".join(sorted(c["classes"]))
        cap.add_metric([label], float(c["cap_kw"]) * 1000)
        power.add_metric([label], round(float(c["power_kw"]) * 1000, 3))
        for s in ComplianceState:
            state.add_metric([label, s.value], 1.0 if c["state"] == s.value else 0.0)
    yield cap
    yield power
    yield state


def inference(d: Daemon) -> Iterator[Metric]:
    """The serving demand feed (when configured) and the latency objectives."""
    if d.demand is not None:
        up = GaugeMetricFamily(
            "gridsched_serving_feed_up",
            "1 when the latest poll gave a demand figure (every engine read, or the PromQL query)",
        )
        up.add_metric([], 1.0 if d.demand.up else 0.0)
        yield up
        tok = GaugeMetricFamily(
            "gridsched_inference_demand_tokens_per_second",
            "Inference demand the plan uses now, by source (serving metrics or site file)",
            labels=["source"],
        )
        now = d.demand.tokens_now()
        if now is not None:  # before the first plan: the site file's figure is not known
            tok.add_metric([d.demand.source()], now)
        yield tok
    sla = GaugeMetricFamily(
        "gridsched_inference_sla",
        "1 for each latency objective's state (met, missed, unverified)",
        labels=["objective", "state"],
    )
    seconds = GaugeMetricFamily(
        "gridsched_inference_objective_seconds",
        "Each latency objective's target, and its percentile observed over the window "
        "(no observed series while unverified)",
        labels=["objective", "kind"],
    )
    for name, o in d.inference_sla().items():
        for state in ("met", "missed", "unverified"):
            sla.add_metric([name, state], 1.0 if o["state"] == state else 0.0)
        seconds.add_metric([name, "target"], o["target_s"])
        if o["value_s"] is not None:
            seconds.add_metric([name, "observed"], o["value_s"])
    yield sla
    yield seconds


def power_truth(d: Daemon, m: dict[str, float], now: float) -> Iterator[Metric]:
    """How much of import is estimated, whether the cap is met, and the site meter."""
    c = d.power.compliance(d.cap_now(now)[0], now)
    g = GaugeMetricFamily(
        "gridsched_site_power_estimated_watts",
        "Part of import from devices not read (their last known power or mode nameplate)",
    )
    g.add_metric([], round(m["estimated_kw"] * 1000, 3))
    yield g
    g = GaugeMetricFamily("gridsched_devices_unread", "Devices without a power reading now")
    g.add_metric([], m["devices_unread"])
    yield g
    g = GaugeMetricFamily(
        "gridsched_cap_compliance",
        "1 for the state of import against the cap in force: met, not_met or unverified",
        labels=["state"],
    )
    for state in ComplianceState:
        g.add_metric([state.value], 1.0 if c.state is state else 0.0)
    yield g
    if d.power.meter is None:
        return
    g = GaugeMetricFamily("gridsched_meter_up", "1 when the site meter was read in the last poll")
    g.add_metric([], 0.0 if c.meter_kw is None else 1.0)
    yield g
    if c.meter_kw is not None and c.meter_gap_kw is not None:
        g = GaugeMetricFamily("gridsched_meter_power_watts", "Import at the site meter")
        g.add_metric([], round(c.meter_kw * 1000, 3))
        yield g
        g = GaugeMetricFamily(
            "gridsched_meter_gap_watts",
            "Site meter minus the devices' sum (with PUE and base load): unmetered or unread load",
        )
        g.add_metric([], round(c.meter_gap_kw * 1000, 3))
        yield g


def drifts(d: Daemon) -> Iterator[Metric]:
    """Devices that changed behind gridsched's back (state, a GPU's SM clock lock or power
    limit), by class and what; each one is put back by the next dispatch."""
    x = CounterMetricFamily(
        "gridsched_device_drifts",
        "Devices seen out of the mode they were set to, by class and what changed",
        labels=["class", "what"],
    )
    for name, by_what in sorted(d.devices.drifts.items()):
        for what, n in sorted(by_what.items()):
            x.add_metric([name, what], n)
    yield x
    g = GaugeMetricFamily(
        "gridsched_gpu_clock_lock_refused",
        "GPUs whose SM clock locks NVML refuses (their class's clock modes not sent them)",
        labels=["class"],
    )
    for name, modes in sorted(d.devices.lock_modes.items()):
        if modes:  # classes with clock modes only
            ids = d.fleet.ids(name)
            g.add_metric([name], sum(d.devices.lock_refused(i) is not None for i in ids))
    yield g
