"""Extra fields are never persisted; therapy guardrails; treatments; audit chain."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gateway.audit.service import verify_chain
from gateway.models import (
    Account,
    AuditRow,
    EnrolmentToken,
    Invitation,
    TherapySettingsVersion,
    Treatment,
)
from gateway.settings import GatewaySettings
from tests.gateway.conftest import PASSWORD, VALID_SETTINGS, make_user


def _count(engine, model) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_extra_fields_are_rejected_and_nothing_is_persisted(client, engine):
    person = make_user(client)
    victim = make_user(client)
    base = f"/api/v1/people/{person.id}"
    attempts = [
        (
            "/api/v1/auth/signup",
            {
                "email": "mallory@example.org",
                "password": PASSWORD,
                "display_name": "M",
                "role": "person",
                "is_admin": True,
            },
            Account,
        ),
        (
            "/api/v1/auth/signup",
            {"email": "m2@example.org", "password": PASSWORD, "display_name": "M", "role": "admin"},
            Account,
        ),
        (
            "/api/v1/auth/signup",
            {
                "email": "m3@example.org",
                "password": PASSWORD,
                "display_name": "M",
                "role": "person",
                "id": victim.id,
            },
            Account,
        ),
        (
            f"{base}/therapy-settings",
            {
                "settings": {**VALID_SETTINGS, "max_bolus_limit_override": 60},
                "expected_version": 0,
            },
            TherapySettingsVersion,
        ),
        (
            f"{base}/therapy-settings",
            {"settings": VALID_SETTINGS, "expected_version": 0, "person_id": victim.id},
            TherapySettingsVersion,
        ),
        (
            f"{base}/therapy-settings",
            {"settings": VALID_SETTINGS, "expected_version": 0, "changed_by": victim.id},
            TherapySettingsVersion,
        ),
        (
            f"{base}/treatments",
            {
                "kind": "bolus",
                "bolus_type": "standard",
                "insulin_u": 2,
                "client_ref": uuid.uuid4().hex,
                "occurred_at": "2026-01-15T11:00:00Z",
                "person_id": victim.id,
            },
            Treatment,
        ),
        (
            f"{base}/treatments",
            {
                "kind": "bolus",
                "bolus_type": "standard",
                "insulin_u": 2,
                "client_ref": uuid.uuid4().hex,
                "occurred_at": "2026-01-15T11:00:00Z",
                "max_bolus_u": 60,
            },
            Treatment,
        ),
        (
            f"{base}/invitations",
            {"permissions": {"receive_alerts": True, "edit_settings": True}},
            Invitation,
        ),
        (f"{base}/invitations", {"permissions": {}, "role": "clinician"}, Invitation),
        (
            f"{base}/devices/enrolment-tokens",
            {"device_kind": "hub", "person_id": victim.id},
            EnrolmentToken,
        ),
    ]
    persisted = 0
    for url, body, model in attempts:
        before = _count(engine, model)
        method = client.put if url.endswith("therapy-settings") else client.post
        response = method(url, json=body, headers=person.auth)
        assert response.status_code == 422, (url, body, response.text)
        persisted += _count(engine, model) - before
    assert persisted == 0
    # The accounts that exist kept their roles.
    with engine.connect() as conn:
        roles = conn.execute(select(Account.role)).scalars().all()
    assert "admin" not in roles


def _put(client, user, settings, version=0):
    return client.put(
        f"/api/v1/people/{user.id}/therapy-settings",
        json={"settings": settings, "expected_version": version, "reason": "test"},
        headers=user.auth,
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("sensitivities", 0, "isf_mg_dl_per_u"), 9),
        (("sensitivities", 0, "isf_mg_dl_per_u"), 501),
        (("carb_ratios", 0, "carbs_g_per_u"), 1.9),
        (("carb_ratios", 0, "carbs_g_per_u"), 151),
        (("basal_schedule", 1, "rate_u_per_h"), 31),
        (("basal_schedule", 1, "rate_u_per_h"), -0.1),
        (("basal_schedule", 1, "rate_u_per_h"), 3.5),  # above this person's max basal
        (("max_bolus_u",), 31),
        (("max_bolus_u",), 18),  # adult hard limit 17 U
        (("max_basal_u_per_h",), 10.5),  # adult hard limit 10 U/h
        (("max_iob_u",), 23),  # adult hard limit 22 U
        (("targets", 0, "low_mg_dl"), 60),
        (("basal_schedule", 0, "start_min"), 30),  # schedule must start at midnight
    ],
)
def test_guardrails_refuse_and_store_nothing(client, engine, path, value):
    user = make_user(client)
    settings = copy.deepcopy(VALID_SETTINGS)
    target: Any = settings
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    response = _put(client, user, settings)
    assert response.status_code == 422, response.text
    assert _count(engine, TherapySettingsVersion) == 0


@pytest.mark.parametrize(
    ("age_group", "max_bolus_u", "max_basal_u_per_h", "max_iob_u", "ok"),
    [
        ("child", 5, 2, 7, True),
        ("child", 5.5, 2, 7, False),
        ("child", 5, 2.1, 7, False),
        ("child", 5, 2, 7.5, False),
        ("teen", 10, 5, 13, True),
        ("teen", 10.5, 5, 13, False),
        ("resistant", 25, 12, 30, True),
        ("resistant", 25, 12.5, 30, False),
        ("pregnant", 30, 25, 70, True),
        ("pregnant", 31, 25, 70, False),  # the 30 U absolute guardrail is stricter than 60 U
    ],
)
def test_age_group_hard_limits(client, age_group, max_bolus_u, max_basal_u_per_h, max_iob_u, ok):
    user = make_user(client)
    settings = {
        **copy.deepcopy(VALID_SETTINGS),
        "age_group": age_group,
        "max_bolus_u": max_bolus_u,
        "max_basal_u_per_h": max_basal_u_per_h,
        "max_iob_u": max_iob_u,
        "basal_schedule": [{"start_min": 0, "rate_u_per_h": 0.5}],
    }
    assert (_put(client, user, settings).status_code == 200) is ok


def test_settings_versions_history_and_lost_update(client, engine, clock):
    user = make_user(client)
    assert _put(client, user, VALID_SETTINGS).status_code == 200
    changed = {**copy.deepcopy(VALID_SETTINGS), "max_bolus_u": 8}
    clock.advance(60)
    second = _put(client, user, changed, version=1)
    assert second.status_code == 200
    assert second.json()["version"] == 2
    # A stale editor (still at version 1) cannot overwrite.
    stale = _put(client, user, VALID_SETTINGS, version=1)
    assert stale.status_code == 409
    history = client.get(f"/api/v1/people/{user.id}/therapy-settings/history", headers=user.auth)
    versions = history.json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["changed_fields"] == ["max_bolus_u"]
    assert versions[0]["changed_by"] == user.id
    current = client.get(f"/api/v1/people/{user.id}/therapy-settings", headers=user.auth).json()
    assert current["settings"]["max_bolus_u"] == 8
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(AuditRow.details).where(AuditRow.action == "therapy_settings.changed")
            )
            .scalars()
            .all()
        )
    assert len(rows) == 2
    assert rows[1]["before"]["max_bolus_u"] == 10
    assert rows[1]["after"]["max_bolus_u"] == 8


def _bolus(**over):
    body = {
        "kind": "bolus",
        "bolus_type": "standard",
        "insulin_u": 2.0,
        "client_ref": uuid.uuid4().hex,
        "occurred_at": "2026-01-15T11:30:00Z",
    }
    body.update(over)
    return body


def test_treatments_bolus_types_limits_and_idempotency(client, engine):
    user = make_user(client)
    url = f"/api/v1/people/{user.id}/treatments"
    dual = client.post(
        url,
        json=_bolus(
            bolus_type="dual_wave", insulin_u=5, immediate_percent=60, extended_duration_min=120
        ),
        headers=user.auth,
    )
    assert dual.status_code == 201, dual.text
    assert (dual.json()["immediate_u"], dual.json()["extended_u"]) == (3.0, 2.0)
    ext = client.post(
        url,
        json=_bolus(bolus_type="extended", insulin_u=4, extended_duration_min=240),
        headers=user.auth,
    )
    assert (ext.json()["immediate_u"], ext.json()["extended_u"]) == (0.0, 4.0)
    bad_shapes = [
        _bolus(bolus_type="extended", insulin_u=4),  # no duration
        _bolus(bolus_type="extended", insulin_u=4, extended_duration_min=20),  # < 30 min
        _bolus(bolus_type="extended", insulin_u=4, extended_duration_min=500),  # > 8 h
        _bolus(bolus_type="dual_wave", insulin_u=4, extended_duration_min=60),  # no split
        _bolus(insulin_u=31),
        _bolus(insulin_u=0),
        _bolus(occurred_at="2026-01-15T12:30:00Z"),  # 30 min in the future
        _bolus(occurred_at="2026-01-15T11:30:00"),  # no time zone
        {
            "kind": "carbs",
            "carbs_g": 251,
            "client_ref": uuid.uuid4().hex,
            "occurred_at": "2026-01-15T11:30:00Z",
        },
    ]
    before = _count(engine, Treatment)
    for body in bad_shapes:
        assert client.post(url, json=body, headers=user.auth).status_code == 422, body
    assert _count(engine, Treatment) == before
    # The person's own max bolus applies once settings exist.
    _put(client, user, VALID_SETTINGS)  # max bolus 10 U
    assert client.post(url, json=_bolus(insulin_u=12), headers=user.auth).status_code == 422
    # Replays are idempotent; a different record under the same ref is a conflict.
    body = _bolus(insulin_u=1.5)
    first = client.post(url, json=body, headers=user.auth)
    replay = client.post(url, json=body, headers=user.auth)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert first.json()["treatment_id"] == replay.json()["treatment_id"]
    assert client.post(url, json={**body, "insulin_u": 2.5}, headers=user.auth).status_code == 409
    listed = client.get(url, headers=user.auth).json()
    assert len(listed) == 3


def test_audit_chain_detects_tampering(client, engine):
    user = make_user(client)
    _put(client, user, VALID_SETTINGS)
    client.post("/api/v1/auth/logout", json={}, headers=user.auth)
    with Session(engine) as session:
        result = verify_chain(session)
        assert result.ok, result
        assert result.rows_checked >= 4
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET details = :d WHERE action = 'therapy_settings.changed'"),
            {"d": '{"after": {"max_bolus_u": 30}}'},
        )
        tampered_seq = conn.execute(
            text("SELECT seq FROM audit_log WHERE action = 'therapy_settings.changed'")
        ).scalar_one()
    with Session(engine) as session:
        result = verify_chain(session)
    assert not result.ok
    assert result.first_bad_seq == tampered_seq


def test_audit_chain_detects_a_deleted_row(client, engine):
    user = make_user(client)
    _put(client, user, VALID_SETTINGS)
    client.post("/api/v1/auth/logout", json={}, headers=user.auth)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    with Session(engine) as session:
        result = verify_chain(session)
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_settings_refuse_unsafe_defaults_outside_development():
    production: dict[str, Any] = {
        "environment": "production",
        "database_url": "postgresql://x/y",
        "grpc_tls_cert_path": "/c.pem",
        "grpc_tls_key_path": "/k.pem",
    }
    with pytest.raises(ValueError, match="signing key"):
        GatewaySettings(**production)
    with pytest.raises(ValueError, match="signing key"):
        GatewaySettings(environment="test")
    with pytest.raises(ValueError, match="PEPPER"):
        GatewaySettings(
            environment="test",
            jwt_private_key_file="/nonexistent.pem",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="argon2"):
        GatewaySettings(
            **production,
            jwt_private_key_file="/k.pem",  # type: ignore[arg-type]
            secret_pepper="p" * 40,  # type: ignore[arg-type]
            argon2_time_cost=1,
        )
    assert GatewaySettings(environment="development").environment == "development"
