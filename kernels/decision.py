"""The stateless dosing decision: whole state in, decision with forecast and reasons out.

`decide(DecisionInput) -> Decision` validates with pydantic, packs numpy arrays and runs the
compiled kernel; `decide_reference` runs the same packed input through the plain-Python twin.
Services that decide often keep `PackedInput` arrays per person and call `decide_packed`
directly (no pydantic per call). Same input, same output: nothing reads a clock or a global.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernels import _decide
from kernels._layout import (
    AGE_GROUPS,
    N_FORECAST,
    N_OUT,
    N_PARAMS,
    Action,
    DoseKind,
    Mode,
    Out,
    Param,
    Reason,
)
from kernels.carbs import CarbModel
from kernels.insulin import INSULIN_PRESETS, InsulinModel, InsulinModelKind
from kernels.reference.decide import decide_packed_reference

__all__ = [
    "REASON_TEXT",
    "Action",
    "BasalSegment",
    "CarbEntry",
    "Decision",
    "DecisionInput",
    "Dose",
    "DoseKind",
    "Forecast",
    "Mode",
    "PackedInput",
    "PumpState",
    "Reason",
    "ReasonDetail",
    "TherapySettings",
    "decide",
    "decide_packed",
    "decide_reference",
    "decode",
    "forecast",
    "pack",
    "pack_params",
]

F64 = npt.NDArray[np.float64]

REASON_TEXT: Final[dict[Reason, str]] = {
    Reason.NO_CGM: "no glucose reading: nothing is changed",
    Reason.STALE_CGM: "last reading is more than 12 min old: no increase, high temps cancelled",
    Reason.FUTURE_CGM: "last reading is more than 5 min in the future: no increase",
    Reason.NOISY_CGM: "sensor noise level ≥ 3: no increase",
    Reason.FLAT_CGM: "glucose unchanged for 45 min (sensor may be stuck): no increase",
    Reason.UNCERTAIN_DELIVERY: "a dose is unconfirmed: no automatic dosing until reconciled",
    Reason.OPEN_LOOP: "open loop: recommendation only, nothing is sent to the pump",
    Reason.SUSPEND_ONLY_MODE: "low-glucose-suspend mode: insulin can only be reduced",
    Reason.LOW_GLUCOSE: "glucose is below the suspend threshold: zero temp",
    Reason.PREDICTED_LOW: "a forecast line goes below the suspend threshold: zero temp",
    Reason.BELOW_RANGE: "eventual glucose below the target range: lower temp",
    Reason.IN_RANGE: "eventual glucose in the target range: scheduled basal",
    Reason.ABOVE_RANGE: "eventual glucose above the target range: more insulin required",
    Reason.MAX_BASAL_LIMIT: "limited by the max safe basal",
    Reason.MAX_IOB_LIMIT: "limited by max IOB",
    Reason.MAX_IOB_ZERO: "max IOB is 0: no automatic insulin above basal until it is set",
    Reason.HARD_LIMIT: "a setting exceeds the age-group hard limit: the hard limit applies",
    Reason.NO_INCREASE: "insulin is not increased above the scheduled basal",
    Reason.TEMP_KEPT: "running temp is within 20 % with more than 20 min left: kept",
    Reason.SMB_BOLUS_RUNNING: "no micro-bolus while a bolus is being delivered",
    Reason.SMB_BOLUS_NEWER: "no micro-bolus: a bolus is newer than this decision",
    Reason.SMB_TOO_SOON: "no micro-bolus within 3 min of the last bolus",
    Reason.SMB_LIMITED: "micro-bolus limited to 30 min of basal / max bolus",
    Reason.SENSITIVITY_BOUNDED: "sensitivity ratio bounded to 0.7–1.2",
    Reason.ZERO_TEMP_CUT: "zero temp re-issued for at most 30 min on doubtful data",
    Reason.RESUME: "glucose recovered: suspend ended, back to the schedule",
}

Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BasalSegment(_Frozen):
    start_min: Annotated[float, Field(ge=0, lt=1440)]
    rate_u_per_h: Annotated[float, Field(ge=0, le=30)]


class Dose(_Frozen):
    """Delivered insulin: a bolus (duration > 0 = extended part), a temp basal or a suspend."""

    t_s: Finite
    kind: DoseKind
    amount: Annotated[float, Field(ge=0, le=60)]  # U for boluses, U/h for temp basals
    duration_min: Annotated[float, Field(ge=0, le=1440)] = 0.0


class CarbEntry(_Frozen):
    t_s: Finite
    carbs_g: Annotated[float, Field(ge=0, le=250)]
    absorption_min: Annotated[float, Field(ge=30, le=480)] = 180.0


class TherapySettings(_Frozen):
    isf_mg_dl_per_u: Annotated[float, Field(ge=10, le=500)]
    carb_ratio_g_per_u: Annotated[float, Field(ge=2, le=150)]
    min_bg_mg_dl: Annotated[float, Field(ge=70, le=180)] = 100.0
    max_bg_mg_dl: Annotated[float, Field(ge=70, le=200)] = 120.0
    suspend_threshold_mg_dl: Annotated[float, Field(ge=67, le=110)] = 80.0
    max_basal_u_per_h: Annotated[float, Field(ge=0, le=30)] = 2.0
    max_iob_u: Annotated[float, Field(ge=0, le=70)] = 0.0
    max_bolus_u: Annotated[float, Field(ge=0, le=30)] = 10.0
    age_group: str = "adult"
    insulin: str = "rapid-acting"
    carb_model: CarbModel = CarbModel.PARABOLIC
    basal_schedule: tuple[BasalSegment, ...]
    utc_offset_min: Annotated[float, Field(ge=-900, le=900)] = 0.0
    basal_increment_u_per_h: Annotated[float, Field(gt=0, le=1)] = 0.05
    bolus_increment_u: Annotated[float, Field(gt=0, le=1)] = 0.05
    enable_uam: bool = True

    @model_validator(mode="after")
    def _check(self) -> TherapySettings:
        if self.age_group not in AGE_GROUPS:
            raise ValueError(f"age_group must be one of {AGE_GROUPS}")
        if self.insulin not in INSULIN_PRESETS:
            raise ValueError(f"insulin must be one of {sorted(INSULIN_PRESETS)}")
        if self.max_bg_mg_dl < self.min_bg_mg_dl:
            raise ValueError("max_bg must be ≥ min_bg")
        starts = [s.start_min for s in self.basal_schedule]
        if not starts or starts[0] != 0 or any(b <= a for a, b in pairwise(starts)):
            raise ValueError("basal schedule must start at minute 0 and increase")
        return self


class PumpState(_Frozen):
    running_temp_rate_u_per_h: Annotated[float, Field(ge=0, le=30)] | None = None
    running_temp_remaining_min: Annotated[float, Field(ge=0, le=1440)] = 0.0
    bolus_in_progress: bool = False
    uncertain_delivery: bool = False
    last_bolus_s: Finite | None = None


class DecisionInput(_Frozen):
    """Everything a decision depends on; `now_s` is injected, never read from a clock."""

    now_s: Finite
    mode: Mode
    cgm_t_s: tuple[Finite, ...]
    cgm_mg_dl: tuple[Annotated[float, Field(ge=39, le=401)], ...]
    cgm_noise_level: Annotated[float, Field(ge=0, le=4)] = 0.0
    doses: tuple[Dose, ...] = ()
    carbs: tuple[CarbEntry, ...] = ()
    settings: TherapySettings
    pump: PumpState = PumpState()
    last_smb_s: Finite | None = None
    sensitivity_ratio: Annotated[float, Field(gt=0, le=5)] | None = None

    @model_validator(mode="after")
    def _check(self) -> DecisionInput:
        if len(self.cgm_t_s) != len(self.cgm_mg_dl):
            raise ValueError("cgm_t_s and cgm_mg_dl must have the same length")
        return self


@dataclass(frozen=True, slots=True)
class PackedInput:
    """The kernel's input: parameter slots (kernels._layout.Param) and sorted float64 arrays."""

    params: F64
    cgm_t_s: F64
    cgm_mg_dl: F64
    dose_t_s: F64
    dose_kind: F64
    dose_amount: F64
    dose_duration_min: F64
    carb_t_s: F64
    carb_g: F64
    carb_absorption_min: F64
    basal_start_min: F64
    basal_rate_u_per_h: F64

    def arrays(self) -> tuple[F64, F64, F64, F64, F64, F64, F64, F64, F64, F64, F64, F64]:
        return (
            self.params, self.cgm_t_s, self.cgm_mg_dl, self.dose_t_s, self.dose_kind,
            self.dose_amount, self.dose_duration_min, self.carb_t_s, self.carb_g,
            self.carb_absorption_min, self.basal_start_min, self.basal_rate_u_per_h,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReasonDetail:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Forecast:
    """Predicted glucose (mg/dL) at start_s + 5·k min, k = 0 … 72 (6 h)."""

    start_s: float
    step_min: int
    main: tuple[float, ...]  # Loop-style: insulin + carbs + momentum + retrospective correction
    iob: tuple[float, ...]  # oref0 lines: insulin only (with the current deviation fading)
    cob: tuple[float, ...]
    uam: tuple[float, ...]
    zero_temp: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rate_u_per_h: float  # rate running after this decision (temp, kept temp or schedule)
    duration_min: float
    smb_u: float
    enact: bool  # False in open loop and when nothing changes
    reasons: tuple[ReasonDetail, ...]
    iob_u: float
    cob_g: float
    bg_mg_dl: float
    eventual_bg_mg_dl: float
    min_guard_bg_mg_dl: float
    min_predicted_bg_mg_dl: float
    threshold_mg_dl: float
    sensitivity_ratio: float
    insulin_required_u: float
    max_safe_basal_u_per_h: float
    scheduled_basal_u_per_h: float
    deviation_mg_dl_per_5min: float
    forecast: Forecast


def _arr(values: list[float]) -> F64:
    return np.asarray(values, dtype=np.float64)


def pack_params(
    settings: TherapySettings,
    *,
    now_s: float,
    mode: Mode,
    pump: PumpState,
    cgm_noise_level: float = 0.0,
    last_smb_s: float | None = None,
    sensitivity_ratio: float | None = None,
) -> F64:
    """The parameter slots of one decision (for services that keep their own arrays)."""
    s = settings
    model: InsulinModel = INSULIN_PRESETS[s.insulin]
    p = np.zeros(N_PARAMS)
    nan = math.nan
    slots = {
        Param.NOW_S: now_s,
        Param.MODE: float(mode),
        Param.AGE_GROUP: float(AGE_GROUPS.index(s.age_group)),
        Param.ISF: s.isf_mg_dl_per_u,
        Param.CR: s.carb_ratio_g_per_u,
        Param.MIN_BG: s.min_bg_mg_dl,
        Param.MAX_BG: s.max_bg_mg_dl,
        Param.SUSPEND_THRESHOLD: s.suspend_threshold_mg_dl,
        Param.MAX_BASAL: s.max_basal_u_per_h,
        Param.MAX_IOB: s.max_iob_u,
        Param.MAX_BOLUS: s.max_bolus_u,
        Param.INSULIN_DURATION_MIN: model.duration_min,
        Param.INSULIN_PEAK_MIN: model.peak_min,
        Param.INSULIN_DELAY_MIN: model.delay_min,
        Param.INSULIN_MODEL: float(model.kind == InsulinModelKind.BILINEAR),
        Param.CARB_MODEL: float(s.carb_model),
        Param.UTC_OFFSET_MIN: s.utc_offset_min,
        Param.NOISE_LEVEL: cgm_noise_level,
        Param.RUNNING_TEMP_RATE: (
            nan if pump.running_temp_rate_u_per_h is None else pump.running_temp_rate_u_per_h
        ),
        Param.RUNNING_TEMP_REMAINING_MIN: pump.running_temp_remaining_min,
        Param.BOLUS_IN_PROGRESS: float(pump.bolus_in_progress),
        Param.UNCERTAIN_DELIVERY: float(pump.uncertain_delivery),
        Param.LAST_BOLUS_S: nan if pump.last_bolus_s is None else pump.last_bolus_s,
        Param.LAST_SMB_S: nan if last_smb_s is None else last_smb_s,
        Param.SENSITIVITY_RATIO: nan if sensitivity_ratio is None else sensitivity_ratio,
        Param.BASAL_INCREMENT: s.basal_increment_u_per_h,
        Param.BOLUS_INCREMENT: s.bolus_increment_u,
        Param.ENABLE_UAM: float(s.enable_uam),
    }
    for slot, value in slots.items():
        p[slot] = value
    return p


def pack(inp: DecisionInput) -> PackedInput:
    """Validated input → kernel arrays (sorted by time, stable)."""
    s = inp.settings
    p = pack_params(
        s,
        now_s=inp.now_s,
        mode=inp.mode,
        pump=inp.pump,
        cgm_noise_level=inp.cgm_noise_level,
        last_smb_s=inp.last_smb_s,
        sensitivity_ratio=inp.sensitivity_ratio,
    )
    order = sorted(range(len(inp.cgm_t_s)), key=lambda i: inp.cgm_t_s[i])
    doses = sorted(inp.doses, key=lambda d: d.t_s)
    carbs = sorted(inp.carbs, key=lambda c: c.t_s)
    return PackedInput(
        params=p,
        cgm_t_s=_arr([inp.cgm_t_s[i] for i in order]),
        cgm_mg_dl=_arr([inp.cgm_mg_dl[i] for i in order]),
        dose_t_s=_arr([d.t_s for d in doses]),
        dose_kind=_arr([float(d.kind) for d in doses]),
        dose_amount=_arr([0.0 if d.kind == DoseKind.SUSPEND else d.amount for d in doses]),
        dose_duration_min=_arr([d.duration_min for d in doses]),
        carb_t_s=_arr([c.t_s for c in carbs]),
        carb_g=_arr([c.carbs_g for c in carbs]),
        carb_absorption_min=_arr([c.absorption_min for c in carbs]),
        basal_start_min=_arr([b.start_min for b in s.basal_schedule]),
        basal_rate_u_per_h=_arr([b.rate_u_per_h for b in s.basal_schedule]),
    )


def decide_packed(packed: PackedInput, out: F64 | None = None) -> F64:
    """Compiled decision on packed arrays; returns the raw slots (kernels._layout.Out)."""
    if out is None:
        out = np.empty(N_OUT)
    _call(_decide.decide_packed, packed, out)
    return out


def _call(kernel: Callable[..., int], packed: PackedInput, out: F64) -> None:
    kernel(
        packed.params, packed.cgm_t_s, packed.cgm_mg_dl, packed.dose_t_s, packed.dose_kind,
        packed.dose_amount, packed.dose_duration_min, packed.carb_t_s, packed.carb_g,
        packed.carb_absorption_min, packed.basal_start_min, packed.basal_rate_u_per_h, out,
    )  # fmt: skip


def _reasons(bits: int) -> tuple[ReasonDetail, ...]:
    return tuple(
        ReasonDetail(str(r.name), REASON_TEXT[r])
        for r in Reason
        if bits & r.value and r.name is not None
    )


def decode(out: F64, now_s: float) -> Decision:
    """Raw output slots → Decision."""

    def line(start: int) -> tuple[float, ...]:
        return tuple(float(x) for x in out[start : start + N_FORECAST])

    return Decision(
        action=Action(int(out[Out.ACTION])),
        rate_u_per_h=float(out[Out.RATE]),
        duration_min=float(out[Out.DURATION]),
        smb_u=float(out[Out.SMB]),
        enact=bool(out[Out.ENACT]),
        reasons=_reasons(int(out[Out.REASONS])),
        iob_u=float(out[Out.IOB]),
        cob_g=float(out[Out.COB]),
        bg_mg_dl=float(out[Out.BG]),
        eventual_bg_mg_dl=float(out[Out.EVENTUAL_BG]),
        min_guard_bg_mg_dl=float(out[Out.MIN_GUARD_BG]),
        min_predicted_bg_mg_dl=float(out[Out.MIN_PRED_BG]),
        threshold_mg_dl=float(out[Out.THRESHOLD]),
        sensitivity_ratio=float(out[Out.SENSITIVITY_RATIO]),
        insulin_required_u=float(out[Out.INSULIN_REQ]),
        max_safe_basal_u_per_h=float(out[Out.MAX_SAFE_BASAL]),
        scheduled_basal_u_per_h=float(out[Out.SCHEDULED_BASAL]),
        deviation_mg_dl_per_5min=float(out[Out.DEVIATION]),
        forecast=Forecast(
            start_s=now_s,
            step_min=5,
            main=line(Out.LINE_MAIN),
            iob=line(Out.LINE_IOB),
            cob=line(Out.LINE_COB),
            uam=line(Out.LINE_UAM),
            zero_temp=line(Out.LINE_ZT),
        ),
    )


def _run(inp: DecisionInput, kernel: Callable[..., int]) -> Decision:
    packed = pack(inp)
    out = np.empty(N_OUT)
    _call(kernel, packed, out)
    return decode(out, inp.now_s)


def decide(inp: DecisionInput) -> Decision:
    """Decide the next temp basal / micro-bolus / suspend for one person (compiled kernel).

    Rules (brief §6): max safe basal = min(max_basal, 3 × max scheduled, 4 × current basal);
    30-min temps, kept when within ±20 % with > 20 min left; SMB ≤ min(½ insulin required,
    30 min of basal), ≥ 3 min apart, never while a bolus runs or after a newer bolus; max IOB
    (0 = no automatic insulin above basal); suspend below max(min_bg - ½(min_bg - 40), Loop
    threshold) now or in any guard line; no increase on stale / future / noisy / flat CGM; no
    dosing on uncertain delivery; age-group hard limits; sensitivity 0.7–1.2.
    """
    return _run(inp, _decide.decide_packed)


def forecast(inp: DecisionInput) -> Forecast:
    """The 6-h forecast lines for this state (the same lines `decide` returns)."""
    return decide(inp).forecast


def decide_reference(inp: DecisionInput) -> Decision:
    """The same decision computed by the plain-Python reference (for tests and comparison)."""
    return _run(inp, decide_packed_reference)
