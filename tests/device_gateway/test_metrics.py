"""Operators see commands by outcome and decisions by what they do."""

from __future__ import annotations

from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2

from services.device_gateway.metrics import (
    PUMP_COMMANDS,
    command_outcome,
    record_command_transition,
)
from services.dosing_engine.metrics import decision_outcome


def test_command_states_are_named_for_dashboards() -> None:
    assert command_outcome(device_pb2.PUMP_COMMAND_STATE_EXECUTED) == "executed"
    assert command_outcome(device_pb2.PUMP_COMMAND_STATE_EXPIRED) == "expired"
    assert command_outcome(9999) == "unknown"


def test_each_transition_is_counted() -> None:
    counter = PUMP_COMMANDS.labels(outcome="uncertain")
    before = counter._value.get()
    record_command_transition(device_pb2.PUMP_COMMAND_STATE_UNCERTAIN)
    assert counter._value.get() == before + 1


def test_decision_outcomes() -> None:
    smb = dosing_pb2.DosingDecision(enacted=True)
    smb.recommendation.micro_bolus.insulin_u = 0.3
    assert decision_outcome(smb) == "smb"
    suspend = dosing_pb2.DosingDecision(enacted=True)
    suspend.recommendation.suspend.SetInParent()
    assert decision_outcome(suspend) == "suspend"
    open_loop = dosing_pb2.DosingDecision(enacted=False)
    open_loop.recommendation.micro_bolus.insulin_u = 0.3
    assert decision_outcome(open_loop) == "recommend_only"
    assert decision_outcome(dosing_pb2.DosingDecision(enacted=True)) == "keep"
    stale = dosing_pb2.DosingDecision(enacted=False, mode=common_pb2.LOOP_MODE_CLOSED_LOOP_SMB)
    assert decision_outcome(stale) == "keep"  # closed loop, nothing to change
    stale.reasons.add(code=dosing_pb2.DOSING_REASON_CODE_STALE_CGM)
    assert decision_outcome(stale) == "not_looping"
