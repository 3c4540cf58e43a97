"""Forecast margin for increases and no micro-bolus after a low: rules applied around the compiled
decision, shared by the service (live engine and gRPC `Decide`) and the in-silico bench.

An increase (a micro-bolus, or a temp basal above the scheduled basal) is allowed only if the
low-guard forecast minimum stays at or above the suspend threshold plus
`iob_fraction × IOB × ISF / sensitivity ratio`: the forecast must still clear the threshold if
the insulin on board acts that much stronger than assumed (sensitivity misjudged, sensor reading
high). Otherwise the step is decided again in low-glucose-suspend mode, which runs the schedule
(or the low guard's zero temp). The rule only ever removes insulin.

After a reading below 70 mg/dL the person has most likely eaten fast carbs the engine does not
know of: for `post_low_no_smb_min` (default 120) a closed loop with micro-boluses is decided as a
temp-basal closed loop, so the rise the rescue carbs cause is not chased with micro-boluses
(oref0 similarly stops SMBs on sudden rises). It only ever removes insulin.

Falling faster than expected (oref0's "Min. Delta < Exp. Delta"): an increase is also withheld
while glucose falls faster than the insulin on board explains, i.e. the smaller of the last
5-min change and the 5–15 min average change is below BGI + (target − eventual BG) / 24, with BGI
= −activity × ISF × 5 min. oref0 keeps the scheduled basal in that case; here it applies to
micro-boluses too. It only ever removes insulin.

Pure Python around the kernel (`kernels.decision`); the compiled kernels are unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import numpy as np
import numpy.typing as npt

from kernels._layout import Action, Mode, Out, Param
from kernels.decision import (
    Decision,
    DecisionInput,
    PackedInput,
    ReasonDetail,
    decide,
    decide_packed,
    decode,
    pack,
)

__all__ = [
    "DEFAULT_INCREASE_MARGIN_IOB_FRACTION",
    "DEFAULT_POST_LOW_NO_SMB_MIN",
    "DEFAULT_SENSOR_ERROR_FRACTION",
    "FALLING_FASTER_CODE",
    "FALLING_FASTER_TEXT",
    "FALLING_WHILE_ACTING_MG_DL_PER_5_MIN",
    "INCREASE_MARGIN_CODE",
    "INCREASE_MARGIN_TEXT",
    "LOW_READING_MG_DL",
    "NO_SMB_AFTER_LOW_CODE",
    "NO_SMB_AFTER_LOW_TEXT",
    "check_iob_fraction",
    "check_post_low_min",
    "check_sensor_error_fraction",
    "decide_packed_with_margin",
    "decide_with_margin",
    "expected_delta_mg_dl",
    "falling_faster_than_expected",
    "low_reading_within",
    "min_delta_mg_dl",
    "proposes_increase",
    "within_increase_margin",
]

F64 = npt.NDArray[np.float64]

DEFAULT_INCREASE_MARGIN_IOB_FRACTION: Final = 0.2
INCREASE_MARGIN_CODE: Final = "INCREASE_MARGIN"
INCREASE_MARGIN_TEXT: Final = (
    "forecast minimum too close to the suspend threshold for the insulin on board: "
    "no increase, scheduled basal (or the low guard's zero temp)"
)
# CGM calibration error grows with glucose (iCGM: ±15 % above 100 mg/dL, 99 % within ±40 %);
# a session reading this share high makes the forecast minimum that much too high
DEFAULT_SENSOR_ERROR_FRACTION: Final = 0.12
_SUSPEND_ONLY: Final = "SUSPEND_ONLY_MODE"  # the re-decision's mode, not the person's

DEFAULT_POST_LOW_NO_SMB_MIN: Final = 120.0
LOW_READING_MG_DL: Final = 70.0
NO_SMB_AFTER_LOW_CODE: Final = "NO_SMB_AFTER_LOW"
NO_SMB_AFTER_LOW_TEXT: Final = (
    "a reading below 70 mg/dL recently (likely rescue carbs the engine does not know of): "
    "temp basals only, no micro-bolus"
)


FALLING_FASTER_CODE: Final = "FALLING_FASTER_THAN_EXPECTED"
FALLING_FASTER_TEXT: Final = (
    "glucose falls faster than the insulin on board explains, or falls while insulin is "
    "acting: no increase, scheduled basal (or the low guard's zero temp)"
)
# While insulin is acting and glucose already falls this fast (mg/dL per 5 min), more insulin
# only steepens the fall: a forecast that still sees carbs to come, or a sensor reading high,
# is the usual reason the loop would add some (measured: docs/dosing-engine.md)
FALLING_WHILE_ACTING_MG_DL_PER_5_MIN: Final = 2.0


def min_delta_mg_dl(cgm_t_s: npt.ArrayLike, cgm_mg_dl: npt.ArrayLike) -> float | None:
    """oref0's minDelta: the smaller of the change per 5 min against the readings 2.5–7.5 min
    before the newest one and against those 2.5–17.5 min before it (None: no such reading)."""
    t = np.asarray(cgm_t_s, dtype=np.float64)[-6:]
    g = np.asarray(cgm_mg_dl, dtype=np.float64)[-6:]
    if t.size < 2:
        return None
    age_min = (t[-1] - t[:-1]) / 60.0
    per_5_min = (g[-1] - g[:-1]) / np.maximum(age_min, 1e-9) * 5.0
    near = (age_min >= 2.5) & (age_min <= 7.5)
    short = (age_min >= 2.5) & (age_min <= 17.5)
    if not near.any():
        return None
    return float(min(per_5_min[near].mean(), per_5_min[short].mean()))


def expected_delta_mg_dl(
    *,
    activity_u_per_min: float,
    isf_mg_dl_per_u: float,
    sensitivity_ratio: float,
    target_mg_dl: float,
    eventual_bg_mg_dl: float,
) -> float:
    """oref0's expectedDelta: the 5-min change the insulin acting now gives (BGI) plus a glide
    from the eventual glucose to the target over 2 h."""
    bgi = -activity_u_per_min * isf_mg_dl_per_u / sensitivity_ratio * 5.0
    return bgi + (target_mg_dl - eventual_bg_mg_dl) / 24.0


def falling_faster_than_expected(
    *,
    cgm_t_s: npt.ArrayLike,
    cgm_mg_dl: npt.ArrayLike,
    activity_u_per_min: float,
    isf_mg_dl_per_u: float,
    sensitivity_ratio: float,
    target_mg_dl: float,
    eventual_bg_mg_dl: float,
) -> bool:
    """Whether glucose falls faster than insulin on board explains (minDelta < expectedDelta),
    or falls by at least `FALLING_WHILE_ACTING_MG_DL_PER_5_MIN` while insulin is acting."""
    md = min_delta_mg_dl(cgm_t_s, cgm_mg_dl)
    if md is None:
        return False
    if activity_u_per_min > 0.0 and md <= -FALLING_WHILE_ACTING_MG_DL_PER_5_MIN:
        return True
    return md < expected_delta_mg_dl(
        activity_u_per_min=activity_u_per_min,
        isf_mg_dl_per_u=isf_mg_dl_per_u,
        sensitivity_ratio=sensitivity_ratio,
        target_mg_dl=target_mg_dl,
        eventual_bg_mg_dl=eventual_bg_mg_dl,
    )


def check_post_low_min(post_low_no_smb_min: float) -> float:
    """The no-micro-bolus-after-a-low window, validated: 0 (off) to 240 min."""
    if not 0.0 <= post_low_no_smb_min <= 240.0:  # also rejects NaN
        raise ValueError(f"post-low window must be within 0–240 min, got {post_low_no_smb_min}")
    return float(post_low_no_smb_min)


def low_reading_within(
    cgm_t_s: npt.ArrayLike, cgm_mg_dl: npt.ArrayLike, now_s: float, window_min: float
) -> bool:
    """Whether a reading below 70 mg/dL was taken in the last `window_min` minutes."""
    if window_min <= 0.0:
        return False
    t = np.asarray(cgm_t_s, dtype=np.float64)
    g = np.asarray(cgm_mg_dl, dtype=np.float64)
    recent = (t > now_s - window_min * 60.0) & (t <= now_s)
    return bool(np.any(recent & (g < LOW_READING_MG_DL)))


def check_iob_fraction(iob_fraction: float) -> float:
    """The margin setting, validated: a share of IOB × ISF between 0 (off) and 1."""
    if not 0.0 <= iob_fraction <= 1.0:  # also rejects NaN
        raise ValueError(f"increase margin IOB fraction must be within 0–1, got {iob_fraction}")
    return float(iob_fraction)


def check_sensor_error_fraction(sensor_error_fraction: float) -> float:
    """The sensor-error allowance, validated: a share of the forecast minimum, 0 (off) to 0.4."""
    if not 0.0 <= sensor_error_fraction <= 0.4:  # also rejects NaN
        raise ValueError(f"sensor error fraction must be within 0–0.4, got {sensor_error_fraction}")
    return float(sensor_error_fraction)


def within_increase_margin(
    *,
    min_guard_bg_mg_dl: float,
    threshold_mg_dl: float,
    iob_u: float,
    isf_mg_dl_per_u: float,
    sensitivity_ratio: float,
    iob_fraction: float,
    sensor_error_fraction: float = DEFAULT_SENSOR_ERROR_FRACTION,
) -> bool:
    """Whether the forecast minimum, lowered by the sensor-error allowance (a reading that is
    that share too high), clears the threshold by the margin for the insulin on board
    (negative IOB gives no margin below zero)."""
    isf_eff = isf_mg_dl_per_u / sensitivity_ratio
    margin_mg_dl = iob_fraction * max(0.0, iob_u) * isf_eff
    worst_min_mg_dl = min_guard_bg_mg_dl * (1.0 - sensor_error_fraction)
    return worst_min_mg_dl >= threshold_mg_dl + margin_mg_dl


def proposes_increase(
    *, enact: bool, action: Action, rate_u_per_h: float, scheduled_u_per_h: float, smb_u: float
) -> bool:
    """An enacted micro-bolus or temp basal above the scheduled basal."""
    raised = action == Action.TEMP_BASAL and rate_u_per_h > scheduled_u_per_h
    return enact and (smb_u > 0 or raised)


def _withhold_out(
    packed: PackedInput, out: F64, iob_fraction: float, sensor_error_fraction: float
) -> str | None:
    """Why an increase proposed in `out` is withheld (a reason code), or None."""
    if not proposes_increase(
        enact=bool(out[Out.ENACT]),
        action=Action(int(out[Out.ACTION])),
        rate_u_per_h=float(out[Out.RATE]),
        scheduled_u_per_h=float(out[Out.SCHEDULED_BASAL]),
        smb_u=float(out[Out.SMB]),
    ):
        return None
    p = packed.params
    isf = float(p[Param.ISF])
    ratio = float(out[Out.SENSITIVITY_RATIO])
    if not within_increase_margin(
        min_guard_bg_mg_dl=float(out[Out.MIN_GUARD_BG]),
        threshold_mg_dl=float(out[Out.THRESHOLD]),
        iob_u=float(out[Out.IOB]),
        isf_mg_dl_per_u=isf,
        sensitivity_ratio=ratio,
        iob_fraction=iob_fraction,
        sensor_error_fraction=sensor_error_fraction,
    ):
        return INCREASE_MARGIN_CODE
    if falling_faster_than_expected(
        cgm_t_s=packed.cgm_t_s,
        cgm_mg_dl=packed.cgm_mg_dl,
        activity_u_per_min=float(out[Out.ACTIVITY]),
        isf_mg_dl_per_u=isf,
        sensitivity_ratio=ratio,
        target_mg_dl=0.5 * float(p[Param.MIN_BG] + p[Param.MAX_BG]),
        eventual_bg_mg_dl=float(out[Out.EVENTUAL_BG]),
    ):
        return FALLING_FASTER_CODE
    return None


def _after_low_packed(packed: PackedInput, post_low_no_smb_min: float) -> PackedInput:
    params = packed.params
    if int(params[Param.MODE]) != Mode.CLOSED_LOOP_SMB or not low_reading_within(
        packed.cgm_t_s, packed.cgm_mg_dl, float(params[Param.NOW_S]), post_low_no_smb_min
    ):
        return packed
    params = params.copy()
    params[Param.MODE] = float(Mode.CLOSED_LOOP)
    return replace(packed, params=params)


def decide_packed_with_margin(
    packed: PackedInput,
    iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    out: F64 | None = None,
    post_low_no_smb_min: float = DEFAULT_POST_LOW_NO_SMB_MIN,
    sensor_error_fraction: float = DEFAULT_SENSOR_ERROR_FRACTION,
) -> tuple[F64, bool]:
    """`decide_packed` with the margin (and no micro-bolus after a low) applied; returns
    (output slots, increase withheld by the margin).

    The ISF is the packed one (`Param.ISF`); `packed` is not modified.
    """
    check_iob_fraction(iob_fraction)
    check_sensor_error_fraction(sensor_error_fraction)
    packed = _after_low_packed(packed, check_post_low_min(post_low_no_smb_min))
    out = decide_packed(packed, out)
    if _withhold_out(packed, out, iob_fraction, sensor_error_fraction) is None:
        return out, False
    params = packed.params.copy()
    params[Param.MODE] = float(Mode.LOW_GLUCOSE_SUSPEND)
    return decide_packed(replace(packed, params=params), out), True


def decide_with_margin(
    inp: DecisionInput,
    iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    post_low_no_smb_min: float = DEFAULT_POST_LOW_NO_SMB_MIN,
    sensor_error_fraction: float = DEFAULT_SENSOR_ERROR_FRACTION,
) -> Decision:
    """`kernels.decision.decide` with the margin and no micro-bolus after a low applied.

    After a low reading a closed loop with micro-boluses is decided as a temp-basal closed loop
    (reason `NO_SMB_AFTER_LOW` first). A withheld increase returns the low-glucose-suspend
    decision for the same state, its reasons led by `INCREASE_MARGIN` (the re-decision's
    "suspend-only mode" reason is dropped: the person's mode is unchanged).
    """
    check_iob_fraction(iob_fraction)
    check_sensor_error_fraction(sensor_error_fraction)
    after_low = inp.mode == Mode.CLOSED_LOOP_SMB and low_reading_within(
        inp.cgm_t_s, inp.cgm_mg_dl, inp.now_s, check_post_low_min(post_low_no_smb_min)
    )
    if after_low:
        decision = _decide_with_margin(
            inp.model_copy(update={"mode": Mode.CLOSED_LOOP}), iob_fraction, sensor_error_fraction
        )
        reasons = (ReasonDetail(NO_SMB_AFTER_LOW_CODE, NO_SMB_AFTER_LOW_TEXT), *decision.reasons)
        return replace(decision, reasons=reasons)
    return _decide_with_margin(inp, iob_fraction, sensor_error_fraction)


def _decide_with_margin(
    inp: DecisionInput, iob_fraction: float, sensor_error_fraction: float
) -> Decision:
    packed = pack(inp)
    out = decide_packed(packed)  # raw slots, for the rules; decoded once for the caller
    decision = decode(out, inp.now_s)
    if not proposes_increase(
        enact=decision.enact,
        action=decision.action,
        rate_u_per_h=decision.rate_u_per_h,
        scheduled_u_per_h=decision.scheduled_basal_u_per_h,
        smb_u=decision.smb_u,
    ):
        return decision
    code = _withhold_out(packed, out, iob_fraction, sensor_error_fraction)
    if code is None:
        return decision
    guarded = decide(inp.model_copy(update={"mode": Mode.LOW_GLUCOSE_SUSPEND}))
    text = INCREASE_MARGIN_TEXT if code == INCREASE_MARGIN_CODE else FALLING_FASTER_TEXT
    reasons = (
        ReasonDetail(code, text),
        *(r for r in guarded.reasons if r.code != _SUSPEND_ONLY),
    )
    return replace(guarded, reasons=reasons)
