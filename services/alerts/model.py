"""What the alerts service knows about a person: recent observations and alert settings.

`PatientState` is a small, JSON-serialisable snapshot that the service keeps per person and
stores in the same transaction as the alerts it leads to, so a restart resumes exactly.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "AlertKind",
    "AlertSettings",
    "CarbEntry",
    "GlucosePoint",
    "InsulinDose",
    "PatientState",
    "Severity",
    "severity_of",
]

GLUCOSE_HISTORY = timedelta(hours=4)
INSULIN_HISTORY = timedelta(hours=7)
CARB_HISTORY = timedelta(hours=5)


class AlertKind(enum.StrEnum):
    URGENT_LOW = "urgent_low"
    URGENT_LOW_SOON = "urgent_low_soon"
    LOW = "low"
    HIGH = "high"
    RAPID_FALL = "rapid_fall"
    RAPID_RISE = "rapid_rise"
    NO_CGM_DATA = "no_cgm_data"
    NOT_LOOPING = "not_looping"
    OCCLUSION = "occlusion"
    RESERVOIR_LOW = "reservoir_low"
    RESERVOIR_VERY_LOW = "reservoir_very_low"
    BATTERY_LOW = "battery_low"
    BATTERY_VERY_LOW = "battery_very_low"
    SUSPENDED_TOO_LONG = "suspended_too_long"
    DELIVERY_UNCERTAIN = "delivery_uncertain"
    INFUSION_SET_FAILURE = "infusion_set_failure_suspected"


class Severity(enum.StrEnum):
    URGENT = "urgent"
    WARNING = "warning"
    INFO = "info"


_SEVERITY = {
    AlertKind.URGENT_LOW: Severity.URGENT,
    AlertKind.URGENT_LOW_SOON: Severity.URGENT,
    AlertKind.OCCLUSION: Severity.URGENT,
    AlertKind.RESERVOIR_VERY_LOW: Severity.URGENT,
    AlertKind.DELIVERY_UNCERTAIN: Severity.URGENT,
    AlertKind.INFUSION_SET_FAILURE: Severity.URGENT,
    AlertKind.BATTERY_VERY_LOW: Severity.URGENT,
}


def severity_of(kind: AlertKind) -> Severity:
    return _SEVERITY.get(kind, Severity.WARNING)


@dataclass(frozen=True)
class GlucosePoint:
    time: datetime
    glucose_mg_dl: float
    rate_mg_dl_per_min: float | None = None


@dataclass(frozen=True)
class InsulinDose:
    """Insulin the pump reports as delivered (it cannot know whether it reached the body)."""

    time: datetime
    insulin_u: float
    # Correction bolus, automatic micro-bolus or the above-schedule part of a temp basal.
    correction: bool


@dataclass(frozen=True)
class CarbEntry:
    time: datetime
    carbs_g: float
    absorption_min: float = 180.0


@dataclass
class AlertSettings:
    """Per-person thresholds (defaults from brief §7) and a quieter high at night."""

    urgent_low_mg_dl: float = 55.0
    urgent_low_resolve_mg_dl: float = 65.0
    low_mg_dl: float = 70.0
    low_resolve_mg_dl: float = 80.0
    high_mg_dl: float = 250.0
    high_resolve_mg_dl: float = 230.0
    high_night_mg_dl: float = 300.0
    night_start: time = time(22, 0)
    night_end: time = time(7, 0)
    time_zone: str = "UTC"
    urgent_low_soon_horizon_min: float = 20.0
    rapid_rate_mg_dl_per_min: float = 3.0
    no_data_min: float = 20.0
    not_looping_min: float = 30.0
    reservoir_low_u: float = 10.0
    reservoir_very_low_u: float = 5.0
    battery_low_pct: float = 30.0
    battery_very_low_pct: float = 20.0
    suspended_max_min: float = 60.0
    isf_mg_dl_per_u: float = 50.0
    carb_ratio_g_per_u: float = 10.0
    # Snooze limit for urgent alerts (urgent low cannot be silenced for long).
    urgent_snooze_max_min: float = 15.0
    disabled: frozenset[AlertKind] = frozenset()

    def high_threshold(self, at: datetime) -> float:
        local = at.astimezone(ZoneInfo(self.time_zone)).time()
        if self.night_start > self.night_end:
            night = local >= self.night_start or local < self.night_end
        else:
            night = self.night_start <= local < self.night_end
        return self.high_night_mg_dl if night else self.high_mg_dl

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["night_start"] = self.night_start.isoformat()
        data["night_end"] = self.night_end.isoformat()
        data["disabled"] = sorted(self.disabled)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertSettings:
        values = dict(data)
        for key in ("night_start", "night_end"):
            if key in values:
                values[key] = time.fromisoformat(values[key])
        if "disabled" in values:
            values["disabled"] = frozenset(AlertKind(k) for k in values["disabled"])
        return cls(**values)


@dataclass
class PatientState:
    """Recent observations of one person, pruned to what the rules look at."""

    patient_id: str
    glucose: list[GlucosePoint] = field(default_factory=list)
    doses: list[InsulinDose] = field(default_factory=list)
    carbs: list[CarbEntry] = field(default_factory=list)
    scheduled_basal_u_per_h: float = 0.0
    iob_u: float | None = None
    iob_time: datetime | None = None
    forecast: list[tuple[float, float]] = field(default_factory=list)  # (minutes ahead, mg/dL)
    forecast_time: datetime | None = None
    last_loop_time: datetime | None = None
    reservoir_u: float | None = None
    battery_pct: float | None = None
    suspended_since: datetime | None = None
    occlusion_since: datetime | None = None
    delivery_uncertain_since: datetime | None = None
    set_changed_at: datetime | None = None
    first_seen: datetime | None = None

    def latest_glucose(self) -> GlucosePoint | None:
        return self.glucose[-1] if self.glucose else None

    def add_glucose(self, point: GlucosePoint) -> bool:
        """Insert in time order; False for a reading already held."""
        for existing in reversed(self.glucose):
            if existing.time == point.time:
                return False
            if existing.time < point.time:
                break
        self.glucose.append(point)
        if len(self.glucose) > 1 and self.glucose[-2].time > point.time:
            self.glucose.sort(key=lambda p: p.time)
        return True

    def prune(self, now: datetime) -> None:
        self.glucose = [g for g in self.glucose if now - g.time <= GLUCOSE_HISTORY]
        self.doses = [d for d in self.doses if now - d.time <= INSULIN_HISTORY]
        self.carbs = [c for c in self.carbs if now - c.time <= CARB_HISTORY]

    def to_json(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "patient_id": self.patient_id,
            "glucose": [
                [g.time.isoformat(), g.glucose_mg_dl, g.rate_mg_dl_per_min] for g in self.glucose
            ],
            "doses": [[d.time.isoformat(), d.insulin_u, d.correction] for d in self.doses],
            "carbs": [[c.time.isoformat(), c.carbs_g, c.absorption_min] for c in self.carbs],
            "scheduled_basal_u_per_h": self.scheduled_basal_u_per_h,
            "iob_u": self.iob_u,
            "iob_time": ts(self.iob_time),
            "forecast": [list(p) for p in self.forecast],
            "forecast_time": ts(self.forecast_time),
            "last_loop_time": ts(self.last_loop_time),
            "reservoir_u": self.reservoir_u,
            "battery_pct": self.battery_pct,
            "suspended_since": ts(self.suspended_since),
            "occlusion_since": ts(self.occlusion_since),
            "delivery_uncertain_since": ts(self.delivery_uncertain_since),
            "set_changed_at": ts(self.set_changed_at),
            "first_seen": ts(self.first_seen),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PatientState:
        def dt(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            patient_id=data["patient_id"],
            glucose=[GlucosePoint(datetime.fromisoformat(t), g, r) for t, g, r in data["glucose"]],
            doses=[InsulinDose(datetime.fromisoformat(t), u, c) for t, u, c in data["doses"]],
            carbs=[CarbEntry(datetime.fromisoformat(t), g, a) for t, g, a in data["carbs"]],
            scheduled_basal_u_per_h=data["scheduled_basal_u_per_h"],
            iob_u=data["iob_u"],
            iob_time=dt(data["iob_time"]),
            forecast=[(m, g) for m, g in data["forecast"]],
            forecast_time=dt(data["forecast_time"]),
            last_loop_time=dt(data["last_loop_time"]),
            reservoir_u=data["reservoir_u"],
            battery_pct=data["battery_pct"],
            suspended_since=dt(data["suspended_since"]),
            occlusion_since=dt(data["occlusion_since"]),
            delivery_uncertain_since=dt(data["delivery_uncertain_since"]),
            set_changed_at=dt(data["set_changed_at"]),
            first_seen=dt(data["first_seen"]),
        )
