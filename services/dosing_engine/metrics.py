"""Prometheus metrics of the dosing engine (names are the contract in docs/observability.md)."""

from __future__ import annotations

from langerhans.common.v1 import common_pb2
from langerhans.dosing.v1 import dosing_pb2
from prometheus_client import Counter

__all__ = ["DOSING_DECISIONS", "decision_outcome", "record_decision"]

DOSING_DECISIONS = Counter(
    "langerhans_dosing_decisions_total",
    "Dosing decisions published, by outcome (what the decision does to delivery).",
    ["outcome"],
)


# Reasons that mean the loop could not act for this person (not merely "nothing to change").
NOT_LOOPING_REASONS = frozenset(
    {
        dosing_pb2.DOSING_REASON_CODE_STALE_CGM,
        dosing_pb2.DOSING_REASON_CODE_FUTURE_CGM,
        dosing_pb2.DOSING_REASON_CODE_NO_CGM,
        dosing_pb2.DOSING_REASON_CODE_NO_SETTINGS,
        dosing_pb2.DOSING_REASON_CODE_UNCERTAIN_DELIVERY,
        dosing_pb2.DOSING_REASON_CODE_BACKFILL,
    }
)
CLOSED_LOOP_MODES = frozenset(
    {common_pb2.LOOP_MODE_CLOSED_LOOP_TEMP_BASAL, common_pb2.LOOP_MODE_CLOSED_LOOP_SMB}
)


def decision_outcome(decision: dosing_pb2.DosingDecision) -> str:
    """What a decision does: `smb`, `temp_basal`, `cancel_temp_basal`, `suspend` (a command
    was issued), `keep` (nothing to change), `recommend_only` (open loop or suspend-only), or
    `not_looping` (a closed-loop person the engine could not dose for: stale, future or missing
    CGM, no settings, uncertain delivery)."""
    recommendation = decision.recommendation
    if not decision.enacted:
        if decision.mode not in CLOSED_LOOP_MODES:
            return "recommend_only"
        blocked = any(reason.code in NOT_LOOPING_REASONS for reason in decision.reasons)
        return "not_looping" if blocked else "keep"
    if recommendation.HasField("micro_bolus") and recommendation.micro_bolus.insulin_u > 0:
        return "smb"
    basal = recommendation.WhichOneof("basal")
    return {
        "set_temp_basal": "temp_basal",
        "cancel_temp_basal": "cancel_temp_basal",
        "suspend": "suspend",
    }.get(basal or "", "keep")


def record_decision(decision: dosing_pb2.DosingDecision) -> None:
    DOSING_DECISIONS.labels(outcome=decision_outcome(decision)).inc()
