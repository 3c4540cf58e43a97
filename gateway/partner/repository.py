"""Storage queries for OAuth clients, codes, grants and webhooks."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import OAuthClient, OAuthCode, OAuthGrant, Webhook

__all__ = ["PartnerRepository"]


class PartnerRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, obj: object) -> None:
        self._session.add(obj)
        self._session.flush()

    def delete(self, obj: object) -> None:
        self._session.delete(obj)
        self._session.flush()

    def client(self, client_id: str) -> OAuthClient | None:
        return self._session.get(OAuthClient, client_id)

    def code(self, code_hash: str) -> OAuthCode | None:
        return self._session.get(OAuthCode, code_hash)

    def grant(self, client_id: str, account_id: str) -> OAuthGrant | None:
        return self._session.get(OAuthGrant, (client_id, account_id))

    def webhooks(self, client_id: str, account_id: str) -> list[Webhook]:
        return list(
            self._session.scalars(
                select(Webhook).where(
                    Webhook.client_id == client_id, Webhook.account_id == account_id
                )
            )
        )

    def webhook(self, client_id: str, account_id: str, webhook_id: str) -> Webhook | None:
        return self._session.scalars(
            select(Webhook).where(
                Webhook.id == webhook_id,
                Webhook.client_id == client_id,
                Webhook.account_id == account_id,
            )
        ).first()
