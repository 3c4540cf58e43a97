"""The forecast margin for increases (kernels.increase_margin): withheld below the margin, allowed
above it, never more insulin, reductions untouched; the same rule in the service's decisions."""

from __future__ import annotations

import itertools
import math

import pytest
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from kernels.decision import (
    BasalSegment,
    Decision,
    DecisionInput,
    Dose,
    DoseKind,
    Mode,
    TherapySettings,
    decide,
    pack,
)
from kernels.increase_margin import (
    INCREASE_MARGIN_CODE,
    check_iob_fraction,
    decide_packed_with_margin,
    decide_with_margin,
)
from services.dosing_engine.events import handle
from services.dosing_engine.main import DosingEngineSettings
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner
from services.runtime.kafka.envelope import new_envelope
from tests.dosing_engine.conftest import (
    START,
    published_decisions_and_commands,
    rising_history,
    settings_changed,
)

NOW_S = 100_000.0
ISF = 50.0
SCHEDULED = 0.8


def _state(
    bolus_u: float, start_mg_dl: float, slope_mg_dl_per_5min: float, mode: Mode
) -> DecisionInput:
    """3 h of readings on a straight line and, optionally, a bolus 1 h ago."""
    n = 36
    t = tuple(NOW_S - 300.0 * (n - 1 - i) for i in range(n))
    g = tuple(min(400.0, max(40.0, start_mg_dl + slope_mg_dl_per_5min * i)) for i in range(n))
    settings = TherapySettings(
        isf_mg_dl_per_u=ISF,
        carb_ratio_g_per_u=10.0,
        max_iob_u=6.0,
        max_basal_u_per_h=3.0,
        basal_schedule=(BasalSegment(start_min=0.0, rate_u_per_h=SCHEDULED),),
    )
    doses = (Dose(t_s=NOW_S - 3600.0, kind=DoseKind.BOLUS, amount=bolus_u),) if bolus_u else ()
    return DecisionInput(
        now_s=NOW_S, mode=mode, cgm_t_s=t, cgm_mg_dl=g, settings=settings, doses=doses
    )


def _withheld(d: Decision) -> bool:
    return any(r.code == INCREASE_MARGIN_CODE for r in d.reasons)


def _insulin_30_min_u(d: Decision) -> float:
    return d.rate_u_per_h * 0.5 + d.smb_u


def _critical_fraction(d: Decision) -> float:
    """The margin setting at which this decision's forecast minimum sits exactly on the line."""
    isf_eff = ISF / d.sensitivity_ratio
    return (d.min_guard_bg_mg_dl - d.threshold_mg_dl) / (d.iob_u * isf_eff)


def test_an_increase_is_withheld_below_the_margin_and_allowed_above_it() -> None:
    inp = _state(4.0, 140.0, 3.0, Mode.CLOSED_LOOP_SMB)  # rising, 3.3 U on board
    plain = decide(inp)
    assert plain.enact
    assert plain.smb_u > 0
    assert plain.rate_u_per_h > SCHEDULED
    critical = _critical_fraction(plain)
    assert 0.1 < critical < 0.9  # the state sits inside the setting's range
    # the IOB part alone (the sensor-error allowance: test_sensor_error_margin.py)

    allowed = decide_with_margin(inp, critical - 0.05, sensor_error_fraction=0.0)
    assert not _withheld(allowed)
    assert (allowed.action, allowed.rate_u_per_h, allowed.smb_u) == (
        plain.action,
        plain.rate_u_per_h,
        plain.smb_u,
    )

    withheld = decide_with_margin(inp, critical + 0.05, sensor_error_fraction=0.0)
    assert _withheld(withheld)
    assert withheld.reasons[0].code == INCREASE_MARGIN_CODE
    assert withheld.smb_u == 0.0
    assert withheld.rate_u_per_h <= SCHEDULED
    # the person's mode is unchanged: the re-decision's suspend-only reason is not reported
    assert all(r.code != "SUSPEND_ONLY_MODE" for r in withheld.reasons)
    # IOB and forecast are those of the same state
    assert withheld.iob_u == pytest.approx(plain.iob_u)
    assert withheld.forecast.main == plain.forecast.main


_GRID = list(
    itertools.product(
        (0.0, 2.0, 4.0, 6.0),  # bolus 1 h ago, U
        (80.0, 120.0, 160.0, 200.0),  # first reading, mg/dL
        (-2.0, 0.0, 1.0, 3.0, 4.0),  # mg/dL per 5 min
        (Mode.CLOSED_LOOP, Mode.CLOSED_LOOP_SMB),
    )
)


