"""`langerhans_alerts_active{state}`: open alerts per lifecycle state, counted from storage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY

from services.alerts.events import AlertTopics
from services.alerts.lifecycle import Tier
from services.alerts.main import Scheduler
from services.alerts.metrics import ALERTS_ACTIVE
from services.alerts.model import AlertKind
from services.alerts.service import Channel, EscalationPlan, Recipient
from services.runtime.clock import FixedClock
from tests.alerts.helpers import Harness, RecordingEvents, make_engine

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
PLAN = EscalationPlan((Recipient("person", Tier.PERSON, Channel.PUSH),), tier_delays_min=(0,))
STATES = ("raised", "notified", "acknowledged", "snoozed")


def gauge() -> dict[str, float | None]:
    return {s: REGISTRY.get_sample_value("langerhans_alerts_active", {"state": s}) for s in STATES}


def test_gauge_counts_open_alerts_by_state_and_survives_a_restart(tmp_path: Path) -> None:
    _engine, sessions = make_engine(tmp_path)
    clock = FixedClock(T0)
    h = Harness(sessions, clock, RecordingEvents(), PLAN)
    scheduler = Scheduler(sessions, clock, AlertTopics("a", "d"), PLAN, 3600.0)
    with h.service() as (service, _):
        for patient in ("p1", "p2", "p3", "p4"):
            service.on_reading(patient, T0, 45.0, None)  # urgent low, raised
    scheduler.run_once()
    assert gauge() == {"raised": 0, "notified": 4, "acknowledged": 0, "snoozed": 0}

    clock.advance(300)
    with h.service() as (service, repository):
        ids = {p: repository.open_alerts(p)[AlertKind.URGENT_LOW].alert_id for p in ("p1", "p2")}
        service.acknowledge(ids["p1"], "person")
        service.snooze(ids["p2"], "person", 10)
        service.on_reading("p4", clock.now(), 120.0, None)  # resolves p4's urgent low
    scheduler.run_once()
    expected = {"raised": 0, "notified": 1, "acknowledged": 1, "snoozed": 1}
    assert gauge() == expected

    # A restarted process (fresh gauge, new engine on the same store) reports the same.
    ALERTS_ACTIVE.clear()
    _engine2, sessions2 = make_engine(tmp_path)
    Scheduler(sessions2, FixedClock(T0), AlertTopics("a", "d"), PLAN, 3600.0).run_once()
    assert gauge() == expected
