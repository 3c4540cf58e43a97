"""Recording treatments: validated, idempotent on the client's reference, audited.

These are records of what was given or eaten. They are kept here until the dosing engine
takes them over gRPC; a remote bolus *command* is a separate, confirmed flow (later).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from gateway.access import PatientContext
from gateway.audit.service import record
from gateway.errors import Conflict, GuardrailViolation, InvalidRequest
from gateway.models import Treatment
from gateway.therapy.repository import TherapyRepository
from gateway.treatments.repository import TreatmentRepository
from gateway.treatments.schemas import BolusIn, CarbsIn, TreatmentOut
from services.runtime.clock import Clock

__all__ = ["list_treatments", "record_treatment"]

MAX_FUTURE = timedelta(minutes=5)


def _out(row: Treatment) -> TreatmentOut:
    return TreatmentOut(
        treatment_id=row.id,
        client_ref=row.client_ref,
        kind=row.kind,
        occurred_at=row.occurred_at,
        carbs_g=row.carbs_g,
        absorption_min=row.absorption_min,
        bolus_type=row.bolus_type,
        insulin_u=row.insulin_u,
        immediate_u=row.immediate_u,
        extended_u=row.extended_u,
        extended_duration_min=row.extended_duration_min,
        note=row.note,
        entered_by=row.entered_by,
    )


def record_treatment(
    session: Session, clock: Clock, ctx: PatientContext, data: CarbsIn | BolusIn
) -> tuple[TreatmentOut, bool]:
    """Store the record; returns (record, created). A replay with the same client_ref and
    identical content returns the stored record; different content is a conflict."""
    now = clock.now()
    if data.occurred_at > now + MAX_FUTURE:
        raise InvalidRequest("occurred_at is in the future")
    repo = TreatmentRepository(session)
    row = Treatment(
        id=str(uuid.uuid4()),
        person_id=ctx.person_id,
        client_ref=data.client_ref,
        kind=data.kind,
        occurred_at=data.occurred_at,
        note=data.note,
        entered_by=ctx.caller.account_id,
        created_at=now,
    )
    if isinstance(data, CarbsIn):
        row.carbs_g = data.carbs_g
        row.absorption_min = data.absorption_min
    else:
        current = TherapyRepository(session).current(ctx.person_id)
        if current is not None:
            max_bolus_u = float(current.settings["max_bolus_u"])
            if data.insulin_u > max_bolus_u:
                raise GuardrailViolation(
                    f"bolus of {data.insulin_u} U exceeds this person's max bolus of "
                    f"{max_bolus_u} U"
                )
        immediate_u, extended_u = data.split_u()
        row.bolus_type = data.bolus_type
        row.insulin_u = data.insulin_u
        row.immediate_u = immediate_u
        row.extended_u = extended_u
        row.extended_duration_min = data.extended_duration_min
    existing = repo.by_client_ref(ctx.person_id, data.client_ref)
    if existing is not None:
        if _out(existing).model_dump(exclude={"treatment_id", "entered_by"}) != _out(
            row
        ).model_dump(exclude={"treatment_id", "entered_by"}):
            raise Conflict("client_ref already used for a different treatment")
        return _out(existing), False
    repo.add(row)
    record(
        session,
        clock,
        action="treatment.recorded",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details=_out(row).model_dump(mode="json"),
    )
    return _out(row), True


def list_treatments(
    session: Session, person_id: str, start: datetime, end: datetime, limit: int
) -> list[TreatmentOut]:
    return [_out(r) for r in TreatmentRepository(session).between(person_id, start, end, limit)]
