"""A simple signal's ``level`` names a cap of the site's ``[tariff.dr_levels_kw]``; a level
the site has no cap for is refused at the door (422, naming the levels it has), as a class
it has not got is. Before (the docs walk, session 23): taken with 202, after which every
re-plan failed while it was in force ("level 2 has no cap"), /healthz 503, the site held at
the fail-safe cap, and the sender told it had been accepted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.serve import Served
from tests.test_daemon import MEMORY_SITE, now_iso, post_signal, serving

#: The memory site with no cap for level 2.
NO_LEVEL_2 = MEMORY_SITE.replace('"2" = 40\n', "")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    assert NO_LEVEL_2 != MEMORY_SITE
    with serving(tmp_path, monkeypatch, NO_LEVEL_2) as s:
        yield s


def _stored(s: Served) -> list[object]:
    signals: list[object] = httpx.get(s.url + "/v1/signals", timeout=10).json()["signals"]
    return signals


@pytest.mark.parametrize("kind", ["curtail", "alert"])
def test_a_level_the_site_has_no_cap_for_is_refused_naming_those_it_has(
    site: Served, kind: str
) -> None:
    body = {"id": "lvl-2", "type": kind, "start": now_iso(), "duration": "1h", "level": 2}
    r = post_signal(site.url, [body])
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["field"] == "[0].level", detail
    problem = detail[0]["problem"]
    assert "level 2" in problem and "1, 3" in problem and "dr_levels_kw" in problem, problem
    assert _stored(site) == []


def test_the_levels_the_site_has_and_level_0_are_taken(site: Served) -> None:
    start = now_iso()
    for k, level in enumerate((1, 3, 0)):
        body = {"id": f"lvl-ok-{k}", "type": "curtail", "start": start, "duration": "1h"}
        r = post_signal(site.url, {**body, "level": level})
        assert r.status_code == 202, r.text
    assert len(_stored(site)) == 3


def test_a_signal_already_over_is_said_so_in_the_answer(site: Served) -> None:
    """The bad-input walk (session 23, L5): a signal that had ended before it was sent got
    202 `ids: [...]` and nothing else, then was missing from GET /v1/signals (which lists
    those in force or to come): a sender who mistyped the year heard nothing."""
    body = {"id": "over", "type": "curtail", "start": "1971-01-01T00:00:00Z", "duration": "30min"}
    now = {"id": "now", "type": "curtail", "start": now_iso(), "duration": "1h", "level": 1}
    r = post_signal(site.url, [body | {"limit_kw": 40}, now])
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["ids"] == ["over", "now"], answer
    assert answer["ended"] == ["over"], answer
    assert [s["id"] for s in _stored(site)] == ["now"]  # type: ignore[index]


def test_an_openadr_notification_at_a_level_the_site_has_no_cap_for_is_refused(
    site: Served,
) -> None:
    """The aggregator's walk (session 24, D10): a SIMPLE level 2 notification on a site
    without that cap got 202, after which every re-plan failed (/healthz 503, the fail-safe
    cap). The docs' reason (an event the VEN polls has no answer to refuse it with) does
    not hold for the notification endpoint, which answers: it is a 422, as the webhook's."""
    from datetime import UTC, datetime

    from tests.test_daemon import OADR_TOKEN

    start = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event = {
        "id": "t-l2", "programID": "p", "eventName": "shed",
        "intervalPeriod": {"start": start, "duration": "PT5M"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
    }  # fmt: skip
    body = {"objectType": "EVENT", "operation": "CREATE", "object": event}
    r = httpx.post(site.url + "/openadr3/notifications", json=body,
                   headers={"Authorization": f"Bearer {OADR_TOKEN}"}, timeout=10)  # fmt: skip
    assert r.status_code == 422, r.text
    assert "level 2 has no cap" in r.text and "1, 3" in r.text, r.text
    assert _stored(site) == []
