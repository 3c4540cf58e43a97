"""No micro-bolus after a low reading (kernels.increase_margin): after a reading below 70 mg/dL
the person has likely eaten rescue carbs the engine does not know of, so a closed loop with
micro-boluses runs temp basals only for a while; the same rule in the service's decisions."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2
from sqlalchemy.orm import Session, sessionmaker

from kernels._layout import Out
from kernels.decision import DecisionInput, Mode, decide, pack
from kernels.increase_margin import (
    NO_SMB_AFTER_LOW_CODE,
    check_post_low_min,
    decide_packed_with_margin,
    decide_with_margin,
    low_reading_within,
)
from services.dosing_engine.events import handle
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner
from services.runtime.kafka.envelope import new_envelope
from tests.dosing_engine.conftest import (
    KERNEL_SCHEDULED_U_PER_H,
    START,
    closed_loop_input,
    published_decisions_and_commands,
    reading,
    rising_history,
    settings_changed,
)

SCHEDULED = KERNEL_SCHEDULED_U_PER_H


def _rising_from_a_low(mode: Mode = Mode.CLOSED_LOOP_SMB) -> DecisionInput:
    """3 h of readings rising 5 mg/dL per 5 min from 55 mg/dL: the readings below 70 are
    155–175 min old."""
    return closed_loop_input([55.0 + 5.0 * i for i in range(36)], mode)


def test_a_micro_bolus_within_the_window_after_a_low_becomes_a_temp_basal() -> None:
    inp = _rising_from_a_low()
    assert decide(inp).smb_u > 0  # the kernel alone gives a micro-bolus
    outside = decide_with_margin(inp, 0.0, post_low_no_smb_min=120.0)
    assert outside.smb_u > 0
    assert all(r.code != NO_SMB_AFTER_LOW_CODE for r in outside.reasons)

    inside = decide_with_margin(inp, 0.0, post_low_no_smb_min=180.0)
    assert inside.smb_u == 0.0
    assert inside.reasons[0].code == NO_SMB_AFTER_LOW_CODE
    assert inside.rate_u_per_h > SCHEDULED  # a temp basal still treats the rise
    assert inside.rate_u_per_h * 0.5 + inside.smb_u <= outside.rate_u_per_h * 0.5 + outside.smb_u
    # the same as deciding in the temp-basal closed loop
    temp_only = decide(_rising_from_a_low(Mode.CLOSED_LOOP))
    assert (inside.action, inside.rate_u_per_h) == (temp_only.action, temp_only.rate_u_per_h)


def test_off_and_other_modes_are_untouched() -> None:
    inp = _rising_from_a_low()
    assert decide_with_margin(inp, 0.0, post_low_no_smb_min=0.0).smb_u == decide(inp).smb_u
    temp_only = _rising_from_a_low(Mode.CLOSED_LOOP)
    assert decide_with_margin(temp_only, 0.0, post_low_no_smb_min=180.0).reasons == (
        decide(temp_only).reasons
    )


@pytest.mark.parametrize("window_min", [0.0, 120.0, 180.0])
def test_packed_and_validated_paths_agree(window_min: float) -> None:
    inp = _rising_from_a_low()
    d = decide_with_margin(inp, 0.2, post_low_no_smb_min=window_min)
    out, _ = decide_packed_with_margin(pack(inp), 0.2, post_low_no_smb_min=window_min)
    assert (out[Out.SMB], out[Out.RATE], int(out[Out.ACTION])) == (
        d.smb_u,
        d.rate_u_per_h,
        int(d.action),
    )


def test_low_reading_window_edges() -> None:
    t = np.array([0.0, 300.0, 600.0])
    g = np.array([69.0, 120.0, 130.0])
    assert low_reading_within(t, g, 600.0, 10.0 + 1e-9)
    assert not low_reading_within(t, g, 600.0, 10.0)  # exactly the window ago: outside
    assert not low_reading_within(t, np.array([70.0, 120.0, 130.0]), 600.0, 60.0)
    assert not low_reading_within(t, g, 600.0, 0.0)


@pytest.mark.parametrize("bad", [-1.0, 241.0, float("nan")])
def test_the_window_must_be_within_0_to_240_min(bad: float) -> None:
    with pytest.raises(ValueError, match="0–240"):
        check_post_low_min(bad)


# ---- the service applies it to every automatic decision -------------------------------------
P = "patient-after-low"


def _feed(
    sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner, *, low_first: bool
) -> tuple[list[dosing_pb2.DosingDecision], list[device_pb2.PumpCommand]]:
    def send(message: object) -> None:
        envelope = new_envelope(P, message, source="test", time=clock.now())  # type: ignore[arg-type]
        with sessions() as session, session.begin():
            handle(envelope, session, clock, signer, increase_margin_iob_fraction=0.0)

    send(settings_changed(P, common_pb2.LOOP_MODE_CLOSED_LOOP_SMB))
    history = rising_history(P, START, 36)
    if low_first:  # one reading of 65 mg/dL 5 min before the rise starts
        first = history[0].measured_at.ToDatetime().replace(tzinfo=START.tzinfo)
        history = [reading(P, first - timedelta(minutes=5), 65.0), *history]
    for r in history:
        clock.current = r.measured_at.ToDatetime().replace(tzinfo=START.tzinfo)
        send(r)
    return published_decisions_and_commands(sessions, signer)


def _micro_bolus_decisions(decisions: list[dosing_pb2.DosingDecision]) -> int:
    return sum(d.recommendation.HasField("micro_bolus") for d in decisions)


def test_without_a_low_the_same_rise_gets_micro_boluses_in_that_window(
    sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner
) -> None:
    plain, plain_commands = _feed(sessions, clock, signer, low_first=False)
    assert any(c.HasField("deliver_bolus") for c in plain_commands)
    window = 120 // 5 - 1  # decisions on the readings less than 120 min after the low
    assert _micro_bolus_decisions(plain[:window]) > 0


def test_the_service_reports_the_reason_and_holds_micro_boluses(
    sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner
) -> None:
    decisions, commands = _feed(sessions, clock, signer, low_first=True)
    # decisions[0] is on the low reading itself; the next 23 are within 120 min of it
    held = decisions[1:24]
    assert _micro_bolus_decisions(held) == 0
    assert all("rescue carbs" in held[i].reasons[0].message for i in range(len(held)))
    no_smb_after_low = dosing_pb2.DOSING_REASON_CODE_NO_SMB_AFTER_LOW
    assert all(decision.reasons[0].code == no_smb_after_low for decision in held)
    by_id = {c.command_id: c for c in commands}
    held_commands = [by_id[c] for d in held for c in d.command_ids]
    assert not any(c.HasField("deliver_bolus") for c in held_commands)
    # temp basals above the schedule (0.8 U/h) still treat the rise
    assert any(c.set_temp_basal.rate_u_per_h > 0.8 for c in held_commands)
