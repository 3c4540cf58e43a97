"""Demo accounts and therapy settings for `langerhans run` (development only).

When the gateway starts with `LANGERHANS_DEMO=1` (the supervisor sets it; the settings refuse
it in production) it makes sure, idempotently, that:

- every simulated person of the fleet has a person account whose id is the fleet's patient id
  (`sim-person-0000`, …; e-mail `sim-person-0000@demo.langerhans`);
- a caregiver `caregiver@demo.langerhans` follows all of them (view + alerts);
- a clinician `clinician@demo.langerhans` runs the "Demo clinic" every person has joined;
- each person has therapy settings derived from their virtual person's clinician-programmed
  settings (sim/) with the closed-loop carb ratio and targets the in-silico bench evaluates
  (including the eating-soon target windows), loop mode closed loop with SMB, written by the
  clinician through the therapy service: a new version only when they differ, announced on
  therapy.settings.v1 through the gateway's outbox like any other settings change.

All demo accounts share one password, set again on every start (the supervisor generates
one per run and prints it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from gateway.access import Caller, PatientContext, Role, permissions_for
from gateway.accounts.repository import AccountRepository
from gateway.audit.service import record
from gateway.models import Account, Clinic, ClinicMembership, ClinicPatient, Share
from gateway.security.passwords import Passwords
from gateway.sharing.repository import SharingRepository
from gateway.therapy.guardrails import TARGET_MAX_MG_DL, TARGET_MIN_MG_DL
from gateway.therapy.repository import TherapyRepository
from gateway.therapy.schemas import (
    BasalSegment,
    CarbRatioSegment,
    LoopMode,
    SensitivitySegment,
    TargetSegment,
    TherapySettings,
    TherapySettingsIn,
)
from gateway.therapy.service import change_settings
from services.runtime.clock import Clock

if TYPE_CHECKING:
    from sim.person import VirtualPerson

__all__ = [
    "CAREGIVER_EMAIL",
    "CLINICIAN_EMAIL",
    "DEMO_DOMAIN",
    "DemoPerson",
    "DemoSummary",
    "demo_settings",
    "fleet_demo_people",
    "person_email",
    "seed_demo",
]

log = logging.getLogger(__name__)

DEMO_DOMAIN = "demo.langerhans"
CAREGIVER_ID = "demo-caregiver"
CAREGIVER_EMAIL = f"caregiver@{DEMO_DOMAIN}"
CLINICIAN_ID = "demo-clinician"
CLINICIAN_EMAIL = f"clinician@{DEMO_DOMAIN}"
CLINIC_ID = "demo-clinic"
DEMO_LOOP_MODE: LoopMode = "closed_loop_smb"
_AGE = {"child": "child", "adolescent": "teen", "adult": "adult"}


@dataclass(frozen=True)
class DemoPerson:
    person_id: str
    display_name: str
    settings: TherapySettings


@dataclass(frozen=True)
class DemoSummary:
    people: int
    accounts_created: int
    settings_versions_written: int


def person_email(person_id: str) -> str:
    return f"{person_id}@{DEMO_DOMAIN}"


def _closed_loop_targets(person: VirtualPerson) -> list[TargetSegment]:
    """The in-silico tuning's target range (pump target −20…−10 mg/dL) with its eating-soon
    windows, as a target schedule the gateway accepts (never below 80 mg/dL)."""
    # development dependency, like sim/
    from sim.controllers.dosing_engine import LoopTuning, lowered_target_range

    tuning = LoopTuning()
    target = person.therapy.target_mg_dl
    low = min(TARGET_MAX_MG_DL, max(TARGET_MIN_MG_DL, target + tuning.min_bg_offset_mg_dl))
    high = min(TARGET_MAX_MG_DL, max(low, target + tuning.max_bg_offset_mg_dl))
    segments = [TargetSegment(start_min=0, low_mg_dl=low, high_mg_dl=high)]
    for start_min, end_min, drop_mg_dl in sorted(tuning.target_drop_windows):
        floor_mg_dl = max(TARGET_MIN_MG_DL, tuning.target_window_floor_mg_dl)
        window_low, window_high = lowered_target_range(low, high, drop_mg_dl, floor_mg_dl)
        segments.append(
            TargetSegment(start_min=start_min, low_mg_dl=window_low, high_mg_dl=window_high)
        )
        segments.append(TargetSegment(start_min=end_min, low_mg_dl=low, high_mg_dl=high))
    return segments


def demo_settings(person: VirtualPerson, loop_mode: LoopMode = DEMO_LOOP_MODE) -> TherapySettings:
    """The virtual person's closed-loop settings in the gateway's schema (guardrails apply):
    their pump's basal, sensitivity and limits with the carb ratio and targets the in-silico
    bench evaluates (`sim.controllers.dosing_engine.LoopTuning`, docs/dosing-engine.md), so
    `langerhans run` doses the way `make bench-clinical` measured."""
    from sim.controllers.dosing_engine import LoopTuning, carb_ratio_factor

    t = person.therapy
    carb_ratio = t.carb_ratio_g_per_u * carb_ratio_factor(t, LoopTuning())
    return TherapySettings(
        age_group=_AGE[t.age_group],  # type: ignore[arg-type]
        basal_schedule=[BasalSegment(start_min=m, rate_u_per_h=r) for m, r in t.basal_schedule],
        carb_ratios=[CarbRatioSegment(start_min=0, carbs_g_per_u=round(carb_ratio, 1))],
        sensitivities=[SensitivitySegment(start_min=0, isf_mg_dl_per_u=t.isf_mg_dl_per_u)],
        targets=_closed_loop_targets(person),
        max_bolus_u=t.max_bolus_u,
        max_basal_u_per_h=t.max_basal_u_per_h,
        max_iob_u=t.max_iob_u,
        loop_mode=loop_mode,
        time_zone="UTC",
    )


def fleet_demo_people(count: int) -> list[DemoPerson]:
    """The first `count` people of the simulated fleet (`langerhans edge --fleet count`)."""
    from edge.fleet import fleet_person  # the simulator is a development dependency here

    out: list[DemoPerson] = []
    for index in range(count):
        person = fleet_person(index)
        name = f"Sim person {index:04d} ({person.age_group}, {person.age_years} y)"
        out.append(DemoPerson(person.person_id, name, demo_settings(person)))
    return out


def _ensure_account(
    session: Session,
    clock: Clock,
    password_hash: str,
    *,
    account_id: str,
    email: str,
    display_name: str,
    role: Role,
) -> bool:
    """Create the account or reset its password; True when it was created."""
    repo = AccountRepository(session)
    account = repo.get(account_id)
    if account is not None:
        account.password_hash = password_hash
        account.disabled = False
        return False
    if repo.by_email(email) is not None:
        raise ValueError(f"{email} already belongs to another account; not a demo database?")
    repo.add(
        Account(
            id=account_id,
            email=email,
            password_hash=password_hash,
            display_name=display_name,
            role=role.value,
            created_at=clock.now(),
            disabled=False,
        )
    )
    record(
        session,
        clock,
        action="account.created",
        actor_id=account_id,
        person_id=account_id if role is Role.PERSON else None,
        details={"role": role.value, "demo": True},
    )
    return True


def _ensure_share(session: Session, clock: Clock, person_id: str, follower_id: str) -> None:
    repo = SharingRepository(session)
    share = repo.share(person_id, follower_id)
    if share is None:
        share = Share(
            id=f"demo-share-{person_id}"[:36],
            person_id=person_id,
            follower_id=follower_id,
            created_at=clock.now(),
            revoked_at=None,
        )
        repo.add(share)
    share.revoked_at = None
    share.can_view = True
    share.can_receive_alerts = True
    share.can_remote_bolus = False


def _ensure_clinic(session: Session, clock: Clock, person_ids: list[str]) -> None:
    repo = SharingRepository(session)
    if repo.clinic(CLINIC_ID) is None:
        repo.add(Clinic(id=CLINIC_ID, name="Demo clinic", created_at=clock.now()))
    if repo.membership(CLINIC_ID, CLINICIAN_ID) is None:
        repo.add(
            ClinicMembership(clinic_id=CLINIC_ID, clinician_id=CLINICIAN_ID, is_clinic_admin=True)
        )
    for person_id in person_ids:
        link = repo.clinic_patient(CLINIC_ID, person_id)
        if link is None:
            repo.add(
                ClinicPatient(
                    clinic_id=CLINIC_ID,
                    person_id=person_id,
                    created_at=clock.now(),
                    revoked_at=None,
                )
            )
        else:
            link.revoked_at = None


def _ensure_settings(session: Session, clock: Clock, person: DemoPerson) -> bool:
    """The clinician writes the person's settings; True when a new version was written."""
    current = TherapyRepository(session).current(person.person_id)
    wanted = person.settings.model_dump(mode="json")
    if current is not None and current.settings == wanted:
        return False
    caller = Caller(account_id=CLINICIAN_ID, role=Role.CLINICIAN, session_id="demo-seed")
    ctx = PatientContext(
        person_id=person.person_id,
        caller=caller,
        permissions=permissions_for(session, caller, person.person_id),
    )
    change_settings(
        session,
        clock,
        ctx,
        TherapySettingsIn(
            settings=person.settings,
            expected_version=current.version if current is not None else 0,
            reason="demo: the simulated person's programmed settings, closed loop with SMB",
        ),
    )
    return True


