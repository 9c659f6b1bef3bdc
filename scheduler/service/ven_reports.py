"""Reports a VEN owes the VTN: the event's ``reportDescriptors``, measured here.

What is measured (Definition, "Report Enumerations" and "Reading Type Enumerations"; User
Guide 7.5), all from the site's import (the meter when read, else the devices' figure):

- ``USAGE``: energy imported over each interval, kWh (``WH``/``MWH`` when asked);
- ``DEMAND``: import power over each interval, kW (``W``/``MW`` when asked): the mean, or,
  with ``readingType`` ``PEAK``, the highest sample ("the highest measurement over an
  interval");
- ``READING``: "an instantaneous data point, as from a meter": the last import sample of
  each interval, in power units (a register count in energy units is not read here);
- with each value a ``DATA_QUALITY`` payload: ``OK`` when the import was read over the whole
  interval from a source the daemon calls verified (a meter), ``ESTIMATED`` when it came from
  device readings or covered only part of the interval (the mean of what was read, stretched
  over it), ``MISSING`` when less than ``MIN_COVERAGE`` was read (then no value is sent:
  an unread site is not at 0 kW). The descriptor's ``readingType`` is ``PEAK`` for a peak,
  else ``DIRECT_READ`` only when every interval is ``OK``, else ``ESTIMATED``.

Every other type (``BASELINE``, ``DELTA_USAGE``: consumption without load control is not a
measurement; ``OPERATING_STATE``: the CTA-2045 states turn on a "significant consumption"
this site has no definition of; storage, regulation, reservations, forecasts of load; any
private type), and a measured type in units it cannot be given in, is answered as not
available: a report whose every interval is ``DATA_QUALITY`` ``MISSING`` ("the data item is
unavailable for this interval") and has no value. Never a number that was not measured.

Timing: the descriptor's ``startInterval``/``numIntervals`` select the intervals, and
``frequency`` how many go into each report (-1: all, sent after the last one ends). The
intervals are those the daemon made of the event; a 'report-only' event (User Guide 7.5: no
intervals, or all with empty payloads) makes none, so its own intervals, or the implied ones
its ``intervalPeriod`` repeats, are timed from the event itself (``ven_report_only``). An
event whose ``targets`` name neither this VEN nor its resources is not reported on (said).
A ``repeat`` other than 1 asks for a stream (``ven_report_windows.repeated``): report ``n`` covers
``numIntervals`` intervals from ``startInterval + n * frequency``, counted on over the passes
an event's ``duration`` loops its intervals over, or over a report-only event's implied
intervals; ``-1`` for as long as the event goes on (planned ``STREAM_AHEAD_S`` ahead, then
again by the reporter). Forecasts (``historical = false`` or ``readingType`` ``FORECAST``)
are not sent; they are listed in the VEN's status as not reported. A descriptor without a
``payloadType`` (required, at least one character; the User Guide's Example 7.7-1 misspells
it ``payLoadType``) is not answered with a type made up: it is said (``malformed``) and
skipped, as is a descriptor that is not an object.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.site import OpenADR
from scheduler.service.openadr_payloads import PayloadError
from scheduler.service.openadr_targets import match_targets
from scheduler.service.ven_report_only import bl_spans, implied_spans, is_report_only
from scheduler.service.ven_report_windows import Window, repeated
from scheduler.service.ven_report_windows import places as report_places
from scheduler.service.ven_report_windows import windows as first_pass

__all__ = [
    "ImportSample",
    "Measure",
    "ReportJob",
    "SampleLog",
    "plan_reports",
]

MIN_COVERAGE = 0.5
#: a sample stands for at most this long after it (then the site counts as unread)
SAMPLE_HOLD_S = 60.0
_ENERGY = {"KWH": 1.0, "WH": 1000.0, "MWH": 0.001}
_POWER = {"KW": 1.0, "W": 1000.0, "MW": 0.001}


@dataclass(frozen=True)
class ImportSample:
    """Site import now: ``power_kw`` None when unreadable; ``verified`` when from a meter."""

    power_kw: float | None
    verified: bool


#: what the daemon hands the VEN: the site's import now
Measure = Callable[[], ImportSample]


@dataclass(frozen=True)
class Reading:
    mean_kw: float | None
    coverage: float  # share of the window with a reading
    verified: bool


class SampleLog:
    """Import samples over time, integrated into per-window means."""

    def __init__(self, keep_s: float = 2 * 86400.0) -> None:
        self._samples: deque[tuple[float, float | None, bool]] = deque()
        self.keep_s = keep_s

    def add(self, t: float, sample: ImportSample) -> None:
        self._samples.append((t, sample.power_kw, sample.verified))
        while self._samples and self._samples[0][0] < t - self.keep_s:
            self._samples.popleft()

    def read(self, start: float, end: float, how: str = "mean") -> Reading:
        """The import over ``[start, end)``: its time-weighted mean, the highest sample
        (``peak``) or the last one (``last``), with the share of the window read."""
        covered = energy = 0.0
        verified = True
        peak: float | None = None
        last: tuple[float, bool] | None = None
        s = list(self._samples)
        for k, (t, kw, ok) in enumerate(s):
            nxt = s[k + 1][0] if k + 1 < len(s) else t + SAMPLE_HOLD_S
            lo, hi = max(t, start), min(nxt, t + SAMPLE_HOLD_S, end)
            if kw is None or hi <= lo:
                continue
            covered += hi - lo
            energy += kw * (hi - lo)
            verified = verified and ok
            peak = kw if peak is None else max(peak, kw)
            last = (kw, ok)
        span = max(end - start, 1e-9)
        if covered <= 0:
            return Reading(None, 0.0, False)
        coverage = min(covered / span, 1.0)
        if how == "peak":
            return Reading(peak, coverage, verified)
        if how == "last" and last is not None:
            return Reading(last[0], coverage, last[1])
        return Reading(energy / covered, coverage, verified)


@dataclass
class ReportJob:
    """One report to send: which descriptor, which windows, when."""

    event_id: str
    program_id: str
    payload_type: str
    units: str
    windows: list[Window]
    due_at: float  # unix s: the end of its last window
    key: str  # stable: event, modification time, descriptor, chunk
    how: str = "mean"  # mean, peak, last; "" : not available (every interval MISSING)
    sent: bool = False
    attempts: int = 0
    given_up: str | None = None  # why, once given up (then never tried again)
    next_at: float = 0.0  # unix s: the next try after a failed one (back-off)
    failing_since: float | None = None  # unix s: the first failed try of the failures now
    refusals: int = 0  # the VTN's refusals (4xx) in a row

    @property
    def name(self) -> str:
        """The report's ``reportName``: its identity at the VTN (and in the state file)."""
        return f"gridsched {self.key}"[:128]

    def body(
        self, log: SampleLog, client_name: str, resource_name: str, version: str
    ) -> dict[str, Any]:
        intervals: list[dict[str, Any]] = []
        all_ok = True
        for w in self.windows:
            r = log.read(w.start, w.end, self.how) if self.how else Reading(None, 0.0, False)
            payloads: list[dict[str, Any]] = []
            if r.mean_kw is None or r.coverage < MIN_COVERAGE:
                quality = "MISSING"
            else:
                quality = "OK" if r.coverage >= 0.99 and r.verified else "ESTIMATED"
                if self.payload_type == "USAGE":
                    value = r.mean_kw * (w.end - w.start) / 3600.0 * _ENERGY[self.units]
                else:
                    value = r.mean_kw * _POWER[self.units]
                payloads.append({"type": self.payload_type, "values": [round(max(value, 0), 6)]})
            all_ok = all_ok and quality == "OK"
            payloads.append({"type": "DATA_QUALITY", "values": [quality]})
            intervals.append(
                {
                    "id": w.interval_id,
                    "intervalPeriod": {
                        "start": _iso(w.start),
                        "duration": f"PT{max(round(w.end - w.start), 0)}S",
                    },
                    "payloads": payloads,
                }
            )
        descriptor: dict[str, Any] = {"payloadType": self.payload_type}
        if self.how:  # a peak says so; otherwise how the values were come by
            kind = "PEAK" if self.how == "peak" else "DIRECT_READ" if all_ok else "ESTIMATED"
            descriptor["readingType"] = kind
        if self.units:
            descriptor["units"] = self.units
        if version == "3.1.0":
            descriptor = {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", **descriptor}
        out: dict[str, Any] = {
            "eventID": self.event_id,
            "clientName": client_name,
            "reportName": self.name,
            "payloadDescriptors": [descriptor],
            "resources": [{"resourceName": resource_name, "intervals": intervals}],
        }
        if version == "3.0.1":
            out["programID"] = self.program_id  # required there, absent from 3.1.0
        return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Planned:
    jobs: list[ReportJob] = field(default_factory=list)
    not_reported: list[str] = field(default_factory=list)  # why, one line each
    unavailable: dict[str, str] = field(default_factory=dict)  # type -> why (to log once)
    malformed: list[str] = field(default_factory=list)  # descriptors skipped, one line each
    #: unix s: a stream goes on past the reports planned; plan the event again by then
    more_after: float | None = None


#: payload type -> (units table, default units, readings per descriptor readingType)
_MEASURED: dict[str, tuple[dict[str, float], str, dict[str, str]]] = {
    "USAGE": (_ENERGY, "KWH", {}),
    "DEMAND": (_POWER, "KW", {"PEAK": "peak"}),
    "READING": (_POWER, "KW", {}),
}
#: what each measured type reads when its descriptor names no reading type (or MEAN)
_HOW = {"USAGE": "mean", "DEMAND": "mean", "READING": "last"}


def _measure_as(ptype: str, d: dict[str, Any]) -> tuple[str, str, str | None]:
    """(how, units, why not available) for one descriptor; how "" when not available."""
    units = str(d.get("units") or "").upper()
    if ptype not in _MEASURED:
        return "", units, f"{ptype}: not measured here (USAGE, DEMAND and READING are)"
    table, default, kinds = _MEASURED[ptype]
    units = units or default
    if units not in table:
        return "", units, f"{ptype} in {units}: valid units are {sorted(table)}"
    reading = str(d.get("readingType") or "").upper()
    if reading == "PEAK" and reading not in kinds:  # a peak of energy, of an instant
        return "", units, f"{ptype} as PEAK: not measured here (DEMAND's is)"
    return kinds.get(reading, _HOW[ptype]), units, None


def _chosen(
    event: dict[str, Any], d: dict[str, Any], windows: list[Window] | None, now: float
) -> tuple[list[Window], str | None]:
    """The windows a descriptor selects (``startInterval``, ``numIntervals``): of
    ``windows``, or, None, of the event's implied intervals (``ven_report_only``)."""
    start = max(int(d.get("startInterval", -1)), 0)
    num = int(d.get("numIntervals", -1))
    if windows is None:
        spans, why = implied_spans(event, start, num, now)
        return [Window(*s) for s in spans], why and f"report-only event: {why}"
    chosen = windows[start:] if num < 0 else windows[start : start + num]
    if windows and not chosen:
        return [], f"startInterval {start} selects none of its {len(windows)} intervals"
    return chosen, None


def _not_ours(event: dict[str, Any], site: OpenADR | None) -> str | None:
    """Why an event's ``targets`` make it not this site's to report on, if they do."""
    if site is None:
        return None
    try:
        scope = match_targets(event.get("targets"), site)
    except PayloadError as exc:
        return f"{exc.where}: {exc.reason}"
    return None if scope.ours else scope.why_not or "not for this VEN"


def plan_reports(
    event: dict[str, Any],
    simple_events: list[dict[str, Any]],
    now: float | None = None,
    site: OpenADR | None = None,
) -> Planned:
    """The reports ``event`` asks for, given what gridsched made of its intervals (for a
    report-only event, its own intervals or implied ones, timed from ``now``); none when
    its ``targets`` name neither ``site``'s VEN nor its resources."""
    out = Planned()
    descriptors = event.get("reportDescriptors") or []
    if not descriptors:
        return out
    now = time.time() if now is None else now
    eid = str(event.get("id"))
    if (why_not := _not_ours(event, site)) is not None:
        out.not_reported.append(f"event {eid}: {why_not}; not reported"[:300])
        return out
    windows: list[Window] | None = first_pass(eid, simple_events)
    places: dict[int, Window] | None = None  # every pass's windows, for a stream
    no_windows = "the event has no intervals with times to report on"
    if not windows and is_report_only(event):
        if event.get("intervals"):  # BL-determined: its intervals, empty payloads
            spans, why_none = bl_spans(event, now)
            windows = [Window(*s) for s in spans]
            places = dict(enumerate(windows))
            no_windows = f"report-only event: {why_none}"
        else:  # implied: counted per descriptor
            windows = None
    elif any("repeat" in d for d in descriptors if isinstance(d, dict)):
        places = report_places(eid, simple_events)
    mod = str(event.get("modificationDateTime", ""))
    for d_no, d in enumerate(descriptors):
        said = f"report descriptor {d_no} of event {eid}"
        if not isinstance(d, dict):
            out.malformed.append(f"{said} is not an object; skipped")
            continue
        ptype = d.get("payloadType")
        if not isinstance(ptype, str) or not ptype:
            near = [k for k in d if k.lower() == "payloadtype" and k != "payloadType"]
            hint = f" (it has {near[0]!r}: names are case-sensitive)" if near else ""
            out.malformed.append(f"{said} has no payloadType{hint}; skipped")
            continue
        how, units, unavailable = _measure_as(ptype, d)
        why = None
        chosen: list[Window] = []
        chunks: list[tuple[int, list[Window]]] = []
        forecast = str(d.get("readingType") or "").upper() == "FORECAST"
        repeat = int(d.get("repeat", 1))
        if d.get("historical", True) is False or forecast:
            why = f"{ptype}: forecasts (historical = false, FORECAST) are not sent"
        elif repeat != 1:
            chunks, more, said_why = repeated(event, d, places, now)
            if more is not None:
                out.more_after = more if out.more_after is None else min(out.more_after, more)
            if said_why and chunks:
                out.not_reported.append(f"event {eid}: {ptype}: {said_why}")
            elif not chunks:
                why = f"{ptype}: {said_why or no_windows}"
        else:
            chosen, why_none = _chosen(event, d, windows, now)
            if not chosen:
                why = f"{ptype}: {why_none or no_windows}"
        if why:
            out.not_reported.append(f"event {eid}: {why}")
            continue
        if unavailable:  # answered, each interval MISSING: the VTN hears it, nothing invented
            out.not_reported.append(f"event {eid}: {unavailable}; answered as not available")
            out.unavailable[ptype] = unavailable
        if repeat == 1:
            freq = int(d.get("frequency", -1))
            size = len(chosen) if freq <= 0 else freq
            chunks = list(enumerate(chosen[k : k + size] for k in range(0, len(chosen), size)))
        for c, chunk in chunks:
            out.jobs.append(
                ReportJob(
                    event_id=eid,
                    program_id=str(event.get("programID", "")),
                    payload_type=ptype,
                    units=units,
                    windows=chunk,
                    due_at=chunk[-1].end,
                    key=f"{eid}/{mod}/{d_no}/{c}",
                    how=how,
                )
            )
    return out
