"""Local hard limits: written once at provisioning, read-only afterwards, checked on every command.

The limits live in a small JSON file on the hub, created with `provision_limits` (it refuses to
overwrite an existing file and leaves it read-only) and read with `load_limits`. Nothing in the
command path can write it: no command, setting or RPC maps to a change. A clinician may provision
limits *below* the age-group maxima of brief §6, never above. The file carries a SHA-256 of its
content so a corrupted file is refused rather than half-read.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from langerhans.device.v1 import device_pb2

__all__ = [
    "AGE_GROUP_MAXIMA",
    "AgeGroup",
    "HardLimits",
    "LimitViolation",
    "LimitsFileError",
    "check_command",
    "load_limits",
    "provision_limits",
]


class AgeGroup(enum.Enum):
    CHILD = "child"
    TEEN = "teen"
    ADULT = "adult"
    RESISTANT = "resistant"
    PREGNANT = "pregnant"


@dataclass(frozen=True, slots=True)
class HardLimits:
    age_group: AgeGroup
    max_bolus_u: float
    max_basal_u_per_h: float
    max_iob_u: float
    # An automatic temp basal runs at most this long: if the cloud disappears, the pump is back on
    # its schedule within two hours at the latest.
    max_automatic_temp_duration_min: int = 120
    max_manual_temp_duration_min: int = 24 * 60
    max_extended_bolus_duration_min: int = 8 * 60
    min_extended_bolus_duration_min: int = 30


# brief §6: max bolus 5/10/17/25/60 U, max basal 2/5/10/12/25 U/h, max IOB 7/13/22/30/70 U
AGE_GROUP_MAXIMA: dict[AgeGroup, HardLimits] = {
    AgeGroup.CHILD: HardLimits(AgeGroup.CHILD, 5.0, 2.0, 7.0),
    AgeGroup.TEEN: HardLimits(AgeGroup.TEEN, 10.0, 5.0, 13.0),
    AgeGroup.ADULT: HardLimits(AgeGroup.ADULT, 17.0, 10.0, 22.0),
    AgeGroup.RESISTANT: HardLimits(AgeGroup.RESISTANT, 25.0, 12.0, 30.0),
    AgeGroup.PREGNANT: HardLimits(AgeGroup.PREGNANT, 60.0, 25.0, 70.0),
}


class LimitsFileError(Exception):
    """The limits file is missing, corrupt, or would exceed the age-group maxima."""


def _validate(limits: HardLimits) -> None:
    ceiling = AGE_GROUP_MAXIMA[limits.age_group]
    pairs = [
        ("max_bolus_u", limits.max_bolus_u, ceiling.max_bolus_u),
        ("max_basal_u_per_h", limits.max_basal_u_per_h, ceiling.max_basal_u_per_h),
        ("max_iob_u", limits.max_iob_u, ceiling.max_iob_u),
        (
            "max_automatic_temp_duration_min",
            limits.max_automatic_temp_duration_min,
            ceiling.max_automatic_temp_duration_min,
        ),
        (
            "max_manual_temp_duration_min",
            limits.max_manual_temp_duration_min,
            ceiling.max_manual_temp_duration_min,
        ),
        (
            "max_extended_bolus_duration_min",
            limits.max_extended_bolus_duration_min,
            ceiling.max_extended_bolus_duration_min,
        ),
    ]
    for name, value, maximum in pairs:
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise LimitsFileError(f"{name} must be a finite non-negative number, got {value!r}")
        if value > maximum:
            raise LimitsFileError(
                f"{name} {value} exceeds the {limits.age_group.value} maximum {maximum}"
            )


def _digest(body: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def provision_limits(path: Path, age_group: AgeGroup, **lower: float | int) -> HardLimits:
    """Write the hub's limits once: the age-group maxima, optionally lowered per field."""
    base = asdict(AGE_GROUP_MAXIMA[age_group])
    unknown = set(lower) - set(base) - {"age_group"}
    if unknown:
        raise LimitsFileError(f"unknown limit(s): {sorted(unknown)}")
    base.update(lower)
    base["age_group"] = age_group
    limits = HardLimits(**base)
    _validate(limits)
    body = {k: (v.value if isinstance(v, AgeGroup) else v) for k, v in asdict(limits).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError as exc:
        raise LimitsFileError(f"{path} exists: hard limits are provisioned only once") from exc
    with os.fdopen(fd, "w") as fh:
        json.dump({"limits": body, "sha256": _digest(body)}, fh, sort_keys=True, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    return limits


def load_limits(path: Path) -> HardLimits:
    try:
        doc = json.loads(path.read_text())
        body = doc["limits"]
        if doc["sha256"] != _digest(body):
            raise LimitsFileError(f"{path}: checksum mismatch, refusing corrupted limits")
        body = dict(body)
        body["age_group"] = AgeGroup(body["age_group"])
        limits = HardLimits(**body)
    except LimitsFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LimitsFileError(f"{path}: cannot load hard limits: {exc}") from exc
    _validate(limits)
    return limits


@dataclass(frozen=True, slots=True)
class LimitViolation:
    detail: str


_AUTOMATIC = device_pb2.PumpCommandOrigin.PUMP_COMMAND_ORIGIN_AUTOMATIC


def check_command(
    limits: HardLimits,
    command: device_pb2.PumpCommand,
    *,
    iob_u: float | None = None,
    scheduled_basal_u_per_h: float | None = None,
) -> LimitViolation | None:
    """None when the command is within every hard limit, else the first violation.

    `iob_u` is the hub's insulin-on-board estimate; automatic boluses are refused without one.
    """
    automatic = command.origin == _AUTOMATIC
    action = command.WhichOneof("action")
    if iob_u is not None and (not math.isfinite(iob_u) or iob_u < 0):
        return LimitViolation(f"IOB estimate {iob_u!r} is not usable")
    if action == "set_temp_basal":
        rate = command.set_temp_basal.rate_u_per_h
        duration = command.set_temp_basal.duration_min
        if not math.isfinite(rate) or rate < 0:
            return LimitViolation(f"temp basal rate {rate!r} is not a valid rate")
        if rate > limits.max_basal_u_per_h:
            return LimitViolation(
                f"temp basal {rate} U/h above the hard limit {limits.max_basal_u_per_h} U/h"
            )
        max_duration = (
            limits.max_automatic_temp_duration_min
            if automatic
            else limits.max_manual_temp_duration_min
        )
        if duration <= 0 or duration > max_duration:
            return LimitViolation(f"temp basal duration {duration} min outside 1–{max_duration}")
        if automatic and iob_u is not None and scheduled_basal_u_per_h is not None:
            extra_u = max(0.0, rate - scheduled_basal_u_per_h) * duration / 60.0
            if extra_u > 0 and iob_u + extra_u > limits.max_iob_u:
                return LimitViolation(
                    f"IOB {iob_u:.2f} U + {extra_u:.2f} U above basal exceeds "
                    f"max IOB {limits.max_iob_u} U"
                )
        return None
    if action == "deliver_bolus":
        b = command.deliver_bolus
        if not math.isfinite(b.insulin_u) or b.insulin_u <= 0:
            return LimitViolation(f"bolus amount {b.insulin_u!r} is not a valid amount")
        if b.insulin_u > limits.max_bolus_u:
            return LimitViolation(
                f"bolus {b.insulin_u} U above the hard limit {limits.max_bolus_u} U"
            )
        if not math.isfinite(b.immediate_pct) or not 0 <= b.immediate_pct <= 100:
            return LimitViolation(f"immediate share {b.immediate_pct!r} outside 0–100 %")
        if b.immediate_pct < 100 and not (
            limits.min_extended_bolus_duration_min
            <= b.extended_duration_min
            <= limits.max_extended_bolus_duration_min
        ):
            return LimitViolation(
                f"extended part over {b.extended_duration_min} min outside "
                f"{limits.min_extended_bolus_duration_min}–"
                f"{limits.max_extended_bolus_duration_min} min"
            )
        if (automatic or b.automatic) and iob_u is None:
            return LimitViolation("automatic bolus without an IOB estimate")
        if iob_u is not None and iob_u + b.insulin_u > limits.max_iob_u:
            return LimitViolation(
                f"IOB {iob_u:.2f} U + bolus {b.insulin_u} U exceeds max IOB {limits.max_iob_u} U"
            )
        return None
    if action in ("cancel_temp_basal", "suspend", "resume"):
        return None  # reduce or restore delivery; nothing to bound
    return LimitViolation(f"unknown action {action!r}")
