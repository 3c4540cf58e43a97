"""Dependencies as `Annotated` aliases, so routes read as one line of intent.

- `SessionDep`: the request's unit of work; commits once after the endpoint succeeds. A GET
  or HEAD request gets a read-only session (on SQLite: no write lock, see `get_session`).
- `CurrentUser`: a verified app access token whose session is still live.
- `PatientViewer`, `PatientTreater`, `PatientSettingsEditor`, `PatientOwner`: the caller's
  relation to the person named by the `{person_id}` path parameter grants that permission.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session

from gateway.access import Caller, PatientContext, Permission, Role, permissions_for
from gateway.accounts.repository import AccountRepository, RefreshTokenRepository
from gateway.errors import AppError, Forbidden, NotFound, Unauthenticated
from gateway.runtime import Runtime
from gateway.security.access_cache import AccessGuard
from gateway.security.tokens import APP_AUDIENCE, AccessClaims
from gateway.settings import GatewaySettings
from services.runtime.clock import Clock

__all__ = [
    "BEARER_SECURITY",
    "READ_METHODS",
    "ClockDep",
    "CurrentUser",
    "PatientOwner",
    "PatientSettingsEditor",
    "PatientTreater",
    "PatientViewer",
    "RuntimeDep",
    "SessionDep",
    "SettingsDep",
    "access_guard",
    "bearer_token",
    "cached_patient_access",
    "check_live",
    "end_read_transaction",
    "patient_access",
    "verify_live_token",
]


# Pure lookups are `async def`: FastAPI runs a plain `def` dependency on a worker thread.
async def get_runtime(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> GatewaySettings:
    return runtime.settings


async def get_clock(runtime: RuntimeDep) -> Clock:
    return runtime.clock


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]


# HTTP's safe methods: no route answering one changes anything (a write through its session
# fails: the read sessions refuse writes on SQLite).
READ_METHODS = frozenset({"GET", "HEAD"})


def get_session(request: Request, runtime: RuntimeDep) -> Iterator[Session]:
    """The request's session. A GET or HEAD only reads, so on SQLite it gets a DEFERRED,
    write-refusing session (`gateway.db.make_read_session_factory`): it takes no write lock
    and never queues behind a writer. Every other method begins IMMEDIATE, so its access
    check and its writes are one serialised transaction (no lock upgrade, no deadlock)."""
    if request.method in READ_METHODS:
        session = runtime.read_session_factory()
    else:
        session = runtime.session_factory()
    try:
        yield session
        session.commit()
    except AppError as exc:
        if exc.keep_changes:
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": the commit happens before the response is sent, so a client never sees a
# success whose commit later fails (or reads before the write is visible).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def end_read_transaction(session: Session) -> None:
    """End a request's read-only transaction before reading through another connection.

    A request's transaction can hold a connection (and for writes, on SQLite, the write lock)
    while the request waits on something else; end it first. Only for requests that have
    written nothing.
    """
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("end_read_transaction on a session with pending writes")
    session.rollback()


_bearer = HTTPBearer(auto_error=False, description="access token from /api/v1/auth/token")


async def bearer_token(  # async: pure, so no worker-thread hop
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer access token is required")
    return credentials.credentials


def verify_live_token(
    runtime: Runtime, session: Session, token: str, audience: str
) -> AccessClaims:
    """Decode the token and check its session was not revoked and its account is enabled."""
    claims = runtime.tokens.decode(token, audience)
    check_live(session, claims)
    return claims


def check_live(session: Session, claims: AccessClaims) -> None:
    """The database half of a token check: its session not revoked, its account enabled."""
    if not RefreshTokenRepository(session).family_is_live(claims.session_id, claims.subject):
        raise Unauthenticated("session revoked")
    account = AccountRepository(session).get(claims.subject)
    if account is None or account.disabled or account.role != claims.role:
        raise Unauthenticated("account not active")


def get_current_user(
    runtime: RuntimeDep, session: SessionDep, token: Annotated[str, Depends(bearer_token)]
) -> Caller:
    claims = verify_live_token(runtime, session, token, APP_AUDIENCE)
    return Caller(claims.subject, Role(claims.role), claims.session_id)


CurrentUser = Annotated[Caller, Depends(get_current_user)]


def patient_access(permission: Permission) -> Callable[..., PatientContext]:
    """Dependency: the caller must hold `permission` over the path's `{person_id}`."""

    def check(
        person_id: Annotated[str, Path(min_length=1, max_length=36)],
        caller: CurrentUser,
        session: SessionDep,
    ) -> PatientContext:
        granted = permissions_for(session, caller, person_id)
        if not granted:
            # Same answer whether or not the person exists: ids are not probeable.
            raise NotFound("no such person, or no access")
        if permission not in granted:
            raise Forbidden(f"this needs the '{permission}' permission for that person")
        return PatientContext(person_id, caller, granted)

    return check


def access_guard(app: Any) -> AccessGuard:
    """The app's cached access check for hot read routes (one per app, made on first use)."""
    guard = getattr(app.state, "access_guard", None)
    if guard is None:
        runtime = app.state.runtime
        guard = AccessGuard(runtime.engine, runtime.read_session_factory, check_live)
        app.state.access_guard = guard
    assert isinstance(guard, AccessGuard)
    return guard


# The OpenAPI security requirement of a route that reads the bearer token itself.
BEARER_SECURITY: dict[str, Any] = {"security": [{_bearer.scheme_name: []}]}


async def cached_patient_access(
    request: Request, person_id: str, permission: Permission
) -> PatientContext:
    """`patient_access`'s checks, called by a hot read route itself rather than resolved as a
    dependency (each dependency level costs ~30 us of resolution per request): the bearer
    token as `HTTPBearer` parses it, verified, then the database half remembered while the
    database is unchanged (`security.access_cache`). For read routes (view) only; such a route
    declares `openapi_extra=BEARER_SECURITY` and validates `person_id` as a path parameter."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if not token or scheme.lower() != "bearer":
        raise Unauthenticated("a bearer access token is required")
    claims = request.app.state.runtime.tokens.decode(token, APP_AUDIENCE)
    guard = access_guard(request.app)
    version = guard.watch.version()
    request.state.data_version = version  # one look per request (GlucosePages reuses it)
    return await guard.patient(claims, person_id, permission, version)


PatientViewer = Annotated[PatientContext, Depends(patient_access(Permission.VIEW))]
PatientTreater = Annotated[PatientContext, Depends(patient_access(Permission.REMOTE_BOLUS))]
PatientSettingsEditor = Annotated[PatientContext, Depends(patient_access(Permission.EDIT_SETTINGS))]
PatientOwner = Annotated[PatientContext, Depends(patient_access(Permission.MANAGE))]
