"""Nightscout uploads and reads: normalise, validate, dedupe as Nightscout does.

Documents keep every field the uploader sent (followers read them back), plus `_id` and
normalised time fields. Dedupe/upsert keys follow Nightscout: entries on (type, date),
treatments on `identifier` when given, else (created_at, eventType); device status on
(created_at, device); profiles on startDate. A rejected item rejects the whole request and
nothing is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from gateway.access import PatientContext
from gateway.audit.service import record
from gateway.errors import InvalidRequest, NotFound
from gateway.models import NsDeviceStatus, NsEntry, NsProfile, NsSecret, NsToken, NsTreatment
from gateway.nightscout.query import FieldSpec, parse_query, parse_time_ms
from gateway.nightscout.repository import NightscoutRepository
from gateway.security.secrets import keyed_digest
from gateway.therapy.guardrails import BASAL_RATE_MAX_U_PER_H, MAX_BOLUS_ABSOLUTE_U, MAX_CARBS_G
from services.runtime.clock import Clock

__all__ = [
    "DEVICESTATUS_FIELDS",
    "ENTRY_FIELDS",
    "MAX_BATCH",
    "MIN_SECRET_CHARS",
    "TREATMENT_FIELDS",
    "create_token",
    "find_devicestatus",
    "find_entries",
    "find_profiles",
    "find_treatments",
    "iso_ms",
    "revoke_token",
    "set_secret",
    "upload_devicestatus",
    "upload_entries",
    "upload_profile",
    "upload_treatments",
]

MIN_SECRET_CHARS = 12
MAX_BATCH = 1000
MAX_FUTURE = timedelta(minutes=5)
EARLIEST_MS = 946_684_800_000  # 2000-01-01: older times are clock errors
SGV_MAX_MG_DL = 1000
MAX_DURATION_MIN = 24 * 60
_INTERNAL_KEYS = {"_id"}


def iso_ms(ms: int) -> str:
    """Nightscout's dateString/created_at form: 2026-01-02T03:04:05.678Z."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _object_id() -> str:
    return secrets.token_hex(12)


def _as_items(body: Any) -> list[dict[str, Any]]:
    items = body if isinstance(body, list) else [body]
    if not items:
        raise InvalidRequest("empty upload")
    if len(items) > MAX_BATCH:
        raise InvalidRequest(f"at most {MAX_BATCH} documents per request")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"item {i}: expected a JSON object")
    return items


def _time_ms(doc: dict[str, Any], keys: tuple[str, ...], i: int, now: datetime) -> int | None:
    for key in keys:
        if doc.get(key) is not None:
            try:
                ms = parse_time_ms(doc[key])
            except (ValueError, TypeError, OverflowError) as exc:
                raise InvalidRequest(f"item {i}: unreadable time in '{key}'") from exc
            if ms < EARLIEST_MS or ms > int((now + MAX_FUTURE).timestamp() * 1000):
                raise InvalidRequest(f"item {i}: '{key}' is out of range (future or before 2000)")
            return ms
    return None


def _number(
    doc: dict[str, Any], key: str, i: int, low: float, high: float, *, integer: bool = False
) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise InvalidRequest(f"item {i}: '{key}' must be a number") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"item {i}: '{key}' must be a number")
    if not low <= value <= high:
        raise InvalidRequest(f"item {i}: '{key}' = {value} outside {low}–{high}")
    if integer and value != int(value):
        raise InvalidRequest(f"item {i}: '{key}' must be a whole number")
    return float(value)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _INTERNAL_KEYS}


