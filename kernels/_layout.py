"""Packed layout of a decision: parameter slots, output slots, modes, actions and reason bits.

Shared by the compiled kernel (kernels/_decide.pyx repeats these numbers as a C enum and exposes
them through `layout()`; a test checks the two agree), the reference and the public wrapper.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "AGE_GROUPS",
    "HARD_MAX_BASAL_U_PER_H",
    "HARD_MAX_BOLUS_U",
    "HARD_MAX_IOB_U",
    "N_FORECAST",
    "N_OUT",
    "N_PARAMS",
    "Action",
    "DoseKind",
    "Mode",
    "Out",
    "Param",
    "Reason",
]

N_FORECAST = 73  # now + 72 five-minute steps = 6 h
_NFC = N_FORECAST  # Out has a member named N_FORECAST, which would shadow it in the class body


class Param(IntEnum):
    NOW_S = 0
    MODE = 1
    AGE_GROUP = 2
    ISF = 3
    CR = 4
    MIN_BG = 5
    MAX_BG = 6
    SUSPEND_THRESHOLD = 7
    MAX_BASAL = 8
    MAX_IOB = 9
    MAX_BOLUS = 10
    INSULIN_DURATION_MIN = 11
    INSULIN_PEAK_MIN = 12
    INSULIN_DELAY_MIN = 13
    INSULIN_MODEL = 14
    CARB_MODEL = 15
    UTC_OFFSET_MIN = 16
    NOISE_LEVEL = 17
    RUNNING_TEMP_RATE = 18
    RUNNING_TEMP_REMAINING_MIN = 19
    BOLUS_IN_PROGRESS = 20
    UNCERTAIN_DELIVERY = 21
    LAST_BOLUS_S = 22
    LAST_SMB_S = 23
    SENSITIVITY_RATIO = 24
    BASAL_INCREMENT = 25
    BOLUS_INCREMENT = 26
    ENABLE_UAM = 27


N_PARAMS = 28


class Out(IntEnum):
    ACTION = 0
    RATE = 1
    DURATION = 2
    SMB = 3
    REASONS = 4
    IOB = 5
    COB = 6
    BG = 7
    EVENTUAL_BG = 8
    MIN_GUARD_BG = 9
    SENSITIVITY_RATIO = 10
    INSULIN_REQ = 11
    MAX_SAFE_BASAL = 12
    SCHEDULED_BASAL = 13
    DEVIATION = 14
    ENACT = 15
    N_FORECAST = 16
    THRESHOLD = 17
    MIN_PRED_BG = 18
    ACTIVITY = 19
    LINE_MAIN = 20
    LINE_IOB = 20 + _NFC
    LINE_COB = 20 + 2 * _NFC
    LINE_UAM = 20 + 3 * _NFC
    LINE_ZT = 20 + 4 * _NFC


N_OUT = 20 + 5 * N_FORECAST


class Mode(IntEnum):
    OPEN_LOOP = 0
    LOW_GLUCOSE_SUSPEND = 1
    CLOSED_LOOP = 2
    CLOSED_LOOP_SMB = 3


class Action(IntEnum):
    NONE = 0  # leave the pump as it is (the running temp, or the schedule)
    TEMP_BASAL = 1  # set a 30-min temp basal (rate 0 = suspend)
    CANCEL_TEMP = 2  # return to the scheduled basal


class DoseKind(IntEnum):
    BOLUS = 0  # amount in U; duration > 0 = extended (the extended part of a dual wave)
    TEMP_BASAL = 1  # amount = rate in U/h over duration; ends early at the next temp or suspend
    SUSPEND = 2  # amount ignored (rate 0) over duration


class Reason(IntFlag):
    NO_CGM = 1 << 0
    STALE_CGM = 1 << 1
    FUTURE_CGM = 1 << 2
    NOISY_CGM = 1 << 3
    FLAT_CGM = 1 << 4
    UNCERTAIN_DELIVERY = 1 << 5
    OPEN_LOOP = 1 << 6
    SUSPEND_ONLY_MODE = 1 << 7
    LOW_GLUCOSE = 1 << 8
    PREDICTED_LOW = 1 << 9
    BELOW_RANGE = 1 << 10
    IN_RANGE = 1 << 11
    ABOVE_RANGE = 1 << 12
    MAX_BASAL_LIMIT = 1 << 13
    MAX_IOB_LIMIT = 1 << 14
    MAX_IOB_ZERO = 1 << 15
    HARD_LIMIT = 1 << 16
    NO_INCREASE = 1 << 17
    TEMP_KEPT = 1 << 18
    SMB_BOLUS_RUNNING = 1 << 19
    SMB_BOLUS_NEWER = 1 << 20
    SMB_TOO_SOON = 1 << 21
    SMB_LIMITED = 1 << 22
    SENSITIVITY_BOUNDED = 1 << 23
    ZERO_TEMP_CUT = 1 << 24
    RESUME = 1 << 25


AGE_GROUPS = ("child", "teen", "adult", "resistant", "pregnant")
HARD_MAX_BOLUS_U = (5.0, 10.0, 17.0, 25.0, 60.0)
HARD_MAX_BASAL_U_PER_H = (2.0, 5.0, 10.0, 12.0, 25.0)
HARD_MAX_IOB_U = (7.0, 13.0, 22.0, 30.0, 70.0)
