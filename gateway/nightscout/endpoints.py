"""Nightscout-compatible API v1 (paths as Nightscout serves them, `.json` optional).

Also `settings_router`: the app-API routes where a person sets their Nightscout secret and
creates read-only tokens for followers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Header, Query, Request, status

from gateway.deps import PatientOwner, RuntimeDep, SessionDep
from gateway.errors import NotFound
from gateway.nightscout import service
from gateway.nightscout.auth import NsReader, NsWriter, resolve_ns_caller
from gateway.nightscout.repository import NightscoutRepository
from gateway.nightscout.schemas import NsSecretIn, NsTokenIn, NsTokenOut

__all__ = ["NS_VERSION", "router", "settings_router"]

NS_VERSION = "15.0.2"  # the Nightscout API level these routes mirror (uploaders check it)
router = APIRouter(prefix="/api/v1", tags=["nightscout"])
settings_router = APIRouter(prefix="/api/v1", tags=["nightscout settings"])
NsBody = Annotated[Any, Body(description="one document or an array of documents")]


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def _routes(*paths: str) -> list[str]:
    return [p for path in paths for p in (path, f"{path}.json")]


F = TypeVar("F", bound=Callable[..., Any])


def _get(*paths: str) -> Callable[[F], F]:
    def register(func: F) -> F:
        for path in _routes(*paths):
            router.get(path, include_in_schema=not path.endswith(".json"))(func)
        return func

    return register


def _post(*paths: str) -> Callable[[F], F]:
    def register(func: F) -> F:
        for path in _routes(*paths):
            router.post(path, include_in_schema=not path.endswith(".json"))(func)
        return func

    return register


@_get("/entries")
def get_entries(caller: NsReader, session: SessionDep, request: Request) -> list[dict[str, Any]]:
    return service.find_entries(session, caller.person_id, _params(request), type_=None)


@_get("/entries/current")
def get_current(caller: NsReader, session: SessionDep, request: Request) -> list[dict[str, Any]]:
    params = [(k, v) for k, v in _params(request) if k != "count"] + [("count", "1")]
    return service.find_entries(session, caller.person_id, params, type_="sgv")


@_get("/entries/sgv", "/entries/mbg", "/entries/cal")
def get_entries_of_type(
    caller: NsReader, session: SessionDep, request: Request
) -> list[dict[str, Any]]:
    type_ = request.url.path.rsplit("/", 1)[-1].removesuffix(".json")
    return service.find_entries(session, caller.person_id, _params(request), type_=type_)


@_post("/entries")
def post_entries(
    body: NsBody, caller: NsWriter, session: SessionDep, runtime: RuntimeDep
) -> list[dict[str, Any]]:
    return service.upload_entries(session, runtime.clock, caller.person_id, body)


@_get("/treatments")
def get_treatments(caller: NsReader, session: SessionDep, request: Request) -> list[dict[str, Any]]:
    return service.find_treatments(session, caller.person_id, _params(request))


@_post("/treatments")
def post_treatments(
    body: NsBody, caller: NsWriter, session: SessionDep, runtime: RuntimeDep
) -> list[dict[str, Any]]:
    return service.upload_treatments(session, runtime.clock, caller.person_id, body)


@_get("/devicestatus")
def get_devicestatus(
    caller: NsReader, session: SessionDep, request: Request
) -> list[dict[str, Any]]:
    return service.find_devicestatus(session, caller.person_id, _params(request))


@_post("/devicestatus")
def post_devicestatus(
    body: NsBody, caller: NsWriter, session: SessionDep, runtime: RuntimeDep
) -> list[dict[str, Any]]:
    return service.upload_devicestatus(session, runtime.clock, caller.person_id, body)


@_get("/profile")
def get_profiles(
    caller: NsReader, session: SessionDep, count: Annotated[int, Query(ge=1, le=1000)] = 10
) -> list[dict[str, Any]]:
    return service.find_profiles(session, caller.person_id, count)


@_get("/profile/current")
def get_current_profile(caller: NsReader, session: SessionDep) -> dict[str, Any]:
    found = service.find_profiles(session, caller.person_id, 1)
    if not found:
        raise NotFound("no profile uploaded yet")
    return found[0]


@_post("/profile")
def post_profile(
    body: NsBody, caller: NsWriter, session: SessionDep, runtime: RuntimeDep
) -> list[dict[str, Any]]:
    return service.upload_profile(session, runtime.clock, caller.person_id, body)


@_get("/status")
def get_status(runtime: RuntimeDep) -> dict[str, Any]:
    """Server status; public like Nightscout's, and without any personal data."""
    now = runtime.clock.now().astimezone(UTC)
    return {
        "status": "ok",
        "name": "Langerhans",
        "version": NS_VERSION,
        "serverTime": service.iso_ms(int(now.timestamp() * 1000)),
        "serverTimeEpoch": int(now.timestamp() * 1000),
        "apiEnabled": True,
        "careportalEnabled": True,
        "boluscalcEnabled": False,
        "settings": {
            "units": "mg/dl",
            "authDefaultRoles": "denied",
            "enable": ["careportal", "iob", "cob", "basal", "devicestatus", "openaps", "loop"],
            "thresholds": {"bgHigh": 250, "bgTargetTop": 180, "bgTargetBottom": 70, "bgLow": 55},
        },
        "extendedSettings": {"devicestatus": {"advanced": True}},
        "authorized": None,
    }


@_get("/verifyauth")
def verify_auth(
    session: SessionDep,
    runtime: RuntimeDep,
    api_secret: Annotated[str | None, Header(alias="api-secret")] = None,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    caller = resolve_ns_caller(session, runtime.pepper, api_secret, token)
    ok = caller is not None
    return {
        "status": 200,
        "message": {
            "message": "OK" if ok else "UNAUTHORIZED",
            "rolefound": "FOUND" if ok else "NOTFOUND",
            "canRead": ok,
            "canWrite": bool(caller and caller.can_write),
            "isAdmin": bool(caller and caller.can_write),
            "permissions": "readwrite" if caller and caller.can_write else "readonly" if ok else "",
        },
    }


# ------------------------------------------------------------------ app-API side settings
@settings_router.put(
    "/people/{person_id}/nightscout/secret", status_code=status.HTTP_204_NO_CONTENT
)
def set_secret(
    data: NsSecretIn, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep
) -> None:
    """Set the API secret uploaders use (they send its SHA-1 in the `api-secret` header)."""
    service.set_secret(session, runtime.clock, runtime.pepper, ctx, data.secret)


@settings_router.post("/people/{person_id}/nightscout/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    data: NsTokenIn, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep
) -> NsTokenOut:
    """A read-only token for Nightscout followers (`?token=` or `api-secret: token=…`)."""
    row, raw = service.create_token(session, runtime.clock, runtime.pepper, ctx, data.name)
    return NsTokenOut(token_id=row.id, name=row.name, created_at=row.created_at, token=raw)


@settings_router.get("/people/{person_id}/nightscout/tokens")
def list_tokens(ctx: PatientOwner, session: SessionDep) -> list[NsTokenOut]:
    return [
        NsTokenOut(token_id=t.id, name=t.name, created_at=t.created_at)
        for t in NightscoutRepository(session).tokens(ctx.person_id)
    ]


@settings_router.delete(
    "/people/{person_id}/nightscout/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT
)
def revoke_token(
    token_id: str, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep
) -> None:
    service.revoke_token(session, runtime.clock, ctx, token_id)