@pytest.mark.parametrize("post_low_min", [0.0, 120.0])
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_the_margin_never_gives_more_insulin(fraction: float, post_low_min: float) -> None:
    withheld = 0
    for bolus_u, start, slope, mode in _GRID:
        inp = _state(bolus_u, start, slope, mode)
        plain = decide(inp)
        guarded = decide_with_margin(inp, fraction, post_low_no_smb_min=post_low_min)
        assert guarded.smb_u <= plain.smb_u
        assert guarded.rate_u_per_h <= plain.rate_u_per_h or not _withheld(guarded)
        assert _insulin_30_min_u(guarded) <= _insulin_30_min_u(plain) + 1e-9
        if _withheld(guarded):
            withheld += 1
            assert guarded.smb_u == 0.0
            assert guarded.rate_u_per_h <= SCHEDULED
    if fraction >= 0.5 and post_low_min == 0.0:
        assert withheld > 0  # the grid reaches the rule (its falling lines pass below 70)


def test_decreases_and_suspends_are_untouched() -> None:
    reductions = 0
    for bolus_u, start, slope, mode in _GRID:
        inp = _state(bolus_u, start, slope, mode)
        plain = decide(inp)
        if plain.smb_u > 0 or plain.rate_u_per_h > plain.scheduled_basal_u_per_h:
            continue
        reductions += 1
        guarded = decide_with_margin(inp, 1.0, post_low_no_smb_min=0.0)
        assert (guarded.action, guarded.rate_u_per_h, guarded.smb_u, guarded.reasons) == (
            plain.action,
            plain.rate_u_per_h,
            plain.smb_u,
            plain.reasons,
        )
    assert reductions > 10


def test_packed_and_validated_paths_agree() -> None:
    """The in-silico adapter's packed path and the service's path take the same decision."""
    for bolus_u, start, slope, mode in _GRID:
        inp = _state(bolus_u, start, slope, mode)
        out, withheld = decide_packed_with_margin(pack(inp), 0.2)
        d = decide_with_margin(inp, 0.2)
        assert withheld == _withheld(d)
        assert (float(out[1]), float(out[3])) == (d.rate_u_per_h, d.smb_u)


@pytest.mark.parametrize("bad", [-0.1, 1.01, math.nan, math.inf])
def test_the_setting_must_be_within_0_to_1(bad: float) -> None:
    with pytest.raises(ValueError, match="0–1"):
        check_iob_fraction(bad)
    with pytest.raises(ValueError, match="0–1"):
        decide_with_margin(_state(0.0, 120.0, 0.0, Mode.CLOSED_LOOP_SMB), bad)
    with pytest.raises(ValidationError):
        DosingEngineSettings(increase_margin_iob_fraction=bad)


def test_the_service_setting_defaults_to_0_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LANGERHANS_INCREASE_MARGIN_IOB_FRACTION", raising=False)
    assert DosingEngineSettings().increase_margin_iob_fraction == 0.2


# ---- the service: every automatic decision goes through the rule ---------------------------
P = "patient-margin"


def _feed(
    sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner, fraction: float
) -> tuple[list[dosing_pb2.DosingDecision], list[device_pb2.PumpCommand]]:
    def send(message: object) -> None:
        envelope = new_envelope(P, message, source="test", time=clock.now())  # type: ignore[arg-type]
        with sessions() as session, session.begin():
            handle(envelope, session, clock, signer, increase_margin_iob_fraction=fraction)

    send(settings_changed(P, common_pb2.LOOP_MODE_CLOSED_LOOP_SMB))
    for r in rising_history(P, START, 36):
        clock.current = r.measured_at.ToDatetime().replace(tzinfo=START.tzinfo)
        send(r)
    return published_decisions_and_commands(sessions, signer)


def test_the_service_withholds_increases_with_a_reason(
    sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner
) -> None:
    decisions, commands = _feed(sessions, clock, signer, 1.0)
    code = dosing_pb2.DOSING_REASON_CODE_INCREASE_MARGIN
    withheld = [d for d in decisions if any(r.code == code for r in d.reasons)]
    assert withheld, "IOB builds up on the rising history: some increase must be withheld"
    by_id = {c.command_id: c for c in commands}
    for d in withheld:
        assert not d.recommendation.HasField("micro_bolus")
        assert "suspend threshold" in next(r.message for r in d.reasons if r.code == code)
        for cid in d.command_ids:
            cmd = by_id[cid]
            assert not cmd.HasField("deliver_bolus")
            if cmd.HasField("set_temp_basal"):
                assert cmd.set_temp_basal.rate_u_per_h <= 0.8


def test_the_service_with_the_margin_off_sends_the_kernels_increases(
    sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner
) -> None:
    decisions, commands = _feed(sessions, clock, signer, 0.0)
    code = dosing_pb2.DOSING_REASON_CODE_INCREASE_MARGIN
    assert not any(r.code == code for d in decisions for r in d.reasons)
    assert any(c.HasField("deliver_bolus") for c in commands)
