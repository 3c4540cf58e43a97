"""`langerhans_dosing_not_looping_people`: people the loop could not dose for, right now."""

from __future__ import annotations

from langerhans.common.v1 import common_pb2
from langerhans.dosing.v1 import dosing_pb2
from prometheus_client import REGISTRY

from services.dosing_engine.metrics import NotLoopingTracker, record_decision


def _blocked(patient_id: str) -> dosing_pb2.DosingDecision:
    decision = dosing_pb2.DosingDecision(
        patient_id=patient_id, enacted=False, mode=common_pb2.LOOP_MODE_CLOSED_LOOP_SMB
    )
    decision.reasons.add(code=dosing_pb2.DOSING_REASON_CODE_STALE_CGM)
    return decision


def test_a_person_counts_until_their_loop_runs_again() -> None:
    now_s = [0.0]
    tracker = NotLoopingTracker(window_s=900.0, monotonic=lambda: now_s[0])
    tracker.observe("alice", "not_looping")
    tracker.observe("bob", "not_looping")
    tracker.observe("carol", "temp_basal")
    assert tracker.count() == 2
    tracker.observe("alice", "smb")  # fresh CGM again: alice loops
    assert tracker.count() == 1


def test_a_person_heard_from_no_more_stops_counting_after_the_window() -> None:
    now_s = [0.0]
    tracker = NotLoopingTracker(window_s=900.0, monotonic=lambda: now_s[0])
    tracker.observe("bob", "not_looping")
    now_s[0] = 899.0
    assert tracker.count() == 1
    now_s[0] = 901.0  # bob's partition moved to another replica, which counts him there
    assert tracker.count() == 0


def test_the_exported_gauge_follows_published_decisions() -> None:
    def exported() -> float:
        value = REGISTRY.get_sample_value("langerhans_dosing_not_looping_people")
        assert value is not None
        return value

    before = exported()
    record_decision(_blocked("gauge-test-person"))
    assert exported() == before + 1
    looping = dosing_pb2.DosingDecision(patient_id="gauge-test-person", enacted=True)
    looping.recommendation.micro_bolus.insulin_u = 0.2
    record_decision(looping)
    assert exported() == before
