"""Prometheus metrics of the dosing engine (names are the contract in docs/observability.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from langerhans.common.v1 import common_pb2
from langerhans.dosing.v1 import dosing_pb2
from prometheus_client import Counter, Gauge

__all__ = [
    "DOSING_DECISIONS",
    "NOT_LOOPING_PEOPLE",
    "NotLoopingTracker",
    "decision_outcome",
    "record_decision",
]

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


class NotLoopingTracker:
    """People whose latest decision (within `window_s`) was `not_looping`, counted per replica.

    Decisions are keyed by patient id on the topic, so each person is counted by the replica
    that owns their partition; an entry older than the window is dropped, so a person whose
    partition moved away (or who stopped sending readings) stops counting after one window.
    """

    def __init__(
        self, *, window_s: float = 900.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[bool, float]] = {}

    def observe(self, patient_id: str, outcome: str) -> None:
        with self._lock:
            self._latest[patient_id] = (outcome == "not_looping", self._monotonic())

    def count(self) -> int:
        oldest = self._monotonic() - self._window_s
        with self._lock:
            for patient_id in [p for p, (_, at) in self._latest.items() if at < oldest]:
                del self._latest[patient_id]
            return sum(1 for blocked, _ in self._latest.values() if blocked)


_NOT_LOOPING = NotLoopingTracker()
NOT_LOOPING_PEOPLE = Gauge(
    "langerhans_dosing_not_looping_people",
    "Closed-loop people whose latest decision in the last 15 min could not dose "
    "(stale, future or missing CGM, no settings, uncertain delivery, backfill).",
)
NOT_LOOPING_PEOPLE.set_function(lambda: float(_NOT_LOOPING.count()))


def record_decision(decision: dosing_pb2.DosingDecision) -> None:
    outcome = decision_outcome(decision)
    DOSING_DECISIONS.labels(outcome=outcome).inc()
    _NOT_LOOPING.observe(decision.patient_id, outcome)
