"""The platform's dosing engine as an in-silico controller.

Keeps the history the dosing-engine service would keep for one person (CGM readings, doses from
the pump history, announced carbs) and every 5 minutes calls the stateless decision API
(`kernels.decision`, compiled kernel on packed arrays) in the configured mode. Announced carbs
get a meal bolus from the bolus calculator (`kernels.bolus`), as the person would do in the app;
the decision in that step then counts the meal bolus, so the loop does not stack on it.

The loop settings are what a clinician would set when starting a closed loop (`LoopTuning`):
they are derived from the person's pump settings; the safety rules themselves are the kernel's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from kernels._layout import N_OUT, Action, DoseKind, Mode, Out, Param
from kernels.bolus import bolus_advice
from kernels.carbs import CarbModel
from kernels.decision import (
    BasalSegment,
    DecisionInput,
    PackedInput,
    decide_packed,
    pack,
)
from kernels.decision import TherapySettings as KernelSettings
from kernels.increase_margin import (
    DEFAULT_POST_LOW_NO_SMB_MIN,
    DEFAULT_SENSOR_ERROR_FRACTION,
    check_iob_fraction,
    check_post_low_min,
    check_sensor_error_fraction,
    decide_packed_with_margin,
    low_reading_within,
    proposes_increase,
    within_increase_margin,
)
from services.cgm_ingestion.assessment import NOISY_LEVEL, Fault, Point, faults_at, noise_level
from sim.controller import (
    BolusCommand,
    ControllerInput,
    ControllerOutput,
    TempBasalCommand,
)
from sim.person import TherapySettings

__all__ = [
    "DosingEngineController",
    "LoopTuning",
    "carb_ratio_factor",
    "kernel_settings",
    "lowered_target_range",
]

HISTORY_S: Final = 24 * 3600  # what the service keeps per person (autosens 8 h + 6 h DIA)
_AGE_GROUP: Final = {"child": "child", "adolescent": "teen", "adult": "adult"}
_F64 = np.float64
_DOUBTFUL: Final = frozenset({Fault.JUMP, Fault.FLAT_SIGNAL, Fault.COMPRESSION_LOW})
_ASSESS_WINDOW_S: Final = 90 * 60  # what the noise, flat and compression checks look back on


@dataclass(frozen=True, slots=True)
class LoopTuning:
    """Controller-side settings: targets, max IOB, SMB and carb absorption (not safety rules)."""

    mode: Mode = Mode.CLOSED_LOOP_SMB
    min_bg_offset_mg_dl: float = -20.0  # target range = person's target + offsets
    max_bg_offset_mg_dl: float = -10.0
    suspend_threshold_mg_dl: float = 80.0
    max_iob_factor: float = 1.0  # × the person's max IOB (never above it or the hard limit)
    absorption_min: float = 180.0
    carb_model: CarbModel = CarbModel.PARABOLIC
    enable_uam: bool = True
    meal_bolus: bool = True  # the person boluses for announced carbs with the calculator
    meal_bolus_fraction: float = 1.0  # share of the calculated meal bolus given up front
    subtract_iob_from_meal: bool = True
    late_carbs_min: float = 120.0  # a meal entered this long after eating gets no meal bolus
    # after a reading < 70 mg/dL the person has most likely eaten rescue carbs the loop does not
    # know about: no micro-boluses (temp basals only) for this long, so the rise they cause is
    # not chased with SMBs (kernels.increase_margin, the service's rule; 0–240 min)
    post_low_no_smb_min: float = DEFAULT_POST_LOW_NO_SMB_MIN
    isf_factor: float = 1.0  # loop ISF = pump ISF × factor (clinician's closed-loop setting)
    # loop and meal-bolus carb ratio = pump CR × factor: meals are bolused when eating starts
    # (no pre-bolus) and carbs act faster than insulin, so meal insulin is front-loaded; the low
    # guard's zero temp after the bolus takes back part of it (in-silico tuning). Per age group,
    # as a clinician sets a person's closed-loop ratio: children's and adolescents' meals rise
    # fastest against their insulin (None: the adults' factor)
    carb_ratio_factor: float = 0.75
    carb_ratio_factor_child: float | None = 0.65
    carb_ratio_factor_adolescent: float | None = 0.7
    # carb-ratio schedule on top of the factor above: (start minute of day, multiplier), first
    # at 0, as a clinician programs a pump's CR schedule (the service looks the ratio up by
    # the time of day); applies to the loop and the meal bolus
    carb_ratio_schedule: tuple[tuple[int, float], ...] = ((0, 1.0),)
    # target schedule on top of the range above: (start minute, end minute, mg/dL lower) windows
    # of the day, never below `target_window_floor_mg_dl`, as a clinician programs an "eating
    # soon" target (Loop's pre-meal preset, AndroidAPS's eating-soon temp target) for the 2 h
    # before a person's usual breakfast, lunch and dinner (the pump's target schedule, which
    # the service looks up by time of day). Glucose is ~5 mg/dL lower when the meal starts
    # (measured: docs/dosing-engine.md)
    target_drop_windows: tuple[tuple[int, int, float], ...] = (
        (5 * 60 + 30, 7 * 60 + 30, 30.0),
        (10 * 60 + 30, 12 * 60 + 30, 30.0),
        (16 * 60 + 30, 18 * 60 + 30, 30.0),
    )
    # the gateway's lowest correction target (gateway.therapy.guardrails.TARGET_MIN_MG_DL)
    target_window_floor_mg_dl: float = 80.0
    # the meal bolus corrects to the target in effect at the meal (the schedule's) instead of
    # the middle of the loop's usual range (measured, not kept: docs/dosing-engine.md)
    meal_bolus_to_scheduled_target: bool = False
    # "super bolus" (Walsh): this many minutes of scheduled basal added to a meal bolus; the
    # loop's low guard then runs the zero temp that takes it back (0 = off)
    meal_bolus_basal_min: float = 0.0
    # with a super bolus, also program the pump to run a zero temp for those minutes, and keep
    # it (the loop may still add micro-boluses, but sets no temp and no cancel in that window):
    # the basal is taken back on the pump itself, also if the hub goes offline after the meal
    super_bolus_zero_temp: bool = False
    # super bolus only if the loop ran in each of the last this many minutes' 5-min steps
    # (the hub online and the loop running before the meal); 0 = no such check
    super_bolus_loop_running_min: float = 0.0
    # super bolus only for these age groups (empty: everyone)
    super_bolus_groups: tuple[str, ...] = ()
    # super bolus only if the reading at the meal is at least this (0 = any)
    super_bolus_min_bg_mg_dl: float = 0.0
    # post-meal target: for this long after an announced meal was eaten, the loop's target
    # range is lowered by `post_meal_target_drop_mg_dl` (never below 70) for these age groups
    post_meal_target_min: float = 0.0
    post_meal_target_drop_mg_dl: float = 0.0
    post_meal_target_groups: tuple[str, ...] = ("child", "adolescent")
    # assess each reading as cgm-ingestion does (noise level; jump, flat and compression-low
    # faults count as noisy) and pass it to the kernel, whose rule then allows no increase
    assess_cgm: bool = True
    # share of the calculator's correction given with a meal entered ≥ 30 min after eating: the
    # high it corrects is mostly carbs already absorbed, and above the renal threshold glucose
    # also falls on its own; the loop's guarded micro-boluses add more if it is still needed
    late_meal_correction_fraction: float = 0.0
    # meal-bolus carb ratio = pump CR × this (None: the loop's factor above). Below the loop's
    # factor it front-loads meal insulin; the loop, forecasting with its own carb ratio, sees
    # the extra insulin and takes it back with lower temps instead of adding micro-boluses
    meal_carb_ratio_factor: float | None = None
    # forecast margin for any increase (micro-bolus or temp above the schedule): an increase
    # needs the low-guard forecast minimum ≥ suspend threshold + this × IOB × ISF, i.e. it must
    # still be above the threshold if the insulin on board acts this much stronger than the
    # forecast assumes (sensitivity misjudged, sensor reading high). Below it the step runs the
    # schedule (or the low guard's lower temp); 0 = off
    increase_margin_iob_fraction: float = 0.2
    # the margin's allowance for CGM calibration error: the forecast minimum × (1 − this) must
    # clear it (a session reading this share high; kernels.increase_margin, the service's rule)
    increase_margin_sensor_error_fraction: float = DEFAULT_SENSOR_ERROR_FRACTION
    # the meal bolus corrects to the loop's target (middle of its range) instead of the pump's:
    # one target in closed loop, as in AndroidAPS's bolus wizard (measured: TIR +0.2–0.5)
    meal_bolus_to_loop_target: bool = True
    # a rising trend adds this many minutes of it to the glucose the meal bolus corrects (the
    # calculator already reduces for a falling trend); 0 = off
    meal_rising_trend_min: float = 0.0
    # the margin applies to micro-boluses only (the loop may still raise the temp basal)
    increase_margin_smb_only: bool = False
    # no micro-boluses while IOB exceeds this share of max IOB (temp basals only, still within
    # max IOB): the loop adds insulin in smaller steps when much is already on board; 1 = off
    smb_max_iob_share: float = 1.0
    # after a decision whose forecast minimum was below the threshold + margin, no increase for
    # this long: with a noisy or biased sensor the forecast flips between "low ahead" and "high",
    # and a micro-bolus on the first reading that clears the guard is a bet on that one reading
    increase_hold_min: float = 0.0


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def lowered_target_range(
    min_bg_mg_dl: float, max_bg_mg_dl: float, drop_mg_dl: float, floor_mg_dl: float
) -> tuple[float, float]:
    """A target range `drop_mg_dl` lower, its low end never below `floor_mg_dl` and its high
    end never below its low end (post-meal targets, eating-soon windows, the demo's schedule)."""
    low_mg_dl = max(floor_mg_dl, min_bg_mg_dl - drop_mg_dl)
    return low_mg_dl, max(low_mg_dl, max_bg_mg_dl - drop_mg_dl)


def carb_ratio_factor(therapy: TherapySettings, tuning: LoopTuning) -> float:
    """The loop's carb-ratio factor for the person's age group."""
    by_age = {
        "child": tuning.carb_ratio_factor_child,
        "adolescent": tuning.carb_ratio_factor_adolescent,
    }.get(therapy.age_group)
    return tuning.carb_ratio_factor if by_age is None else by_age


def kernel_settings(therapy: TherapySettings, tuning: LoopTuning) -> KernelSettings:
    """The person's pump settings as the decision kernel's therapy settings."""
    cr_factor = carb_ratio_factor(therapy, tuning)
    min_bg = max(70.0, therapy.target_mg_dl + tuning.min_bg_offset_mg_dl)
    max_bg = max(min_bg, therapy.target_mg_dl + tuning.max_bg_offset_mg_dl)
    return KernelSettings(
        isf_mg_dl_per_u=_clip(therapy.isf_mg_dl_per_u * tuning.isf_factor, 10.0, 500.0),
        carb_ratio_g_per_u=_clip(therapy.carb_ratio_g_per_u * cr_factor, 2.0, 150.0),
        min_bg_mg_dl=min_bg,
        max_bg_mg_dl=max_bg,
        suspend_threshold_mg_dl=tuning.suspend_threshold_mg_dl,
        max_basal_u_per_h=therapy.max_basal_u_per_h,
        max_iob_u=min(therapy.max_iob_u, therapy.max_iob_u * tuning.max_iob_factor),
        max_bolus_u=therapy.max_bolus_u,
        age_group=_AGE_GROUP[therapy.age_group],
        insulin="child" if therapy.age_group == "child" else "rapid-acting",
        carb_model=tuning.carb_model,
        basal_schedule=tuple(
            BasalSegment(start_min=float(s), rate_u_per_h=r) for s, r in therapy.basal_schedule
        ),
        enable_uam=tuning.enable_uam,
    )


class DosingEngineController:
    """One person's dosing engine: history in, stateless decision every 5 min, commands out."""

    def __init__(self, therapy: TherapySettings, tuning: LoopTuning | None = None) -> None:
        self.therapy = therapy
        self.tuning = tuning or LoopTuning()
        check_iob_fraction(self.tuning.increase_margin_iob_fraction)
        check_post_low_min(self.tuning.post_low_no_smb_min)
        check_sensor_error_fraction(self.tuning.increase_margin_sensor_error_fraction)
        self.settings = kernel_settings(therapy, self.tuning)
        meal_factor = self.tuning.meal_carb_ratio_factor
        self._meal_carb_ratio = (
            self.settings.carb_ratio_g_per_u
            if meal_factor is None
            else _clip(therapy.carb_ratio_g_per_u * meal_factor, 2.0, 150.0)
        )
        template = pack(
            DecisionInput(now_s=0.0, mode=self.tuning.mode, cgm_t_s=(), cgm_mg_dl=(),
                          settings=self.settings)
        )  # fmt: skip
        self._template = template
        self._cgm_t: list[float] = []
        self._cgm_g: list[float] = []
        # doses: [t_s, kind, amount, duration_min]; boluses replaced by what was delivered
        self._doses: list[list[float]] = []
        self._open_temp: int | None = None  # index of the temp basal still running
        self._open_suspend: int | None = None
        self._pending_bolus: int | None = None  # programmed, delivered amount not yet known
        self._carbs: list[tuple[float, float, float]] = []
        self._last_smb_s: float | None = None
        self._last_guard_fail_s = -math.inf
        self._last_meal_s = -math.inf  # when the newest announced meal was eaten
        self._super_until_s = -math.inf  # pump-side zero temp of a super bolus kept until then
        self._steps_s: list[float] = []  # times of recent steps (the loop running)
        self._out = np.empty(N_OUT)
        self._noise_level = 0.0
        self._super_zero_temp_min = 0.0
        self.decisions = 0

    # ---- history, as the service keeps it -------------------------------------------------
    def _record_events(self, inp: ControllerInput) -> None:
        for ev in inp.new_pump_events:
            t_s = ev.t_min * 60.0
            if ev.kind == "bolus":
                self._doses.append([t_s, float(DoseKind.BOLUS), ev.amount_u, 0.0])
                self._pending_bolus = len(self._doses) - 1
            elif ev.kind == "bolus_delivered":
                if self._pending_bolus is not None:
                    self._doses[self._pending_bolus][2] = ev.amount_u
                    self._pending_bolus = None
            elif ev.kind == "temp_basal":
                self._close_temp(t_s)
                self._doses.append([t_s, float(DoseKind.TEMP_BASAL), ev.amount_u, float(ev.detail)])
                self._open_temp = len(self._doses) - 1
            elif ev.kind == "temp_basal_end":
                self._close_temp(t_s)
            elif ev.kind == "suspend":
                self._doses.append([t_s, float(DoseKind.SUSPEND), 0.0, 0.0])
                self._open_suspend = len(self._doses) - 1
            elif ev.kind == "resume" and self._open_suspend is not None:
                d = self._doses[self._open_suspend]
                d[3] = (t_s - d[0]) / 60.0
                self._open_suspend = None
        if self._open_suspend is not None:  # still suspended: counts up to now
            d = self._doses[self._open_suspend]
            d[3] = max(5.0, (inp.t_min * 60.0 - d[0]) / 60.0)

    def _close_temp(self, t_s: float) -> None:
        if self._open_temp is not None:
            d = self._doses[self._open_temp]
            d[3] = min(d[3], max(0.0, (t_s - d[0]) / 60.0))
            self._open_temp = None

    def _trim(self, now_s: float) -> None:
        horizon = now_s - HISTORY_S
        if self._cgm_t and self._cgm_t[0] < horizon - 3600:
            k = next(i for i, t in enumerate(self._cgm_t) if t >= horizon)
            del self._cgm_t[:k], self._cgm_g[:k]
        if len(self._doses) > 400:
            keep = [i for i, d in enumerate(self._doses) if d[0] + d[3] * 60.0 >= horizon]
            first = keep[0] if keep else len(self._doses)
            if first > 0:
                del self._doses[:first]
                for name in ("_open_temp", "_open_suspend", "_pending_bolus"):
                    idx = getattr(self, name)
                    if idx is not None:
                        setattr(self, name, idx - first if idx >= first else None)
        self._carbs = [c for c in self._carbs if c[0] >= horizon]

    # ---- the decision ---------------------------------------------------------------------
    def _packed(
        self,
        inp: ControllerInput,
        extra_bolus_u: float,
        bolus_running: bool,
        mode: Mode | None = None,
    ) -> PackedInput:
        now_s = inp.t_min * 60.0
        pump = inp.pump
        params = self._template.params.copy()
        params[Param.NOW_S] = now_s
        if mode is not None:
            params[Param.MODE] = float(mode)
        elif self.tuning.mode == Mode.CLOSED_LOOP_SMB and low_reading_within(
            self._cgm_t, self._cgm_g, now_s, self.tuning.post_low_no_smb_min
        ):
            params[Param.MODE] = float(Mode.CLOSED_LOOP)
        running = pump.temp_basal_u_per_h
        if pump.suspended:
            running = 0.0
        params[Param.RUNNING_TEMP_RATE] = math.nan if running is None else running
        params[Param.RUNNING_TEMP_REMAINING_MIN] = float(pump.temp_basal_remaining_min)
        params[Param.BOLUS_IN_PROGRESS] = float(bolus_running or pump.bolus_remaining_u > 0)
        params[Param.UNCERTAIN_DELIVERY] = 0.0
        last_bolus = pump.last_bolus_t_min
        last_bolus_s = math.nan if last_bolus is None else last_bolus * 60.0
        if extra_bolus_u > 0:
            last_bolus_s = now_s
        params[Param.LAST_BOLUS_S] = last_bolus_s
        params[Param.LAST_SMB_S] = math.nan if self._last_smb_s is None else self._last_smb_s
        params[Param.NOISE_LEVEL] = self._noise_level
        tuning = self.tuning
        cr_multiplier = self._cr_multiplier(inp.t_min)
        if cr_multiplier != 1.0:
            params[Param.CR] = _clip(self.settings.carb_ratio_g_per_u * cr_multiplier, 2.0, 150.0)
        if (
            tuning.post_meal_target_min > 0
            and self.therapy.age_group in tuning.post_meal_target_groups
            and now_s - self._last_meal_s < tuning.post_meal_target_min * 60.0
        ):
            params[Param.MIN_BG], params[Param.MAX_BG] = lowered_target_range(
                self.settings.min_bg_mg_dl,
                self.settings.max_bg_mg_dl,
                tuning.post_meal_target_drop_mg_dl,
                70.0,
            )
        drop_mg_dl = self._target_drop_mg_dl(inp.t_min)
        if drop_mg_dl > 0:
            params[Param.MIN_BG], params[Param.MAX_BG] = lowered_target_range(
                self.settings.min_bg_mg_dl,
                self.settings.max_bg_mg_dl,
                drop_mg_dl,
                tuning.target_window_floor_mg_dl,
            )
        doses = self._doses
        if extra_bolus_u > 0:
            doses = [*doses, [now_s, float(DoseKind.BOLUS), extra_bolus_u, 0.0]]
        d = np.asarray(doses, dtype=_F64).reshape(-1, 4)
        order = np.argsort(d[:, 0], kind="stable")
        d = d[order]
        c = np.asarray(self._carbs, dtype=_F64).reshape(-1, 3)
        c = c[np.argsort(c[:, 0], kind="stable")]
        return replace(
            self._template,
            params=params,
            cgm_t_s=np.asarray(self._cgm_t, dtype=_F64),
            cgm_mg_dl=np.asarray(self._cgm_g, dtype=_F64),
            dose_t_s=np.ascontiguousarray(d[:, 0]),
            dose_kind=np.ascontiguousarray(d[:, 1]),
            dose_amount=np.ascontiguousarray(d[:, 2]),
            dose_duration_min=np.ascontiguousarray(d[:, 3]),
            carb_t_s=np.ascontiguousarray(c[:, 0]),
            carb_g=np.ascontiguousarray(c[:, 1]),
            carb_absorption_min=np.ascontiguousarray(c[:, 2]),
        )

    def _decide(
        self, inp: ControllerInput, extra_bolus_u: float = 0.0, mode: Mode | None = None
    ) -> np.ndarray:
        self.decisions += 1
        packed = self._packed(inp, extra_bolus_u, extra_bolus_u > 0, mode)
        return decide_packed(packed, self._out)

    def _within_margin(self, out: np.ndarray) -> bool:
        """Whether an increase proposed in `out` keeps the forecast minimum above the suspend
        threshold by the margin for the insulin on board."""
        return within_increase_margin(
            min_guard_bg_mg_dl=float(out[Out.MIN_GUARD_BG]),
            threshold_mg_dl=float(out[Out.THRESHOLD]),
            iob_u=float(out[Out.IOB]),
            isf_mg_dl_per_u=self.settings.isf_mg_dl_per_u,
            sensitivity_ratio=float(out[Out.SENSITIVITY_RATIO]),
            iob_fraction=self.tuning.increase_margin_iob_fraction,
            sensor_error_fraction=self.tuning.increase_margin_sensor_error_fraction,
        )

    def _step_with_levers(self, inp: ControllerInput, meal_u: float, now_s: float) -> np.ndarray:
        """A meal-bolus step, or the measured levers (hold, micro-boluses only) switched on."""
        out = self._decide(inp, meal_u)
        held = now_s - self._last_guard_fail_s < self.tuning.increase_hold_min * 60.0
        if not self._within_margin(out):
            self._last_guard_fail_s = now_s
        # the shared predicates of kernels.increase_margin plus the levers: an increase outside
        # the margin (or held) is decided again in a lower mode. A meal bolus step is the
        # person's own bolus, not the loop's increase.
        if meal_u == 0 and (held or not self._within_margin(out)):
            smb_u = float(out[Out.SMB])
            if smb_u > 0 and out[Out.ENACT] and self.tuning.increase_margin_smb_only:
                out = self._decide(inp, meal_u, Mode.CLOSED_LOOP)
            elif not self.tuning.increase_margin_smb_only and proposes_increase(
                enact=bool(out[Out.ENACT]),
                action=Action(int(out[Out.ACTION])),
                rate_u_per_h=float(out[Out.RATE]),
                scheduled_u_per_h=float(out[Out.SCHEDULED_BASAL]),
                smb_u=smb_u,
            ):
                out = self._decide(inp, meal_u, Mode.LOW_GLUCOSE_SUSPEND)
        return out

    def _assess(self, t_min: int) -> float:
        """Noise level of the newest reading as cgm-ingestion would publish it; a jump, flat
        signal or compression low (22–07 h) counts as noisy."""
        t, g = self._cgm_t, self._cgm_g
        first = len(t) - 1
        while first > 0 and t[-1] - t[first - 1] < _ASSESS_WINDOW_S:
            first -= 1
        points = [Point(t[i], g[i]) for i in range(first, len(t))]
        last = len(points) - 1
        level = noise_level(points, last)
        hour = (t_min % 1440) // 60
        faults = faults_at(points, last, night=hour >= 22 or hour < 7)
        if faults & _DOUBTFUL:
            level = max(level, NOISY_LEVEL)
        return float(level)

    def _trend_mg_dl_per_min(self, now_s: float) -> float:
        t, g = self._cgm_t, self._cgm_g
        if len(t) < 2 or now_s - t[-1] > 12 * 60:
            return 0.0
        ref = [i for i in range(len(t) - 1) if 10 * 60 <= t[-1] - t[i] <= 20 * 60]
        if not ref:
            return 0.0
        i = ref[-1]
        return (g[-1] - g[i]) / ((t[-1] - t[i]) / 60.0)

    def step(self, inp: ControllerInput) -> ControllerOutput | None:
        now_s = inp.t_min * 60.0
        self._record_events(inp)
        if inp.cgm is not None:
            self._cgm_t.append(now_s)
            self._cgm_g.append(float(min(max(inp.cgm.glucose_mg_dl, 39), 401)))
            if self.tuning.assess_cgm:
                self._noise_level = self._assess(inp.t_min)
        for c in inp.carbs:
            self._carbs.append((c.t_min * 60.0, c.carbs_g, self.tuning.absorption_min))
            self._last_meal_s = max(self._last_meal_s, c.t_min * 60.0)
        if self.tuning.super_bolus_loop_running_min > 0:
            window_s = self.tuning.super_bolus_loop_running_min * 60.0
            self._steps_s = [t for t in self._steps_s if t >= now_s - window_s]
            self._steps_s.append(now_s)
        self._trim(now_s)
        pump = inp.pump
        if pump.fault is not None:
            return None
        meal_u = 0.0
        if inp.carbs and self.tuning.meal_bolus and not pump.suspended:
            # carbs entered late are partly absorbed (and already in the glucose the correction
            # sees): bolus only for the part still to come
            remaining_g = sum(
                c.carbs_g
                * min(1.0, max(0.0, 1.0 - (inp.t_min - c.t_min) / self.tuning.late_carbs_min))
                for c in inp.carbs
            )
            late = any(inp.t_min - c.t_min >= 30 for c in inp.carbs)
            meal_u = self._meal_bolus_u(inp, remaining_g, late=late)
        tuning = self.tuning
        if meal_u == 0 and tuning.increase_hold_min <= 0 and not tuning.increase_margin_smb_only:
            # the default: the shared rules exactly as the service applies them (margin, and
            # no micro-bolus after a low reading)
            out, withheld = decide_packed_with_margin(
                self._packed(inp, 0.0, False, self.tuning.mode),
                tuning.increase_margin_iob_fraction,
                self._out,
                post_low_no_smb_min=tuning.post_low_no_smb_min,
                sensor_error_fraction=tuning.increase_margin_sensor_error_fraction,
            )
            self.decisions += 1 + int(withheld)
        else:
            out = self._step_with_levers(inp, meal_u, now_s)
        if (
            self.tuning.smb_max_iob_share < 1.0
            and meal_u == 0
            and out[Out.SMB] > 0
            and out[Out.IOB] + out[Out.SMB]
            > self.tuning.smb_max_iob_share * self.settings.max_iob_u
        ):
            out = self._decide(inp, meal_u, Mode.CLOSED_LOOP)
        action = Action(int(out[Out.ACTION]))
        enact = bool(out[Out.ENACT])
        temp: TempBasalCommand | None = None
        cancel = False
        bolus: BolusCommand | None = None
        if enact and action == Action.TEMP_BASAL:
            rate = float(out[Out.RATE])
            temp = TempBasalCommand(rate, max(5, int(out[Out.DURATION])))
        elif enact and action == Action.CANCEL_TEMP:
            cancel = True
        if now_s < self._super_until_s and (cancel or (temp is not None and temp.rate_u_per_h > 0)):
            temp, cancel = None, False  # the super bolus's zero temp stays on the pump
        smb = float(out[Out.SMB])
        if meal_u > 0:
            bolus = BolusCommand(meal_u)
            if self._super_zero_temp_min > 0:
                temp, cancel = TempBasalCommand(0.0, int(self._super_zero_temp_min)), False
                self._super_until_s = now_s + self._super_zero_temp_min * 60.0
        elif enact and smb > 0 and pump.bolus_remaining_u <= 0 and not pump.suspended:
            bolus = BolusCommand(smb)
            self._last_smb_s = now_s
        if temp is None and bolus is None and not cancel:
            return None
        return ControllerOutput(temp_basal=temp, bolus=bolus, cancel_temp_basal=cancel)

    def _super_bolus_allowed(self, now_s: float, *, late: bool) -> bool:
        """A super bolus for this meal: on, for this age group, not a late entry, and the loop
        ran in every step of the last `super_bolus_loop_running_min` minutes."""
        tuning = self.tuning
        if tuning.meal_bolus_basal_min <= 0 or late:
            return False
        if tuning.super_bolus_groups and self.therapy.age_group not in tuning.super_bolus_groups:
            return False
        window_s = tuning.super_bolus_loop_running_min * 60.0
        if window_s <= 0:
            return True
        recent = [t for t in self._steps_s if t >= now_s - window_s]
        return len(recent) >= int(window_s // 300.0) + 1

    def _target_drop_mg_dl(self, t_min: float) -> float:
        minute = int(t_min) % 1440
        drop_mg_dl = 0.0
        for start_min, end_min, window_drop_mg_dl in self.tuning.target_drop_windows:
            if start_min <= minute < end_min:
                drop_mg_dl = window_drop_mg_dl
        return drop_mg_dl

    def _cr_multiplier(self, t_min: float) -> float:
        minute = int(t_min) % 1440
        multiplier = 1.0
        for start_min, factor in self.tuning.carb_ratio_schedule:
            if start_min <= minute:
                multiplier = factor
        return multiplier

    def _meal_bolus_u(self, inp: ControllerInput, carbs_g: float, *, late: bool) -> float:
        th = self.therapy
        ks = self.settings
        if inp.pump.bolus_remaining_u > 0 or not self._cgm_t:
            return 0.0
        now_s = inp.t_min * 60.0
        fresh = now_s - self._cgm_t[-1] <= 12 * 60
        target = th.target_mg_dl
        if self.tuning.meal_bolus_to_loop_target:
            target = 0.5 * (ks.min_bg_mg_dl + ks.max_bg_mg_dl)
            if self.tuning.meal_bolus_to_scheduled_target:
                low_mg_dl, high_mg_dl = lowered_target_range(
                    ks.min_bg_mg_dl, ks.max_bg_mg_dl, self._target_drop_mg_dl(inp.t_min), 70.0
                )
                target = 0.5 * (low_mg_dl + high_mg_dl)
        bg = self._cgm_g[-1] if fresh else target
        trend = self._trend_mg_dl_per_min(now_s) if fresh else 0.0
        if trend > 0 and not late:
            bg = min(401.0, bg + trend * self.tuning.meal_rising_trend_min)
        if late and bg > target:
            fraction = self.tuning.late_meal_correction_fraction
            bg = target + fraction * (bg - target)
        iob = float(self._decide(inp)[Out.IOB]) if self.tuning.subtract_iob_from_meal else 0.0
        advice = bolus_advice(
            carbs_g=min(carbs_g, 250.0),
            bg_mg_dl=bg,
            target_mg_dl=target,
            isf_mg_dl_per_u=ks.isf_mg_dl_per_u,
            carb_ratio_g_per_u=_clip(
                self._meal_carb_ratio * self._cr_multiplier(inp.t_min), 2.0, 150.0
            ),
            iob_u=iob,
            trend_mg_dl_per_min=trend,
            max_bolus_u=th.max_bolus_u,
            age_group=_AGE_GROUP[th.age_group],
        )
        amount = advice.total_u * self.tuning.meal_bolus_fraction
        self._super_zero_temp_min = 0.0
        if (
            amount > 0
            and bg >= self.tuning.super_bolus_min_bg_mg_dl
            and self._super_bolus_allowed(now_s, late=late)
        ):
            basal = th.basal_at(int(inp.t_min) % 1440)
            amount = min(amount + basal * self.tuning.meal_bolus_basal_min / 60.0, ks.max_bolus_u)
            if self.tuning.super_bolus_zero_temp:
                self._super_zero_temp_min = self.tuning.meal_bolus_basal_min
        return math.floor(amount / 0.05 + 1e-9) * 0.05 if amount >= 0.05 else 0.0
