"""Forecast margin for increases: one post-decision rule for the service and the in-silico bench.

An increase (a micro-bolus, or a temp basal above the scheduled basal) is allowed only if the
low-guard forecast minimum stays at or above the suspend threshold plus
`iob_fraction × IOB × ISF / sensitivity ratio`: the forecast must still clear the threshold if
the insulin on board acts that much stronger than assumed (sensitivity misjudged, sensor reading
high). Otherwise the step is decided again in low-glucose-suspend mode, which runs the schedule
(or the low guard's zero temp). The rule only ever removes insulin.

Pure Python on the kernel's output (`kernels.decision`); the compiled kernels are unchanged.
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
)

__all__ = [
    "DEFAULT_INCREASE_MARGIN_IOB_FRACTION",
    "INCREASE_MARGIN_CODE",
    "INCREASE_MARGIN_TEXT",
    "check_iob_fraction",
    "decide_packed_with_margin",
    "decide_with_margin",
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
_SUSPEND_ONLY: Final = "SUSPEND_ONLY_MODE"  # the re-decision's mode, not the person's


def check_iob_fraction(iob_fraction: float) -> float:
    """The margin setting, validated: a share of IOB × ISF between 0 (off) and 1."""
    if not 0.0 <= iob_fraction <= 1.0:  # also rejects NaN
        raise ValueError(f"increase margin IOB fraction must be within 0–1, got {iob_fraction}")
    return float(iob_fraction)


def within_increase_margin(
    *,
    min_guard_bg_mg_dl: float,
    threshold_mg_dl: float,
    iob_u: float,
    isf_mg_dl_per_u: float,
    sensitivity_ratio: float,
    iob_fraction: float,
) -> bool:
    """Whether the forecast minimum clears the threshold by the margin for the insulin on board
    (negative IOB gives no margin below zero)."""
    isf_eff = isf_mg_dl_per_u / sensitivity_ratio
    margin_mg_dl = iob_fraction * max(0.0, iob_u) * isf_eff
    return min_guard_bg_mg_dl >= threshold_mg_dl + margin_mg_dl


def proposes_increase(
    *, enact: bool, action: Action, rate_u_per_h: float, scheduled_u_per_h: float, smb_u: float
) -> bool:
    """An enacted micro-bolus or temp basal above the scheduled basal."""
    raised = action == Action.TEMP_BASAL and rate_u_per_h > scheduled_u_per_h
    return enact and (smb_u > 0 or raised)


def _withhold_out(out: F64, isf_mg_dl_per_u: float, iob_fraction: float) -> bool:
    return proposes_increase(
        enact=bool(out[Out.ENACT]),
        action=Action(int(out[Out.ACTION])),
        rate_u_per_h=float(out[Out.RATE]),
        scheduled_u_per_h=float(out[Out.SCHEDULED_BASAL]),
        smb_u=float(out[Out.SMB]),
    ) and not within_increase_margin(
        min_guard_bg_mg_dl=float(out[Out.MIN_GUARD_BG]),
        threshold_mg_dl=float(out[Out.THRESHOLD]),
        iob_u=float(out[Out.IOB]),
        isf_mg_dl_per_u=isf_mg_dl_per_u,
        sensitivity_ratio=float(out[Out.SENSITIVITY_RATIO]),
        iob_fraction=iob_fraction,
    )


def decide_packed_with_margin(
    packed: PackedInput,
    iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    out: F64 | None = None,
) -> tuple[F64, bool]:
    """`decide_packed` with the margin applied; returns (output slots, increase withheld).

    The ISF is the packed one (`Param.ISF`); `packed` is not modified.
    """
    check_iob_fraction(iob_fraction)
    out = decide_packed(packed, out)
    if not _withhold_out(out, float(packed.params[Param.ISF]), iob_fraction):
        return out, False
    params = packed.params.copy()
    params[Param.MODE] = float(Mode.LOW_GLUCOSE_SUSPEND)
    return decide_packed(replace(packed, params=params), out), True


def decide_with_margin(
    inp: DecisionInput, iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION
) -> Decision:
    """`kernels.decision.decide` with the margin applied.

    A withheld increase returns the low-glucose-suspend decision for the same state, its
    reasons led by `INCREASE_MARGIN` (the re-decision's "suspend-only mode" reason is dropped:
    the person's mode is unchanged).
    """
    check_iob_fraction(iob_fraction)
    decision = decide(inp)
    withhold = proposes_increase(
        enact=decision.enact,
        action=decision.action,
        rate_u_per_h=decision.rate_u_per_h,
        scheduled_u_per_h=decision.scheduled_basal_u_per_h,
        smb_u=decision.smb_u,
    ) and not within_increase_margin(
        min_guard_bg_mg_dl=decision.min_guard_bg_mg_dl,
        threshold_mg_dl=decision.threshold_mg_dl,
        iob_u=decision.iob_u,
        isf_mg_dl_per_u=inp.settings.isf_mg_dl_per_u,
        sensitivity_ratio=decision.sensitivity_ratio,
        iob_fraction=iob_fraction,
    )
    if not withhold:
        return decision
    guarded = decide(inp.model_copy(update={"mode": Mode.LOW_GLUCOSE_SUSPEND}))
    reasons = (
        ReasonDetail(INCREASE_MARGIN_CODE, INCREASE_MARGIN_TEXT),
        *(r for r in guarded.reasons if r.code != _SUSPEND_ONLY),
    )
    return replace(guarded, reasons=reasons)