def _with_id(row_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": row_id, **doc}


# ----------------------------------------------------------------------------- entries
ENTRY_FIELDS: dict[str, FieldSpec] = {
    "date": FieldSpec(NsEntry.date_ms, parse_time_ms),
    "dateString": FieldSpec(NsEntry.date_ms, parse_time_ms),
    "sgv": FieldSpec(NsEntry.sgv, int),
    "type": FieldSpec(NsEntry.type, str),
    "device": FieldSpec(NsEntry.device, str),
    "direction": FieldSpec(NsEntry.direction, str),
}


def upload_entries(
    session: Session, clock: Clock, person_id: str, body: Any
) -> list[dict[str, Any]]:
    now = clock.now()
    repo = NightscoutRepository(session)
    prepared: list[tuple[str, int, dict[str, Any]]] = []
    for i, raw in enumerate(_as_items(body)):
        doc = _clean(raw)
        type_ = str(doc.get("type") or "sgv")
        if len(type_) > 16:
            raise InvalidRequest(f"item {i}: unknown entry type")
        date_ms = _time_ms(doc, ("date", "dateString", "sysTime"), i, now)
        if date_ms is None:
            raise InvalidRequest(f"item {i}: an entry needs 'date' (epoch ms) or 'dateString'")
        sgv = _number(doc, "sgv", i, 0, SGV_MAX_MG_DL, integer=True)
        if type_ == "sgv" and sgv is None:
            raise InvalidRequest(f"item {i}: an sgv entry needs 'sgv' in mg/dL")
        _number(doc, "mbg", i, 0, SGV_MAX_MG_DL)
        _number(doc, "noise", i, 0, 10, integer=True)
        doc.update(type=type_, date=date_ms, dateString=doc.get("dateString") or iso_ms(date_ms))
        if sgv is not None:
            doc["sgv"] = int(sgv)
        prepared.append((type_, date_ms, doc))
    out: list[dict[str, Any]] = []
    for type_, date_ms, doc in prepared:
        row = repo.entry(person_id, type_, date_ms)
        if row is None:
            row = NsEntry(
                id=_object_id(),
                person_id=person_id,
                type=type_,
                date_ms=date_ms,
                doc=doc,
                received_at=now,
            )
            repo.add(row)
        row.doc = doc
        row.sgv = doc.get("sgv")
        row.direction = str(doc["direction"])[:32] if doc.get("direction") else None
        row.device = str(doc["device"])[:200] if doc.get("device") else None
        row.noise = int(doc["noise"]) if doc.get("noise") is not None else None
        out.append(_with_id(row.id, doc))
    session.flush()
    return out


def find_entries(
    session: Session,
    person_id: str,
    params: list[tuple[str, str]],
    *,
    type_: str | None,
    default_count: int = 10,
) -> list[dict[str, Any]]:
    query = parse_query(params, ENTRY_FIELDS, default_count)
    conditions = list(query.conditions)
    if type_ is not None:
        conditions.append(NsEntry.type == type_)
    rows = NightscoutRepository(session).find(
        NsEntry, person_id, conditions, NsEntry.date_ms, query.count
    )
    return [_with_id(r.id, r.doc) for r in rows]


# -------------------------------------------------------------------------- treatments
TREATMENT_FIELDS: dict[str, FieldSpec] = {
    "created_at": FieldSpec(NsTreatment.created_at_ms, parse_time_ms),
    "date": FieldSpec(NsTreatment.created_at_ms, parse_time_ms),
    "mills": FieldSpec(NsTreatment.created_at_ms, parse_time_ms),
    "eventType": FieldSpec(NsTreatment.event_type, str),
    "enteredBy": FieldSpec(NsTreatment.entered_by, str),
    "identifier": FieldSpec(NsTreatment.identifier, str),
    "insulin": FieldSpec(NsTreatment.insulin_u, float),
    "carbs": FieldSpec(NsTreatment.carbs_g, float),
}


def upload_treatments(
    session: Session, clock: Clock, person_id: str, body: Any
) -> list[dict[str, Any]]:
    now = clock.now()
    repo = NightscoutRepository(session)
    prepared: list[tuple[int, dict[str, Any]]] = []
    for i, raw in enumerate(_as_items(body)):
        doc = _clean(raw)
        event_type = str(doc.get("eventType") or "<none>")
        if len(event_type) > 64:
            raise InvalidRequest(f"item {i}: eventType too long")
        created_ms = _time_ms(doc, ("created_at", "date", "mills", "timestamp"), i, now)
        if created_ms is None:
            created_ms = int(now.timestamp() * 1000)  # Nightscout stamps undated treatments
        _number(doc, "insulin", i, 0, MAX_BOLUS_ABSOLUTE_U)
        _number(doc, "carbs", i, 0, MAX_CARBS_G)
        _number(doc, "rate", i, 0, BASAL_RATE_MAX_U_PER_H)
        _number(doc, "absolute", i, 0, BASAL_RATE_MAX_U_PER_H)
        _number(doc, "duration", i, 0, MAX_DURATION_MIN)
        _number(doc, "absorptionTime", i, 0, MAX_DURATION_MIN)
        _number(doc, "percent", i, -100, 500)
        identifier = doc.get("identifier")
        if identifier is not None and (not isinstance(identifier, str) or len(identifier) > 100):
            raise InvalidRequest(f"item {i}: identifier must be a string of at most 100 chars")
        doc.update(eventType=event_type, created_at=iso_ms(created_ms))
        doc["mills"] = created_ms
        prepared.append((created_ms, doc))
    out: list[dict[str, Any]] = []
    for created_ms, doc in prepared:
        identifier = doc.get("identifier")
        row = repo.treatment_by_identifier(person_id, identifier) if identifier else None
        same_slot = repo.treatment(person_id, created_ms, doc["eventType"])
        if row is not None and same_slot is not None and same_slot is not row:
            # Moving this treatment onto another one's time and type would merge two records
            # (and break their uniqueness): refuse the upload (found by tests/fuzz).
            raise InvalidRequest(
                f"treatment {identifier!r} would take the time and eventType of another one"
            )
        if row is None:
            row = same_slot
        if row is None:
            row = NsTreatment(
                id=_object_id(),
                person_id=person_id,
                event_type=doc["eventType"],
                created_at_ms=created_ms,
                doc=doc,
                received_at=now,
            )
            repo.add(row)
        row.doc = doc
        row.identifier = identifier
        row.event_type = doc["eventType"]
        row.created_at_ms = created_ms
        row.entered_by = str(doc["enteredBy"])[:200] if doc.get("enteredBy") else None
        row.insulin_u = float(doc["insulin"]) if doc.get("insulin") is not None else None
        row.carbs_g = float(doc["carbs"]) if doc.get("carbs") is not None else None
        session.flush()
        out.append(_with_id(row.id, doc))
    return out


def find_treatments(
    session: Session, person_id: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    query = parse_query(params, TREATMENT_FIELDS, default_count=100)
    rows = NightscoutRepository(session).find(
        NsTreatment, person_id, query.conditions, NsTreatment.created_at_ms, query.count
    )
    return [_with_id(r.id, r.doc) for r in rows]


# ------------------------------------------------------------------------ devicestatus
DEVICESTATUS_FIELDS: dict[str, FieldSpec] = {
    "created_at": FieldSpec(NsDeviceStatus.created_at_ms, parse_time_ms),
    "device": FieldSpec(NsDeviceStatus.device, str),
}


def upload_devicestatus(
    session: Session, clock: Clock, person_id: str, body: Any
) -> list[dict[str, Any]]:
    now = clock.now()
    repo = NightscoutRepository(session)
    prepared: list[tuple[int, str, dict[str, Any]]] = []
    for i, raw in enumerate(_as_items(body)):
        doc = _clean(raw)
        created_ms = _time_ms(doc, ("created_at", "date", "mills"), i, now)
        if created_ms is None:
            created_ms = int(now.timestamp() * 1000)
        device = str(doc.get("device") or "unknown")[:200]
        for block in ("openaps", "loop", "pump", "uploader"):
            if block in doc and not isinstance(doc[block], dict):
                raise InvalidRequest(f"item {i}: '{block}' must be an object")
        doc.update(device=device, created_at=iso_ms(created_ms))
        prepared.append((created_ms, device, doc))
    out: list[dict[str, Any]] = []
    for created_ms, device, doc in prepared:
        row = repo.devicestatus(person_id, created_ms, device)
        if row is None:
            row = NsDeviceStatus(
                id=_object_id(),
                person_id=person_id,
                created_at_ms=created_ms,
                device=device,
                doc=doc,
                received_at=now,
            )
            repo.add(row)
        row.doc = doc
        out.append(_with_id(row.id, doc))
    session.flush()
    return out


def find_devicestatus(
    session: Session, person_id: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    query = parse_query(params, DEVICESTATUS_FIELDS, default_count=10)
    rows = NightscoutRepository(session).find(
        NsDeviceStatus, person_id, query.conditions, NsDeviceStatus.created_at_ms, query.count
    )
    return [_with_id(r.id, r.doc) for r in rows]


# ----------------------------------------------------------------------------- profile
def upload_profile(
    session: Session, clock: Clock, person_id: str, body: Any
) -> list[dict[str, Any]]:
    now = clock.now()
    repo = NightscoutRepository(session)
    out: list[dict[str, Any]] = []
    prepared: list[tuple[int, dict[str, Any]]] = []
    for i, raw in enumerate(_as_items(body)):
        doc = _clean(raw)
        store = doc.get("store")
        if not isinstance(store, dict) or not store:
            raise InvalidRequest(f"item {i}: a profile needs a non-empty 'store' object")
        default = doc.get("defaultProfile")
        if default is not None and (not isinstance(default, str) or default not in store):
            raise InvalidRequest(f"item {i}: defaultProfile '{default}' is not in the store")
        start_ms = _time_ms(doc, ("startDate", "mills", "created_at"), i, now)
        if start_ms is None:
            start_ms = int(now.timestamp() * 1000)
        doc.setdefault("startDate", iso_ms(start_ms))
        doc.setdefault("created_at", iso_ms(int(now.timestamp() * 1000)))
        doc.setdefault("mills", start_ms)
        prepared.append((start_ms, doc))
    for start_ms, doc in prepared:
        row = repo.profile(person_id, start_ms)
        if row is None:
            row = NsProfile(
                id=_object_id(), person_id=person_id, start_ms=start_ms, doc=doc, received_at=now
            )
            repo.add(row)
        row.doc = doc
        out.append(_with_id(row.id, doc))
    session.flush()
    return out


def find_profiles(session: Session, person_id: str, count: int) -> list[dict[str, Any]]:
    rows = NightscoutRepository(session).find(NsProfile, person_id, [], NsProfile.start_ms, count)
    return [_with_id(r.id, r.doc) for r in rows]


# ------------------------------------------------------------------ secrets and tokens
def set_secret(
    session: Session, clock: Clock, pepper: str, ctx: PatientContext, secret: str
) -> None:
    if len(secret) < MIN_SECRET_CHARS:
        raise InvalidRequest(
            f"the Nightscout API secret needs at least {MIN_SECRET_CHARS} characters"
        )
    # Nightscout clients send SHA-1(secret) as the credential: it is the wire format, not our
    # protection; at rest only HMAC-SHA-256(pepper, that hex) is kept (docs/security.md).
    sha1_hex = hashlib.sha1(secret.encode()).hexdigest()  # noqa: S324  # nosec B324 wire format
    digest = keyed_digest(pepper, sha1_hex)
    repo = NightscoutRepository(session)
    row = repo.secret(ctx.person_id)
    if row is None:
        repo.add(NsSecret(person_id=ctx.person_id, secret_digest=digest, created_at=clock.now()))
    else:
        row.secret_digest = digest
        row.created_at = clock.now()
    record(
        session,
        clock,
        action="nightscout.secret_set",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
    )


def create_token(
    session: Session, clock: Clock, pepper: str, ctx: PatientContext, name: str
) -> tuple[NsToken, str]:
    # Nightscout's token shape: `<subject name>-<16 hex>`.
    raw = f"{name}-{secrets.token_hex(8)}{secrets.token_hex(8)}"
    row = NsToken(
        id=str(uuid.uuid4()),
        person_id=ctx.person_id,
        name=name,
        token_digest=keyed_digest(pepper, raw),
        created_at=clock.now(),
        revoked_at=None,
    )
    NightscoutRepository(session).add(row)
    record(
        session,
        clock,
        action="nightscout.token_created",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"token_id": row.id, "name": name},
    )
    return row, raw


def revoke_token(session: Session, clock: Clock, ctx: PatientContext, token_id: str) -> None:
    row = NightscoutRepository(session).token(ctx.person_id, token_id)
    if row is None or row.revoked_at is not None:
        raise NotFound("no such token")
    row.revoked_at = clock.now()
    record(
        session,
        clock,
        action="nightscout.token_revoked",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"token_id": token_id},
    )
