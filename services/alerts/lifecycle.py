"""Alert lifecycle and escalation: raised → notified → acknowledged → resolved, with timers.

Pure functions on an `Alert` record. Every timer is a due time stored on the alert
(`next_escalation_at`, `next_repeat_at`, `snoozed_until`), so a scheduler that restarts picks
up exactly where the last one stopped. A "round" is one notification of a set of tiers; the
service turns each round into one recorded delivery per recipient and channel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.alerts.model import AlertKind, Severity

__all__ = [
    "DEFAULT_TIER_DELAYS_MIN",
    "REPEAT_MIN",
    "Alert",
    "AlertState",
    "Round",
    "Tier",
    "acknowledge",
    "due_rounds",
    "mark_notified",
    "new_alert",
    "next_due",
    "resolve",
    "snooze",
    "snooze_limit_min",
]


class AlertState(enum.StrEnum):
    RAISED = "raised"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class Tier(enum.IntEnum):
    PERSON = 0
    CAREGIVER = 1
    SECOND_CAREGIVER = 2
    CLINIC = 3


# Minutes after raising at which each tier is added, per severity (None: never escalates).
DEFAULT_TIER_DELAYS_MIN: dict[Severity, tuple[float, ...]] = {
    Severity.URGENT: (0.0, 5.0, 10.0, 20.0),
    Severity.WARNING: (0.0, 30.0),
    Severity.INFO: (0.0,),
}
REPEAT_MIN: dict[Severity, float | None] = {
    Severity.URGENT: 5.0,
    Severity.WARNING: 30.0,
    Severity.INFO: None,
}
# Urgent alerts cannot be silenced longer than this, whatever the caller asks for.
URGENT_SNOOZE_MAX_MIN = 15.0
WARNING_SNOOZE_MAX_MIN = 240.0


@dataclass
class Alert:
    alert_id: str
    patient_id: str
    kind: AlertKind
    severity: Severity
    state: AlertState
    message: str
    value: float | None
    raised_at: datetime
    updated_at: datetime
    tier: Tier = Tier.PERSON
    notification_count: int = 0
    next_escalation_at: datetime | None = None
    next_repeat_at: datetime | None = None
    snoozed_until: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    resolved_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.state is not AlertState.RESOLVED


@dataclass(frozen=True)
class Round:
    """Notify `tiers` of `alert_id`; `number` makes the delivery keys unique per round."""

    alert_id: str
    number: int
    tiers: tuple[Tier, ...]
    reason: str


def _delays(severity: Severity, delays: tuple[float, ...] | None) -> tuple[float, ...]:
    return delays if delays is not None else DEFAULT_TIER_DELAYS_MIN[severity]


def _schedule(alert: Alert, start: datetime, delays: tuple[float, ...]) -> None:
    """Arm the next escalation and repeat relative to `start` (raise or snooze end)."""
    nxt = int(alert.tier) + 1
    alert.next_escalation_at = start + timedelta(minutes=delays[nxt]) if nxt < len(delays) else None
    repeat = REPEAT_MIN[alert.severity]
    alert.next_repeat_at = start + timedelta(minutes=repeat) if repeat else None


def new_alert(
    alert_id: str,
    *,
    patient_id: str,
    kind: AlertKind,
    severity: Severity,
    message: str,
    value: float | None,
    now: datetime,
    delays: tuple[float, ...] | None = None,
) -> tuple[Alert, Round]:
    """A raised alert and its first round (the person)."""
    alert = Alert(
        alert_id=alert_id,
        patient_id=patient_id,
        kind=kind,
        severity=severity,
        state=AlertState.RAISED,
        message=message,
        value=value,
        raised_at=now,
        updated_at=now,
        notification_count=1,
    )
    _schedule(alert, now, _delays(severity, delays))
    return alert, Round(alert_id, 1, (Tier.PERSON,), "raised")


def due_rounds(alert: Alert, now: datetime, delays: tuple[float, ...] | None = None) -> list[Round]:
    """Advance the alert's timers to `now`; the rounds that became due (at most one per call)."""
    if alert.state is AlertState.RESOLVED:
        return []
    tiers = _delays(alert.severity, delays)
    if alert.state in (AlertState.ACKNOWLEDGED, AlertState.SNOOZED):
        if alert.snoozed_until is None or now < alert.snoozed_until:
            return []
        # Snooze over and the condition still holds: start again from the person.
        alert.state = AlertState.NOTIFIED
        alert.tier = Tier.PERSON
        alert.snoozed_until = None
        alert.notification_count += 1
        alert.updated_at = now
        _schedule(alert, now, tiers)
        return [Round(alert.alert_id, alert.notification_count, (Tier.PERSON,), "snooze ended")]
    if alert.next_escalation_at is not None and now >= alert.next_escalation_at:
        due = alert.next_escalation_at
        alert.tier = Tier(int(alert.tier) + 1)
        alert.notification_count += 1
        alert.updated_at = now
        nxt = int(alert.tier) + 1
        step_min = tiers[nxt] - tiers[nxt - 1] if nxt < len(tiers) else None
        alert.next_escalation_at = due + timedelta(minutes=step_min) if step_min else None
        return [
            Round(
                alert.alert_id,
                alert.notification_count,
                (alert.tier,),
                f"escalated to {alert.tier.name.lower()}",
            )
        ]
    if alert.next_repeat_at is not None and now >= alert.next_repeat_at:
        repeat = REPEAT_MIN[alert.severity]
        assert repeat is not None
        alert.notification_count += 1
        alert.updated_at = now
        alert.next_repeat_at = now + timedelta(minutes=repeat)
        everyone = tuple(Tier(t) for t in range(int(alert.tier) + 1))
        return [Round(alert.alert_id, alert.notification_count, everyone, "repeat")]
    return []


