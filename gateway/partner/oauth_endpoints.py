"""OAuth2 routes: /oauth/authorize (consent page), /oauth/token, /oauth/revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.deps import RuntimeDep, SessionDep
from gateway.errors import OAuthError, Unauthenticated
from gateway.partner import oauth_service
from gateway.partner.consent import PAGE_HEADERS, consent_page, error_page
from gateway.partner.oauth_service import AuthorizeRefused
from gateway.partner.schemas import TokenOut

__all__ = ["router"]

router = APIRouter(prefix="/oauth", tags=["partner OAuth2"])
Opt = Annotated[str | None, Query(max_length=2000)]
FormOpt = Annotated[str | None, Form(max_length=2000)]


@router.get("/authorize", response_class=HTMLResponse)
def authorize_page(
    *,
    session: SessionDep,
    response_type: Opt = None,
    client_id: Opt = None,
    redirect_uri: Opt = None,
    scope: Opt = None,
    state: Opt = None,
    code_challenge: Opt = None,
    code_challenge_method: Opt = None,
) -> HTMLResponse:
    """The consent page (authorization code + PKCE S256)."""
    try:
        req = oauth_service.validate_authorize(
            session,
            response_type=response_type,
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
        )
    except AuthorizeRefused as exc:
        return HTMLResponse(error_page(exc.message), status_code=400, headers=PAGE_HEADERS)
    return HTMLResponse(consent_page(req), headers=PAGE_HEADERS)


@router.post("/authorize", response_class=HTMLResponse, response_model=None)
def authorize_decision(
    *,
    session: SessionDep,
    runtime: RuntimeDep,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=256)],
    decision: Annotated[str, Form(pattern="^(allow|deny)$")],
    response_type: FormOpt = None,
    client_id: FormOpt = None,
    redirect_uri: FormOpt = None,
    scope: FormOpt = None,
    state: FormOpt = None,
    code_challenge: FormOpt = None,
    code_challenge_method: FormOpt = None,
) -> Response:
    try:
        req = oauth_service.validate_authorize(
            session,
            response_type=response_type,
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
        )
    except AuthorizeRefused as exc:
        return HTMLResponse(error_page(exc.message), status_code=400, headers=PAGE_HEADERS)
    try:
        target = oauth_service.approve(
            session, runtime, req, email=email, password=password, decision=decision
        )
    except Unauthenticated:
        # Returned, not raised: the request's unit of work commits the failed-attempt audit row.
        return HTMLResponse(
            consent_page(req, "Wrong e-mail or password."), status_code=401, headers=PAGE_HEADERS
        )
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)


@router.post("/token")
def token(
    *,
    session: SessionDep,
    runtime: RuntimeDep,
    grant_type: Annotated[str, Form(max_length=100)],
    client_id: FormOpt = None,
    code: FormOpt = None,
    redirect_uri: FormOpt = None,
    code_verifier: FormOpt = None,
    refresh_token: FormOpt = None,
    response: Response,
) -> TokenOut:
    response.headers["Cache-Control"] = "no-store"
    if grant_type == "authorization_code":
        issued = oauth_service.exchange_code(
            session,
            runtime,
            code=code,
            redirect_uri=redirect_uri,
            client_id=client_id,
            code_verifier=code_verifier,
        )
    elif grant_type == "refresh_token":
        issued = oauth_service.refresh(
            session, runtime, refresh_token=refresh_token, client_id=client_id
        )
    else:
        raise OAuthError("unsupported_grant_type", "authorization_code or refresh_token only")
    return TokenOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        scope=" ".join(issued.scopes),
    )


@router.post("/revoke", status_code=status.HTTP_200_OK)
def revoke(
    session: SessionDep,
    runtime: RuntimeDep,
    token: FormOpt = None,
    client_id: FormOpt = None,
) -> dict[str, str]:
    oauth_service.revoke(session, runtime, token=token, client_id=client_id)
    return {}
