"""Whatever a VTN sends, the reading of it ends in events that validate or in an error that
names the field, never in another exception (a traceback would be a 500)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.signals import GridEvent
from models.site import OpenADR, OpenADRResource
from scheduler.service.openadr import OpenADRError, read_notification

NOW = datetime(2026, 8, 10, 17, 0, tzinfo=UTC)
SITE = OpenADR(ven_name="v", resources=(OpenADRResource(name="m"),))
TYPES = ["PRICE", "SIMPLE", "IMPORT_CAPACITY_LIMIT", "DISPATCH_SETPOINT", "GHG", "ALERT_OTHER"]
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["0001-01-01", "2026-08-10T18:00:00Z", "PT1H", "P9999Y",
                                          "PT0S", "KW", "KWH", "USD", "PERCENT"]),
)  # fmt: skip
value = st.recursive(
    scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)  # fmt: skip
period = st.fixed_dictionaries(
    {},
    optional={
        "start": st.sampled_from(["0001-01-01", "2026-08-10T18:00:00Z", "nope"]) | value,
        "duration": st.sampled_from(["PT1H", "PT0S", "P9999Y", "PT30M"]) | value,
        "randomizeStart": st.sampled_from(["PT5M", "P0S"]) | value,
    },
)
payload = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | value, "values": st.lists(value, max_size=3) | value}
)
interval = st.fixed_dictionaries(
    {"id": st.integers(0, 5) | value, "payloads": st.lists(payload, max_size=3) | value},
    optional={"intervalPeriod": period | value},
)
event = st.fixed_dictionaries(
    {"id": st.sampled_from(["e1", "e-2"]) | value},
    optional={
        "programID": st.sampled_from(["p"]) | value,
        "priority": st.integers(0, 9) | value,
        "targets": st.lists(st.sampled_from(["v", "m", "x"]), max_size=2) | value,
        "duration": st.sampled_from(["PT3H", "PT0S", "P9999Y", "PT30M"]) | value,
        "intervalPeriod": period | value,
        "payloadDescriptors": st.lists(
            st.fixed_dictionaries({"payloadType": st.sampled_from(TYPES)},
                                  optional={"units": value, "currency": value}), max_size=2,
        ) | value,
        "reportDescriptors": value,
        "intervals": st.lists(interval, max_size=3) | value,
    },
)  # fmt: skip
notification = st.fixed_dictionaries(
    {
        "objectType": st.sampled_from(["EVENT", "PROGRAM"]) | value,
        "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", "POST", "READ"]) | value,
        "object": event | value,
    }
)


@settings(max_examples=250, deadline=None)
@given(notification)
def test_any_notification_reads_or_names_the_field(body: dict[str, Any]) -> None:
    try:
        reading = read_notification(body, NOW, SITE)
    except OpenADRError as exc:
        assert exc.path and exc.reason
        return
    for ev in reading.events:
        with contextlib.suppress(ValidationError):  # the API answers it 422, with the field
            GridEvent.model_validate(ev)
