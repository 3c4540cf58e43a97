"""Storage queries for shares, invitations and clinics."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import Clinic, ClinicMembership, ClinicPatient, Invitation, Share

__all__ = ["SharingRepository"]


class SharingRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, obj: object) -> None:
        self._session.add(obj)
        self._session.flush()

    def invitation_by_hash(self, token_hash: str) -> Invitation | None:
        return self._session.scalars(
            select(Invitation).where(Invitation.token_hash == token_hash)
        ).first()

    def share(self, person_id: str, follower_id: str) -> Share | None:
        return self._session.scalars(
            select(Share).where(Share.person_id == person_id, Share.follower_id == follower_id)
        ).first()

    def share_by_id(self, person_id: str, share_id: str) -> Share | None:
        return self._session.scalars(
            select(Share).where(Share.id == share_id, Share.person_id == person_id)
        ).first()

    def active_shares(self, person_id: str) -> list[Share]:
        return list(
            self._session.scalars(
                select(Share)
                .where(Share.person_id == person_id, Share.revoked_at.is_(None))
                .order_by(Share.created_at)
            )
        )

    def clinic(self, clinic_id: str) -> Clinic | None:
        return self._session.get(Clinic, clinic_id)

    def membership(self, clinic_id: str, clinician_id: str) -> ClinicMembership | None:
        return self._session.get(ClinicMembership, (clinic_id, clinician_id))

    def clinic_patient(self, clinic_id: str, person_id: str) -> ClinicPatient | None:
        return self._session.get(ClinicPatient, (clinic_id, person_id))