def next_due(alert: Alert) -> datetime | None:
    """Earliest time at which `due_rounds` could return something."""
    if alert.state is AlertState.RESOLVED:
        return None
    if alert.state in (AlertState.ACKNOWLEDGED, AlertState.SNOOZED):
        return alert.snoozed_until
    times = [t for t in (alert.next_escalation_at, alert.next_repeat_at) if t is not None]
    return min(times) if times else None


def snooze_limit_min(severity: Severity) -> float:
    return URGENT_SNOOZE_MAX_MIN if severity is Severity.URGENT else WARNING_SNOOZE_MAX_MIN


def acknowledge(alert: Alert, by: str, now: datetime) -> None:
    """Someone has seen it: stop escalating; if it still holds later, notify again."""
    if alert.state is AlertState.RESOLVED:
        return
    alert.state = AlertState.ACKNOWLEDGED
    alert.acknowledged_at = now
    alert.acknowledged_by = by
    alert.snoozed_until = now + timedelta(minutes=snooze_limit_min(alert.severity))
    alert.next_escalation_at = None
    alert.next_repeat_at = None
    alert.updated_at = now


def snooze(alert: Alert, by: str, duration_min: float, now: datetime) -> bool:
    """Silence for `duration_min`, capped per severity; True when the cap applied."""
    if alert.state is AlertState.RESOLVED:
        return False
    limit = snooze_limit_min(alert.severity)
    capped = duration_min > limit
    alert.state = AlertState.SNOOZED
    alert.acknowledged_by = alert.acknowledged_by or by
    alert.acknowledged_at = alert.acknowledged_at or now
    alert.snoozed_until = now + timedelta(minutes=min(duration_min, limit))
    alert.next_escalation_at = None
    alert.next_repeat_at = None
    alert.updated_at = now
    return capped


def resolve(alert: Alert, now: datetime) -> None:
    alert.state = AlertState.RESOLVED
    alert.resolved_at = now
    alert.next_escalation_at = None
    alert.next_repeat_at = None
    alert.snoozed_until = None
    alert.updated_at = now


def mark_notified(alert: Alert, now: datetime) -> None:
    """First delivery went out."""
    if alert.state is AlertState.RAISED:
        alert.state = AlertState.NOTIFIED
        alert.updated_at = now