def seed_demo(
    session_factory: sessionmaker[Session],
    clock: Clock,
    passwords: Passwords,
    people: list[DemoPerson],
    password: str,
) -> DemoSummary:
    """Demo accounts, shares, clinic and settings in one transaction (safe to run again)."""
    if len(password) < 10:
        raise ValueError("the demo password needs at least 10 characters")
    password_hash = passwords.hash(password)  # one hash for all: they share the password
    created = written = 0
    with session_factory() as session, session.begin():
        for role, account_id, email, name in (
            (Role.CAREGIVER, CAREGIVER_ID, CAREGIVER_EMAIL, "Demo caregiver"),
            (Role.CLINICIAN, CLINICIAN_ID, CLINICIAN_EMAIL, "Demo clinician"),
        ):
            created += _ensure_account(
                session,
                clock,
                password_hash,
                account_id=account_id,
                email=email,
                display_name=name,
                role=role,
            )
        for person in people:
            created += _ensure_account(
                session,
                clock,
                password_hash,
                account_id=person.person_id,
                email=person_email(person.person_id),
                display_name=person.display_name,
                role=Role.PERSON,
            )
            _ensure_share(session, clock, person.person_id, CAREGIVER_ID)
        _ensure_clinic(session, clock, [p.person_id for p in people])
        for person in people:
            written += _ensure_settings(session, clock, person)
    summary = DemoSummary(len(people), created, written)
    log.info(
        "demo accounts ready",
        extra={
            "people": summary.people,
            "accounts_created": created,
            "settings_versions_written": written,
        },
    )
    return summary
