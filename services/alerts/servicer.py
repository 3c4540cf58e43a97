# ruff: noqa: N802 (gRPC method names are fixed by the contract)
"""AlertsService over gRPC: translates requests to service/repository calls and back."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar

import grpc
from langerhans.alerts.v1 import alerts_pb2
from langerhans.alerts.v1 import alerts_service_pb2 as pb
from langerhans.alerts.v1 import alerts_service_pb2_grpc as pb_grpc
from sqlalchemy.orm import Session, sessionmaker

from services.alerts.events import (
    CHANNELS,
    SEVERITIES,
    STATES,
    TYPES,
    AlertTopics,
    OutboxAlertEvents,
    alert_to_proto,
)
from services.alerts.lifecycle import Tier
from services.alerts.model import AlertSettings, Severity
from services.alerts.repository import AlertRepository
from services.alerts.service import AlertsService, EscalationPlan, Recipient
from services.runtime.clock import Clock
from services.runtime.db import session_scope
from services.runtime.errors import FieldViolation, InvalidArgument, NotFound

__all__ = ["AlertsServicer"]

Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
MAX_PAGE_SIZE = 500
_STATE_OF = {v: k for k, v in STATES.items()}
_CHANNEL_OF = {v: k for k, v in CHANNELS.items()}
_SEVERITY_OF = {v: k for k, v in SEVERITIES.items()}
_KIND_OF = {v: k for k, v in TYPES.items()}


def _required(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required", [FieldViolation(name, "empty")])


def rules_to_proto(patient_id: str, version: int, s: AlertSettings) -> alerts_pb2.AlertRules:
    return alerts_pb2.AlertRules(
        patient_id=patient_id,
        version=version,
        urgent_low_mg_dl=s.urgent_low_mg_dl,
        low_mg_dl=s.low_mg_dl,
        high_mg_dl=s.high_mg_dl,
        urgent_low_soon_horizon_min=int(s.urgent_low_soon_horizon_min),
        rapid_change_mg_dl_per_min=s.rapid_rate_mg_dl_per_min,
        no_cgm_data_min=int(s.no_data_min),
        not_looping_min=int(s.not_looping_min),
        reservoir_low_u=s.reservoir_low_u,
        reservoir_critical_u=s.reservoir_very_low_u,
        battery_low_pct=s.battery_low_pct,
        battery_critical_pct=s.battery_very_low_pct,
        pump_suspended_max_min=int(s.suspended_max_min),
        types=[
            alerts_pb2.AlertTypeSettings(type=t, enabled=k not in s.disabled)
            for k, t in TYPES.items()
        ],
    )


def rules_from_proto(rules: alerts_pb2.AlertRules, current: AlertSettings) -> AlertSettings:
    """Apply the non-zero fields of `rules`, refusing unsafe thresholds."""
    s = AlertSettings.from_json(current.to_json())
    violations: list[FieldViolation] = []

    def take(name: str, value: float, low: float, high: float) -> float | None:
        if not value:
            return None
        if not low <= value <= high:
            violations.append(FieldViolation(name, f"must be within {low}–{high}"))
            return None
        return value

    if (v := take("urgent_low_mg_dl", rules.urgent_low_mg_dl, 40, 70)) is not None:
        s.urgent_low_mg_dl = v
    if (v := take("low_mg_dl", rules.low_mg_dl, 55, 100)) is not None:
        s.low_mg_dl = v
        s.low_resolve_mg_dl = v + 10
    if (v := take("high_mg_dl", rules.high_mg_dl, 120, 400)) is not None:
        s.high_mg_dl = v
        s.high_resolve_mg_dl = v - 20
    if (v := take("no_cgm_data_min", rules.no_cgm_data_min, 10, 240)) is not None:
        s.no_data_min = v
    if (v := take("not_looping_min", rules.not_looping_min, 15, 240)) is not None:
        s.not_looping_min = v
    if (v := take("reservoir_low_u", rules.reservoir_low_u, 5, 100)) is not None:
        s.reservoir_low_u = v
    if (v := take("battery_low_pct", rules.battery_low_pct, 10, 80)) is not None:
        s.battery_low_pct = v
    if violations:
        raise InvalidArgument("alert rules are outside safe limits", violations)
    # Urgent low and urgent low soon cannot be switched off.
    s.disabled = frozenset(
        _KIND_OF[t.type]
        for t in rules.types
        if not t.enabled and t.type in _KIND_OF and t.type not in _ALWAYS_ON
    )
    return s


_ALWAYS_ON = {alerts_pb2.ALERT_TYPE_URGENT_LOW, alerts_pb2.ALERT_TYPE_URGENT_LOW_SOON}


class AlertsServicer(pb_grpc.AlertsServiceServicer):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        topics: AlertTopics,
        default_plan: EscalationPlan | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._topics = topics
        self._default_plan = default_plan

    async def _in_transaction(self, work: Callable[[AlertRepository, AlertsService], T]) -> T:
        def run() -> T:
            with session_scope(self._sessions) as session:
                repository = AlertRepository(session, self._default_plan)
                events = OutboxAlertEvents(session, self._clock, self._topics)
                return work(repository, AlertsService(repository, events, self._clock))

        return await asyncio.to_thread(run)

    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: Ctx
    ) -> pb.ListAlertsResponse:
        _required(request.patient_id, "patient_id")
        size = min(request.page_size or 50, MAX_PAGE_SIZE)
        after = None
        if request.page_token:
            try:
                raw = base64.urlsafe_b64decode(request.page_token).decode().split("|", 1)
                after = (int(raw[0]), raw[1])
            except (ValueError, IndexError) as exc:
                raise InvalidArgument(
                    "page_token is not valid", [FieldViolation("page_token", "not ours")]
                ) from exc
        states = [_STATE_OF[s] for s in request.states if s in _STATE_OF]
        span = request.range
        start = span.start_time.ToDatetime(UTC) if span.HasField("start_time") else None
        end = span.end_time.ToDatetime(UTC) if span.HasField("end_time") else None

        def work(repo: AlertRepository, _svc: AlertsService) -> pb.ListAlertsResponse:
            found = repo.list_alerts(
                request.patient_id, states=states, start=start, end=end, after=after,
                limit=size + 1,
            )  # fmt: skip
            response = pb.ListAlertsResponse(alerts=[alert_to_proto(a) for a in found[:size]])
            if len(found) > size:
                last = found[size - 1]
                cursor = f"{round(last.raised_at.timestamp() * 1e6)}|{last.alert_id}"
                response.next_page_token = base64.urlsafe_b64encode(cursor.encode()).decode()
            return response

        return await self._in_transaction(work)

    async def GetAlert(self, request: pb.GetAlertRequest, context: Ctx) -> pb.GetAlertResponse:
        _required(request.alert_id, "alert_id")

        def work(repo: AlertRepository, _svc: AlertsService) -> pb.GetAlertResponse:
            alert = repo.get_alert(request.alert_id)
            if alert is None:
                raise NotFound(f"no alert {request.alert_id}")
            return pb.GetAlertResponse(alert=alert_to_proto(alert))

        return await self._in_transaction(work)

    async def AcknowledgeAlert(
        self, request: pb.AcknowledgeAlertRequest, context: Ctx
    ) -> pb.AcknowledgeAlertResponse:
        _required(request.alert_id, "alert_id")
        _required(request.acknowledged_by, "acknowledged_by")

        def work(_repo: AlertRepository, svc: AlertsService) -> pb.AcknowledgeAlertResponse:
            alert = svc.acknowledge(request.alert_id, request.acknowledged_by)
            return pb.AcknowledgeAlertResponse(alert=alert_to_proto(alert))

        return await self._in_transaction(work)

    async def SnoozeAlert(
        self, request: pb.SnoozeAlertRequest, context: Ctx
    ) -> pb.SnoozeAlertResponse:
        _required(request.alert_id, "alert_id")
        _required(request.snoozed_by, "snoozed_by")
        if not request.duration_min:
            raise InvalidArgument("duration_min must be > 0", [FieldViolation("duration_min", "0")])

        def work(_repo: AlertRepository, svc: AlertsService) -> pb.SnoozeAlertResponse:
            alert, capped = svc.snooze(request.alert_id, request.snoozed_by, request.duration_min)
            return pb.SnoozeAlertResponse(alert=alert_to_proto(alert), capped=capped)

        return await self._in_transaction(work)

    async def GetAlertRules(
        self, request: pb.GetAlertRulesRequest, context: Ctx
    ) -> pb.GetAlertRulesResponse:
        _required(request.patient_id, "patient_id")

        def work(repo: AlertRepository, _svc: AlertsService) -> pb.GetAlertRulesResponse:
            settings = repo.settings(request.patient_id)
            version = repo.settings_version(request.patient_id)
            return pb.GetAlertRulesResponse(
                rules=rules_to_proto(request.patient_id, version, settings)
            )

        return await self._in_transaction(work)

    async def UpdateAlertRules(
        self, request: pb.UpdateAlertRulesRequest, context: Ctx
    ) -> pb.UpdateAlertRulesResponse:
        _required(request.rules.patient_id, "rules.patient_id")
        patient = request.rules.patient_id

        def work(repo: AlertRepository, _svc: AlertsService) -> pb.UpdateAlertRulesResponse:
            settings = rules_from_proto(request.rules, repo.settings(patient))
            version = repo.put_settings(patient, settings)
            return pb.UpdateAlertRulesResponse(rules=rules_to_proto(patient, version, settings))

        return await self._in_transaction(work)

    async def GetEscalationPolicy(
        self, request: pb.GetEscalationPolicyRequest, context: Ctx
    ) -> pb.GetEscalationPolicyResponse:
        _required(request.patient_id, "patient_id")

        def work(repo: AlertRepository, _svc: AlertsService) -> pb.GetEscalationPolicyResponse:
            plan = repo.plan(request.patient_id)
            version = repo.plan_version(request.patient_id)
            return pb.GetEscalationPolicyResponse(
                policy=_plan_to_proto(request.patient_id, version, plan)
            )

        return await self._in_transaction(work)

    async def SetEscalationPolicy(
        self, request: pb.SetEscalationPolicyRequest, context: Ctx
    ) -> pb.SetEscalationPolicyResponse:
        policy = request.policy
        _required(policy.patient_id, "policy.patient_id")
        plan = _plan_from_proto(policy)

        def work(repo: AlertRepository, _svc: AlertsService) -> pb.SetEscalationPolicyResponse:
            version = repo.put_plan(policy.patient_id, plan)
            return pb.SetEscalationPolicyResponse(
                policy=_plan_to_proto(policy.patient_id, version, plan)
            )

        return await self._in_transaction(work)


def _plan_to_proto(
    patient_id: str, version: int, plan: EscalationPlan
) -> alerts_pb2.EscalationPolicy:
    steps = []
    for tier in Tier:
        people = [r for r in plan.recipients if r.tier is tier]
        if not people and tier is not Tier.PERSON:
            continue
        delay = plan.tier_delays_min[int(tier)] if int(tier) < len(plan.tier_delays_min) else 0
        by_id: dict[str, alerts_pb2.EscalationRecipient] = {}
        for r in people:
            entry = by_id.setdefault(
                r.recipient_id, alerts_pb2.EscalationRecipient(recipient_id=r.recipient_id)
            )
            entry.channels.append(CHANNELS[r.channel])
            if r.channel.value == "email":
                entry.email_address = r.address
            elif r.channel.value == "webhook":
                entry.webhook_url = r.address
        steps.append(
            alerts_pb2.EscalationStep(
                tier=int(tier) + 1,  # type: ignore[arg-type]
                delay_min=int(delay),
                recipients=list(by_id.values()),
            )
        )
    return alerts_pb2.EscalationPolicy(
        patient_id=patient_id,
        version=version,
        steps=steps,
        min_escalation_severity=SEVERITIES[plan.min_escalation_severity],
    )


def _plan_from_proto(policy: alerts_pb2.EscalationPolicy) -> EscalationPlan:
    violations: list[FieldViolation] = []
    recipients: list[Recipient] = []
    delays = [0.0, 5.0, 10.0, 20.0]
    for i, step in enumerate(policy.steps):
        if step.tier == alerts_pb2.ESCALATION_TIER_UNSPECIFIED:
            violations.append(FieldViolation(f"steps[{i}].tier", "unspecified"))
            continue
        tier = Tier(int(step.tier) - 1)
        if tier is not Tier.PERSON:
            delays[int(tier)] = float(step.delay_min)
        for j, person in enumerate(step.recipients):
            for channel in person.channels:
                kind = _CHANNEL_OF.get(channel)
                if kind is None:
                    violations.append(FieldViolation(f"steps[{i}].recipients[{j}]", "channel"))
                    continue
                address = {"email": person.email_address, "webhook": person.webhook_url}.get(
                    kind.value, ""
                )
                if kind.value != "push" and not address:
                    violations.append(
                        FieldViolation(
                            f"steps[{i}].recipients[{j}]", f"{kind.value} needs an address"
                        )
                    )
                    continue
                if kind.value == "webhook" and not address.startswith(("https://", "http://")):
                    violations.append(
                        FieldViolation(f"steps[{i}].recipients[{j}].webhook_url", "not a URL")
                    )
                    continue
                recipients.append(Recipient(person.recipient_id, tier, kind, address))
    if sorted(delays) != delays:
        violations.append(FieldViolation("steps", "later tiers must not come before earlier ones"))
    if violations:
        raise InvalidArgument("escalation policy is not valid", violations)
    severity = _SEVERITY_OF.get(policy.min_escalation_severity, Severity.URGENT)
    return EscalationPlan(
        recipients=tuple(recipients),
        tier_delays_min=tuple(delays),
        min_escalation_severity=severity,
    )
