"""dosing-engine storage: the only module that queries its tables. Never commits.

Times are float seconds since the epoch (UTC). Each person's history is kept for 24 h (what a
decision uses: 8 h for sensitivity plus 6 h of insulin action, with margin).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.orm import Session

from services.runtime.db import new_metadata
from services.runtime.kafka import dedupe

__all__ = ["CommandRow", "DoseRow", "PumpStateRow", "Repository", "metadata"]

metadata = new_metadata()

settings_t = Table(
    "therapy_settings",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)
readings_t = Table(
    "readings",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("reading_id", String(64), primary_key=True),
    Column("measured_s", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_readings_patient_time", "patient_id", "measured_s"),
)
doses_t = Table(
    "doses",
    metadata,
    Column("dose_key", String(128), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("kind", Integer, nullable=False),  # DoseKind of the wire (1 bolus, 2 temp, 3 suspend)
    Column("start_s", Float, nullable=False),
    Column("duration_min", Float, nullable=False),
    Column("insulin_u", Float, nullable=False),
    Column("rate_u_per_h", Float, nullable=False),
    Column("automatic", Boolean, nullable=False),
    Column("command_id", String(64), nullable=False),
    Column("open", Boolean, nullable=False),  # a temp or suspend still running
    Index("ix_doses_patient_time", "patient_id", "start_s"),
)
carbs_t = Table(
    "carbs",
    metadata,
    Column("carb_key", String(128), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("eaten_s", Float, nullable=False),
    Column("carbs_g", Float, nullable=False),
    Column("absorption_min", Float, nullable=False),
    Index("ix_carbs_patient_time", "patient_id", "eaten_s"),
)
pump_state_t = Table(
    "pump_state",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("suspended", Boolean, nullable=False),
    Column("temp_rate_u_per_h", Float, nullable=True),
    Column("temp_end_s", Float, nullable=False),
    Column("bolus_in_progress", Boolean, nullable=False),
    Column("last_bolus_s", Float, nullable=True),
    Column("last_smb_s", Float, nullable=True),
    Column("uncertain_command_ids", String(2000), nullable=False),  # space-separated
)
sequences_t = Table(
    "device_sequences",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)
commands_t = Table(
    "commands",
    metadata,
    Column("command_id", String(64), primary_key=True),
    # one automatic command per (patient, reading, action); manual: the caller's request id
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("patient_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("decision_id", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("issued_s", Float, nullable=False),
    Column("expires_s", Float, nullable=False),
    Column("state", Integer, nullable=False),
    Column("signed", LargeBinary, nullable=False),
    Index("ix_commands_patient", "patient_id", "issued_s"),
)
decisions_t = Table(
    "decisions",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("reading_id", String(64), nullable=False),
    Column("decided_s", Float, nullable=False),
    Column("enacted", Boolean, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_decisions_patient_time", "patient_id", "decided_s"),
    Index("ux_decisions_patient_reading", "patient_id", "reading_id", unique=True),
)
dedupe.include_in(metadata)


@dataclass
class DoseRow:
    dose_key: str
    kind: int
    start_s: float
    duration_min: float
    insulin_u: float
    rate_u_per_h: float
    automatic: bool
    command_id: str
    open: bool


@dataclass
class PumpStateRow:
    patient_id: str
    device_id: str = ""
    suspended: bool = False
    temp_rate_u_per_h: float | None = None
    temp_end_s: float = 0.0
    bolus_in_progress: bool = False
    last_bolus_s: float | None = None
    last_smb_s: float | None = None
    uncertain_command_ids: str = ""

    @property
    def uncertain(self) -> set[str]:
        return set(self.uncertain_command_ids.split())


@dataclass
class CommandRow:
    command_id: str
    idempotency_key: str
    patient_id: str
    device_id: str
    sequence: int
    decision_id: str
    action: str
    issued_s: float
    expires_s: float
    state: int
    signed: bytes


class Repository:
    def __init__(self, session: Session) -> None:
        self.s = session

    # ---- settings
    def settings(self, patient_id: str) -> tuple[int, bytes] | None:
        row = self.s.execute(
            select(settings_t.c.version, settings_t.c.payload).where(
                settings_t.c.patient_id == patient_id
            )
        ).first()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def put_settings(self, patient_id: str, version: int, payload: bytes) -> bool:
        """Store a newer version; an older or equal version changes nothing."""
        current = self.settings(patient_id)
        if current is not None and current[0] >= version:
            return False
        if current is None:
            self.s.execute(
                settings_t.insert().values(patient_id=patient_id, version=version, payload=payload)
            )
        else:
            self.s.execute(
                update(settings_t)
                .where(settings_t.c.patient_id == patient_id)
                .values(version=version, payload=payload)
            )
        return True

    # ---- readings
    def has_reading(self, patient_id: str, reading_id: str) -> bool:
        q = select(readings_t.c.reading_id).where(
            readings_t.c.patient_id == patient_id, readings_t.c.reading_id == reading_id
        )
        return self.s.execute(q).first() is not None

    def add_reading(
        self, patient_id: str, reading_id: str, measured_s: float, payload: bytes
    ) -> None:
        self.s.execute(
            readings_t.insert().values(
                patient_id=patient_id, reading_id=reading_id, measured_s=measured_s, payload=payload
            )
        )

    def newest_reading_s(self, patient_id: str) -> float | None:
        q = (
            select(readings_t.c.measured_s)
            .where(readings_t.c.patient_id == patient_id)
            .order_by(readings_t.c.measured_s.desc())
            .limit(1)
        )
        row = self.s.execute(q).first()
        return None if row is None else float(row[0])

    def readings_since(self, patient_id: str, since_s: float) -> list[bytes]:
        q = (
            select(readings_t.c.payload)
            .where(readings_t.c.patient_id == patient_id, readings_t.c.measured_s >= since_s)
            .order_by(readings_t.c.measured_s)
        )
        return [bytes(r[0]) for r in self.s.execute(q)]

    # ---- doses
    def doses_since(self, patient_id: str, since_s: float) -> list[DoseRow]:
        q = (
            select(doses_t)
            .where(doses_t.c.patient_id == patient_id, doses_t.c.start_s >= since_s)
            .order_by(doses_t.c.start_s)
        )
        return [
            DoseRow(
                r.dose_key,
                r.kind,
                r.start_s,
                r.duration_min,
                r.insulin_u,
                r.rate_u_per_h,
                r.automatic,
                r.command_id,
                r.open,
            )
            for r in self.s.execute(q)
        ]

    def dose(self, dose_key: str) -> DoseRow | None:
        r = self.s.execute(select(doses_t).where(doses_t.c.dose_key == dose_key)).first()
        if r is None:
            return None
        return DoseRow(
            r.dose_key,
            r.kind,
            r.start_s,
            r.duration_min,
            r.insulin_u,
            r.rate_u_per_h,
            r.automatic,
            r.command_id,
            r.open,
        )

    def bolus_for_command(self, patient_id: str, command_id: str) -> DoseRow | None:
        if not command_id:
            return None
        r = self.s.execute(
            select(doses_t.c.dose_key).where(
                doses_t.c.patient_id == patient_id,
                doses_t.c.command_id == command_id,
                doses_t.c.kind == 1,
            )
        ).first()
        return None if r is None else self.dose(str(r[0]))

    def put_dose(self, patient_id: str, d: DoseRow) -> None:
        values = {
            "patient_id": patient_id,
            "kind": d.kind,
            "start_s": d.start_s,
            "duration_min": d.duration_min,
            "insulin_u": d.insulin_u,
            "rate_u_per_h": d.rate_u_per_h,
            "automatic": d.automatic,
            "command_id": d.command_id,
            "open": d.open,
        }
        if self.dose(d.dose_key) is None:
            self.s.execute(doses_t.insert().values(dose_key=d.dose_key, **values))
        else:
            self.s.execute(update(doses_t).where(doses_t.c.dose_key == d.dose_key).values(**values))

    def delete_dose(self, dose_key: str) -> None:
        self.s.execute(delete(doses_t).where(doses_t.c.dose_key == dose_key))

    def close_open(self, patient_id: str, kind: int, end_s: float) -> None:
        """End the running temp basal (kind 2) or suspend (kind 3) at `end_s`."""
        rows = self.s.execute(
            select(doses_t.c.dose_key, doses_t.c.start_s).where(
                doses_t.c.patient_id == patient_id, doses_t.c.kind == kind, doses_t.c.open
            )
        ).all()
        for key, start in rows:
            minutes = max(0.0, (end_s - float(start)) / 60.0)
            self.s.execute(
                update(doses_t)
                .where(doses_t.c.dose_key == key)
                .values(open=False, duration_min=doses_t.c.duration_min * 0 + minutes)
                if kind == 3
                else update(doses_t).where(doses_t.c.dose_key == key).values(open=False)
            )
            if kind == 2:  # a temp ends at its planned end or now, whichever comes first
                d = self.dose(str(key))
                if d is not None and minutes < d.duration_min:
                    self.s.execute(
                        update(doses_t)
                        .where(doses_t.c.dose_key == key)
                        .values(duration_min=minutes)
                    )

    # ---- carbs
    def add_carbs(
        self, patient_id: str, key: str, eaten_s: float, carbs_g: float, absorption_min: float
    ) -> None:
        exists = self.s.execute(select(carbs_t.c.carb_key).where(carbs_t.c.carb_key == key)).first()
        if exists is None:
            self.s.execute(
                carbs_t.insert().values(
                    carb_key=key,
                    patient_id=patient_id,
                    eaten_s=eaten_s,
                    carbs_g=carbs_g,
                    absorption_min=absorption_min,
                )
            )

    def carbs_since(self, patient_id: str, since_s: float) -> list[tuple[float, float, float]]:
        q = (
            select(carbs_t.c.eaten_s, carbs_t.c.carbs_g, carbs_t.c.absorption_min)
            .where(carbs_t.c.patient_id == patient_id, carbs_t.c.eaten_s >= since_s)
            .order_by(carbs_t.c.eaten_s)
        )
        return [(float(a), float(b), float(c)) for a, b, c in self.s.execute(q)]

    # ---- pump state
    def pump_state(self, patient_id: str) -> PumpStateRow:
        r = self.s.execute(
            select(pump_state_t).where(pump_state_t.c.patient_id == patient_id)
        ).first()
        if r is None:
            return PumpStateRow(patient_id)
        return PumpStateRow(
            r.patient_id,
            r.device_id,
            r.suspended,
            r.temp_rate_u_per_h,
            r.temp_end_s,
            r.bolus_in_progress,
            r.last_bolus_s,
            r.last_smb_s,
            r.uncertain_command_ids,
        )

    def put_pump_state(self, st: PumpStateRow) -> None:
        values = {
            "device_id": st.device_id,
            "suspended": st.suspended,
            "temp_rate_u_per_h": st.temp_rate_u_per_h,
            "temp_end_s": st.temp_end_s,
            "bolus_in_progress": st.bolus_in_progress,
            "last_bolus_s": st.last_bolus_s,
            "last_smb_s": st.last_smb_s,
            "uncertain_command_ids": st.uncertain_command_ids,
        }
        exists = self.s.execute(
            select(pump_state_t.c.patient_id).where(pump_state_t.c.patient_id == st.patient_id)
        ).first()
        if exists is None:
            self.s.execute(pump_state_t.insert().values(patient_id=st.patient_id, **values))
        else:
            self.s.execute(
                update(pump_state_t)
                .where(pump_state_t.c.patient_id == st.patient_id)
                .values(**values)
            )

    # ---- commands
    def next_sequence(self, device_id: str) -> int:
        """The device's next command sequence (strictly increasing, in this transaction)."""
        row = self.s.execute(
            select(sequences_t.c.last_sequence).where(sequences_t.c.device_id == device_id)
        ).first()
        if row is None:
            self.s.execute(sequences_t.insert().values(device_id=device_id, last_sequence=1))
            return 1
        seq = int(row[0]) + 1
        self.s.execute(
            update(sequences_t)
            .where(sequences_t.c.device_id == device_id)
            .values(last_sequence=seq)
        )
        return seq

    def command_by_key(self, key: str) -> CommandRow | None:
        r = self.s.execute(select(commands_t).where(commands_t.c.idempotency_key == key)).first()
        return None if r is None else self._command(r)

    def command(self, command_id: str) -> CommandRow | None:
        r = self.s.execute(select(commands_t).where(commands_t.c.command_id == command_id)).first()
        return None if r is None else self._command(r)

    @staticmethod
    def _command(r: object) -> CommandRow:
        return CommandRow(*(getattr(r, c.name) for c in commands_t.columns))

    def add_command(self, c: CommandRow) -> None:
        self.s.execute(commands_t.insert().values(**c.__dict__))

    def set_command_state(self, command_id: str, state: int) -> None:
        self.s.execute(
            update(commands_t).where(commands_t.c.command_id == command_id).values(state=state)
        )

    def commands_for(self, patient_id: str) -> list[CommandRow]:
        q = select(commands_t).where(commands_t.c.patient_id == patient_id)
        return [self._command(r) for r in self.s.execute(q.order_by(commands_t.c.issued_s))]

    # ---- decisions
    def has_decision(self, patient_id: str, reading_id: str) -> bool:
        q = select(decisions_t.c.decision_id).where(
            decisions_t.c.patient_id == patient_id, decisions_t.c.reading_id == reading_id
        )
        return self.s.execute(q).first() is not None

    def add_decision(
        self,
        decision_id: str,
        patient_id: str,
        reading_id: str,
        *,
        decided_s: float,
        enacted: bool,
        payload: bytes,
    ) -> None:
        self.s.execute(
            decisions_t.insert().values(
                decision_id=decision_id,
                patient_id=patient_id,
                reading_id=reading_id,
                decided_s=decided_s,
                enacted=enacted,
                payload=payload,
            )
        )

    def last_decision(
        self, patient_id: str, enacted_only: bool = False
    ) -> tuple[float, bytes] | None:
        q = select(decisions_t.c.decided_s, decisions_t.c.payload).where(
            decisions_t.c.patient_id == patient_id
        )
        if enacted_only:
            q = q.where(decisions_t.c.enacted)
        row = self.s.execute(q.order_by(decisions_t.c.decided_s.desc()).limit(1)).first()
        return None if row is None else (float(row[0]), bytes(row[1]))

    def prune(self, patient_id: str, before_s: float) -> None:
        """Forget history a decision no longer uses."""
        self.s.execute(
            delete(readings_t).where(
                readings_t.c.patient_id == patient_id, readings_t.c.measured_s < before_s
            )
        )
        self.s.execute(
            delete(doses_t).where(
                doses_t.c.patient_id == patient_id, doses_t.c.start_s < before_s, ~doses_t.c.open
            )
        )
        self.s.execute(
            delete(carbs_t).where(carbs_t.c.patient_id == patient_id, carbs_t.c.eaten_s < before_s)
        )
