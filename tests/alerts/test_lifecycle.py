"""Alert lifecycle through the service and the real (SQLite) repository."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.alerts.lifecycle import AlertState, Tier
from services.alerts.model import AlertKind
from services.alerts.service import Channel, DeliveryStatus, EscalationPlan, Recipient
from services.runtime.clock import FixedClock
from services.runtime.errors import FailedPrecondition, NotFound
from tests.alerts.helpers import Harness, RecordingEvents, make_engine

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)

PLAN = EscalationPlan(
    (
        Recipient("person", Tier.PERSON, Channel.PUSH),
        Recipient("person", Tier.PERSON, Channel.WEBHOOK, "http://127.0.0.1:9/hook"),
        Recipient("mum", Tier.CAREGIVER, Channel.PUSH),
        Recipient("mum", Tier.CAREGIVER, Channel.EMAIL, "mum@example.org"),
        Recipient("dad", Tier.SECOND_CAREGIVER, Channel.PUSH),
        Recipient("clinic", Tier.CLINIC, Channel.EMAIL, "clinic@example.org"),
    ),
    tier_delays_min=(0, 5, 10, 20),
)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    _engine, sessions = make_engine(tmp_path)
    return Harness(sessions, FixedClock(T0), RecordingEvents(), PLAN)


def reading(h: Harness, mg_dl: float) -> None:
    with h.service() as (service, _):
        service.on_reading("p1", h.clock.now(), mg_dl, None)


def advance(h: Harness, minutes: float) -> list[tuple[str, Tier, int]]:
    """Move the clock in 1-min steps, running the scheduler; deliveries recorded meanwhile."""
    out: list[tuple[str, Tier, int]] = []
    for _ in range(int(minutes)):
        h.clock.advance(60)  # type: ignore[attr-defined]
        with h.service() as (service, _):
            work = service.tick()
        out += [(d.recipient_id, d.tier, d.notification_no) for d in work.deliveries]
    return out


def open_alert(h: Harness, kind: AlertKind):
    with h.service() as (_, repository):
        return repository.open_alerts("p1").get(kind)


def test_urgent_low_notifies_person_then_escalates_on_time(harness: Harness) -> None:
    h = harness
    reading(h, 50)
    alert = open_alert(h, AlertKind.URGENT_LOW)
    assert alert is not None
    assert alert.state is AlertState.NOTIFIED  # the push went out with the raise
    with h.service() as (_, repository):
        first = repository.deliveries_of(alert.alert_id)
    assert {(d.recipient_id, d.channel) for d in first} == {
        ("person", Channel.PUSH),
        ("person", Channel.WEBHOOK),
    }
    sent = advance(h, 4)
    assert all(r == "person" for r, _, _ in sent) or not sent
    sent = advance(h, 1)  # minute 5: the caregiver joins
    assert ("mum", Tier.CAREGIVER, 2) in sent
    sent = advance(h, 5)  # minute 10: second caregiver (and a repeat for everyone so far)
    assert any(r == "dad" for r, _, _ in sent)
    sent = advance(h, 10)  # minute 20: the clinic
    assert any(r == "clinic" for r, _, _ in sent)


def test_acknowledge_stops_escalation_and_snooze_is_capped(harness: Harness) -> None:
    h = harness
    reading(h, 50)
    alert = open_alert(h, AlertKind.URGENT_LOW)
    with h.service() as (service, _):
        service.acknowledge(alert.alert_id, "person")
    assert not advance(h, 14)  # nobody is bothered for 14 min
    with h.service() as (service, _):
        _, capped = service.snooze(alert.alert_id, "person", 120)
    assert capped  # urgent low cannot be silenced for 2 h
    sent = advance(h, 15)
    assert ("person", Tier.PERSON, 2) in sent  # still low after the capped snooze: again


def test_wobbling_reading_does_not_re_alert(harness: Harness) -> None:
    h = harness
    for value in (69, 71, 68, 72, 69, 74, 70):
        reading(h, value)
        h.clock.advance(300)  # type: ignore[attr-defined]
    raised = [c for c in h.events.changes if c[1] == "low" and c[3] == "raised"]
    assert len(raised) == 1
    reading(h, 82)
    assert open_alert(h, AlertKind.LOW) is None
    resolved = [c for c in h.events.changes if c[1] == "low" and c[3] == "condition cleared"]
    assert len(resolved) == 1


def test_timers_survive_a_restart(harness: Harness, tmp_path: Path) -> None:
    h = harness
    reading(h, 50)
    advance(h, 3)
    # A new process: new engine, new service objects, same database.
    _engine, sessions = make_engine(tmp_path)
    h2 = Harness(sessions, h.clock, RecordingEvents(), PLAN)
    sent = advance(h2, 2)
    assert ("mum", Tier.CAREGIVER, 2) in sent


def test_deliveries_are_recorded_once_per_key(harness: Harness) -> None:
    h = harness
    reading(h, 50)
    advance(h, 6)
    alert = open_alert(h, AlertKind.URGENT_LOW)
    with h.service() as (_, repository):
        rows = repository.deliveries_of(alert.alert_id)
    keys = [d.delivery_key for d in rows]
    assert len(keys) == len(set(keys))
    pending = [d for d in rows if d.status is DeliveryStatus.PENDING]
    assert {d.channel for d in pending} <= {Channel.WEBHOOK, Channel.EMAIL}


def test_resolved_alert_cannot_be_acknowledged(harness: Harness) -> None:
    h = harness
    reading(h, 50)
    alert = open_alert(h, AlertKind.URGENT_LOW)
    h.clock.advance(300)  # type: ignore[attr-defined]
    reading(h, 90)
    with h.service() as (service, _), pytest.raises(FailedPrecondition):
        service.acknowledge(alert.alert_id, "person")
    with h.service() as (service, _), pytest.raises(NotFound):
        service.acknowledge("no-such-alert", "person")


def test_no_cgm_data_by_the_scheduler(harness: Harness) -> None:
    h = harness
    reading(h, 120)
    h.clock.advance(21 * 60)  # type: ignore[attr-defined]
    with h.service() as (service, _):
        service.reevaluate("p1")
    assert open_alert(h, AlertKind.NO_CGM_DATA) is not None
    reading(h, 121)
    assert open_alert(h, AlertKind.NO_CGM_DATA) is None


def test_warning_alerts_do_not_escalate(harness: Harness) -> None:
    h = harness
    reading(h, 68)
    sent = advance(h, 29)
    assert all(t is Tier.PERSON for _, t, _ in sent)
