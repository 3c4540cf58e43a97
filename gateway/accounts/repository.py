"""Storage queries for accounts and refresh-token families."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.models import Account, RefreshToken

__all__ = ["AccountRepository", "RefreshTokenRepository"]


class AccountRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, account_id: str) -> Account | None:
        return self._session.get(Account, account_id)

    def by_email(self, email: str) -> Account | None:
        return self._session.scalars(select(Account).where(Account.email == email)).first()

    def add(self, account: Account) -> None:
        self._session.add(account)
        self._session.flush()

    def many(self, account_ids: list[str]) -> dict[str, Account]:
        if not account_ids:
            return {}
        rows = self._session.scalars(select(Account).where(Account.id.in_(account_ids)))
        return {row.id: row for row in rows}


class RefreshTokenRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, token: RefreshToken) -> None:
        self._session.add(token)
        self._session.flush()

    def by_hash(self, token_hash: str) -> RefreshToken | None:
        return self._session.scalars(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        ).first()

    def family_is_live(self, family_id: str, account_id: str) -> bool:
        """A family is live while none of its tokens was revoked (revocation marks them all)."""
        rows = self._session.execute(
            select(RefreshToken.revoked_at, RefreshToken.account_id)
            .where(RefreshToken.family_id == family_id)
            .limit(1)
        ).first()
        return rows is not None and rows.revoked_at is None and rows.account_id == account_id

    def revoke_family(self, family_id: str, now: datetime) -> int:
        result = self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def revoke_client_families(self, account_id: str, client_id: str, now: datetime) -> None:
        self._session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.account_id == account_id,
                RefreshToken.client_id == client_id,
                RefreshToken.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
