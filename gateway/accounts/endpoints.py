"""Accounts HTTP routes: translate only; decisions are in `service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from gateway.accounts import service
from gateway.accounts.repository import AccountRepository
from gateway.accounts.schemas import (
    AccountOut,
    LogoutIn,
    PersonVisible,
    RefreshIn,
    SignInIn,
    SignUpIn,
    TokenPair,
)
from gateway.deps import CurrentUser, RuntimeDep, SessionDep
from gateway.errors import Unauthenticated

__all__ = ["router", "wellknown_router"]

router = APIRouter(prefix="/api/v1", tags=["accounts"])
wellknown_router = APIRouter(tags=["keys"])


def _pair(tokens: service.IssuedTokens) -> TokenPair:
    return TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


@router.post("/auth/signup", status_code=status.HTTP_201_CREATED)
def sign_up(data: SignUpIn, session: SessionDep, runtime: RuntimeDep) -> AccountOut:
    account = service.sign_up(session, runtime, data)
    return AccountOut.model_validate(account, from_attributes=True)


@router.post("/auth/token")
def sign_in(data: SignInIn, session: SessionDep, runtime: RuntimeDep) -> TokenPair:
    return _pair(service.sign_in(session, runtime, data))


@router.post("/auth/refresh")
def refresh(data: RefreshIn, session: SessionDep, runtime: RuntimeDep) -> TokenPair:
    return _pair(service.refresh_session(session, runtime, data.refresh_token))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(_data: LogoutIn, caller: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> None:
    service.revoke_session(session, runtime, caller)


@router.get("/me")
def me(caller: CurrentUser, session: SessionDep) -> AccountOut:
    account = AccountRepository(session).get(caller.account_id)
    if account is None:
        raise Unauthenticated("account not active")
    return AccountOut.model_validate(account, from_attributes=True)


@router.get("/people")
def people(caller: CurrentUser, session: SessionDep) -> list[PersonVisible]:
    return service.people_visible(session, caller)


@wellknown_router.get("/.well-known/jwks.json")
def jwks(runtime: RuntimeDep) -> dict[str, Any]:
    return runtime.keys.jwks()
