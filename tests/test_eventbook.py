"""The daemon's in-memory events: ended ones leave, caps are kept apart, updates replace."""

from __future__ import annotations

from datetime import UTC, datetime

from models.signals import GridEvent
from scheduler.service.eventbook import EventBook

T0 = datetime(2026, 8, 10, 17, 0, tzinfo=UTC).timestamp()


def ev(id_: str, type_: str, start_s: float, minutes: int, **kw: float) -> GridEvent:
    return GridEvent(
        id=id_,
        type=type_,  # type: ignore[arg-type]
        start=datetime.fromtimestamp(T0 + start_s, UTC),
        duration=f"{minutes}min",
        **kw,  # type: ignore[arg-type]
    )


def test_ended_events_leave_the_book() -> None:
    book = EventBook(
        [
            ev("p1", "price", 0, 5, price=40.0),
            ev("p2", "price", 300, 5, price=50.0),
            ev("c1", "curtail", 0, 60, limit_kw=1000.0),
        ]
    )
    assert {e.id for e in book.live(T0)} == {"p1", "p2", "c1"}
    assert {e.id for e in book.live(T0 + 300)} == {"p2", "c1"}  # p1 ended at its end
    assert "p1" not in book and len(book) == 2
    assert {e.id for e in book.live(T0 + 3600)} == set()
    assert len(book) == 0


def test_caps_in_force_are_only_started_curtails_and_alerts() -> None:
    book = EventBook([ev(f"p{i}", "price", 0, 60, price=30.0) for i in range(500)])
    book.put(ev("later", "curtail", 600, 10, limit_kw=500.0))
    book.put(ev("now", "alert", -60, 10, level=2))
    assert [e.id for e in book.caps_in_force(T0)] == ["now"]
    assert [e.id for e in book.caps_in_force(T0 + 600)] == ["later"]  # "now" ended at +540
    assert book.caps_in_force(T0 + 1200) == []
    assert len(book) == 500  # the prices go on to T0 + 3600


def test_an_update_replaces_and_can_stop_being_a_cap() -> None:
    book = EventBook([ev("x", "curtail", 0, 60, limit_kw=100.0)])
    book.put(ev("x", "price", 0, 60, price=20.0))
    assert book.caps_in_force(T0 + 1) == []
    assert [e.type.value for e in book.live(T0)] == ["price"]
    # a longer update moves the end: the event is kept past its first end
    book.put(ev("x", "price", 0, 120, price=20.0))
    assert [e.id for e in book.live(T0 + 90 * 60)] == ["x"]


def test_drops_by_id_and_prefix() -> None:
    book = EventBook(
        [
            ev("ven:a", "curtail", 0, 60, limit_kw=1.0),
            ev("ven:b", "price", 0, 60, price=1.0),
            ev("other", "curtail", 0, 60, limit_kw=2.0),
        ]
    )
    book.drop_prefix("ven:")
    assert [e.id for e in book.live(T0)] == ["other"]
    book.drop("other")
    book.drop("never-there")
    assert book.caps_in_force(T0) == [] and len(book) == 0


def test_an_update_counts_as_the_latest_received() -> None:
    """Equal-priority overlapping prices: the later in the list wins (scheduler.planner.inputs).
    The store orders by the time of the latest write after a restart, so an update goes
    to the end here too; memory and a restarted daemon agree."""
    book = EventBook([ev("a", "price", 0, 60, price=40.0), ev("b", "price", 0, 60, price=90.0)])
    book.put(ev("a", "price", 0, 60, price=45.0))
    assert [(e.id, e.price) for e in book.live(T0)] == [("b", 90.0), ("a", 45.0)]
