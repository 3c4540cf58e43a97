"""AlertsService gRPC methods over the real repository (called directly, no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from langerhans.alerts.v1 import alerts_pb2
from langerhans.alerts.v1 import alerts_service_pb2 as pb

from services.alerts.events import AlertTopics
from services.alerts.servicer import AlertsServicer
from services.runtime.clock import FixedClock
from services.runtime.errors import InvalidArgument
from tests.alerts.helpers import Harness, RecordingEvents, make_engine

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AlertsServicer, Harness]:
    _engine, sessions = make_engine(tmp_path)
    clock = FixedClock(T0)
    return AlertsServicer(sessions, clock, AlertTopics()), Harness(
        sessions, clock, RecordingEvents()
    )


async def test_rules_are_validated_and_versioned(setup) -> None:
    servicer, _ = setup
    rules = alerts_pb2.AlertRules(patient_id="p1", high_mg_dl=200, low_mg_dl=75)
    updated = await servicer.UpdateAlertRules(pb.UpdateAlertRulesRequest(rules=rules), None)
    assert (updated.rules.version, updated.rules.high_mg_dl, updated.rules.low_mg_dl) == (
        1,
        200,
        75,
    )
    bad = alerts_pb2.AlertRules(patient_id="p1", urgent_low_mg_dl=30)
    with pytest.raises(InvalidArgument) as caught:
        await servicer.UpdateAlertRules(pb.UpdateAlertRulesRequest(rules=bad), None)
    assert caught.value.violations[0].field == "urgent_low_mg_dl"
    off = alerts_pb2.AlertRules(
        patient_id="p1",
        types=[
            alerts_pb2.AlertTypeSettings(type=alerts_pb2.ALERT_TYPE_URGENT_LOW, enabled=False),
            alerts_pb2.AlertTypeSettings(type=alerts_pb2.ALERT_TYPE_HIGH, enabled=False),
        ],
    )
    got = await servicer.UpdateAlertRules(pb.UpdateAlertRulesRequest(rules=off), None)
    enabled = {t.type: t.enabled for t in got.rules.types}
    assert enabled[alerts_pb2.ALERT_TYPE_URGENT_LOW]  # cannot be switched off
    assert not enabled[alerts_pb2.ALERT_TYPE_HIGH]


async def test_policy_round_trip_and_refusals(setup) -> None:
    servicer, _ = setup
    policy = alerts_pb2.EscalationPolicy(
        patient_id="p1",
        steps=[
            alerts_pb2.EscalationStep(
                tier=alerts_pb2.ESCALATION_TIER_PERSON,
                recipients=[
                    alerts_pb2.EscalationRecipient(
                        recipient_id="p1", channels=[alerts_pb2.ALERT_CHANNEL_PUSH]
                    )
                ],
            ),
            alerts_pb2.EscalationStep(
                tier=alerts_pb2.ESCALATION_TIER_CAREGIVER,
                delay_min=3,
                recipients=[
                    alerts_pb2.EscalationRecipient(
                        recipient_id="mum",
                        channels=[alerts_pb2.ALERT_CHANNEL_EMAIL],
                        email_address="mum@example.org",
                    )
                ],
            ),
        ],
    )
    await servicer.SetEscalationPolicy(pb.SetEscalationPolicyRequest(policy=policy), None)
    got = await servicer.GetEscalationPolicy(pb.GetEscalationPolicyRequest(patient_id="p1"), None)
    steps = {s.tier: s for s in got.policy.steps}
    assert steps[alerts_pb2.ESCALATION_TIER_CAREGIVER].delay_min == 3
    assert steps[alerts_pb2.ESCALATION_TIER_CAREGIVER].recipients[0].email_address == (
        "mum@example.org"
    )
    policy.steps[1].recipients[0].email_address = ""
    with pytest.raises(InvalidArgument):
        await servicer.SetEscalationPolicy(pb.SetEscalationPolicyRequest(policy=policy), None)


async def test_acknowledge_and_capped_snooze_through_the_api(setup) -> None:
    servicer, harness = setup
    with harness.service() as (service, _):
        work = service.on_reading("p1", T0, 50, None)
    alert_id = work.raised[0].alert_id
    listed = await servicer.ListAlerts(pb.ListAlertsRequest(patient_id="p1"), None)
    assert [a.alert_id for a in listed.alerts] == [alert_id]
    acked = await servicer.AcknowledgeAlert(
        pb.AcknowledgeAlertRequest(alert_id=alert_id, acknowledged_by="mum"), None
    )
    assert acked.alert.state == alerts_pb2.ALERT_STATE_ACKNOWLEDGED
    assert acked.alert.acknowledged_by == "mum"
    snoozed = await servicer.SnoozeAlert(
        pb.SnoozeAlertRequest(alert_id=alert_id, duration_min=60, snoozed_by="mum"), None
    )
    assert snoozed.capped
    assert snoozed.alert.snoozed_until.ToDatetime(UTC) == datetime(2026, 3, 2, 12, 15, tzinfo=UTC)
    with pytest.raises(InvalidArgument):
        await servicer.ListAlerts(pb.ListAlertsRequest(patient_id=""), None)
