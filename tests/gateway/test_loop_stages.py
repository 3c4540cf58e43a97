"""Loop modes open in stages: one step at a time, after the minimum time in the stage below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from gateway.errors import GuardrailViolation
from gateway.therapy.loop_stages import ModeSpell, check_loop_mode_change
from services.runtime.clock import FixedClock
from tests.gateway.conftest import PASSWORD, VALID_SETTINGS, User, make_user

DAY_S = 86_400.0


def _put(client: TestClient, person_id: str, by: User, mode: str, expected_version: int):
    # signed in again each time: the test's clock runs past any access token's life
    tokens = client.post("/api/v1/auth/token", json={"email": by.email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return client.put(
        f"/api/v1/people/{person_id}/therapy-settings",
        json={
            "settings": {**VALID_SETTINGS, "loop_mode": mode},
            "expected_version": expected_version,
            "reason": f"to {mode}",
        },
        headers={"Authorization": f"Bearer {tokens.json()['access_token']}"},
    )


def test_a_person_climbs_one_stage_at_a_time_after_the_time_in_each(
    client: TestClient, clock: FixedClock
) -> None:
    ada = make_user(client)
    first = _put(client, ada.id, ada, "closed_loop_smb", 0)
    assert first.status_code == 422
    assert first.json()["error"]["code"] == "guardrail_violation"
    assert "more than one stage" in first.json()["error"]["message"]
    # refused means nothing stored
    assert (
        client.get(f"/api/v1/people/{ada.id}/therapy-settings", headers=ada.auth).status_code == 404
    )

    assert _put(client, ada.id, ada, "open_loop", 0).status_code == 200
    clock.advance(7 * DAY_S)
    assert (
        _put(client, ada.id, ada, "open_loop", 1).status_code == 200
    )  # a basal change, same stage
    clock.advance(6 * DAY_S)
    early = _put(client, ada.id, ada, "low_glucose_suspend", 2)
    assert early.status_code == 422
    details = early.json()["error"]["details"]
    assert details["days_needed"] == 14
    assert details["days_spent"] == pytest.approx(13.0)
    assert datetime.fromisoformat(details["opens_at"]) == clock.now() + timedelta(days=1)

    clock.advance(DAY_S)  # 14 days in open loop over two versions
    assert _put(client, ada.id, ada, "low_glucose_suspend", 2).status_code == 200
    assert _put(client, ada.id, ada, "closed_loop_smb", 3).status_code == 422
    clock.advance(5 * DAY_S)
    assert _put(client, ada.id, ada, "closed_loop_temp_basal", 3).status_code == 200
    clock.advance(8 * DAY_S - 60)
    assert _put(client, ada.id, ada, "closed_loop_smb", 4).status_code == 422
    clock.advance(60)
    assert _put(client, ada.id, ada, "closed_loop_smb", 4).status_code == 200

    # down at any time, and back up to a stage already used without waiting again
    assert _put(client, ada.id, ada, "open_loop", 5).status_code == 200
    clock.advance(3600)
    assert _put(client, ada.id, ada, "closed_loop_smb", 6).status_code == 200
    fresh = client.post("/api/v1/auth/token", json={"email": ada.email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    current = client.get(f"/api/v1/people/{ada.id}/therapy-settings", headers=auth).json()
    assert (current["version"], current["settings"]["loop_mode"]) == (7, "closed_loop_smb")


def test_a_clinician_may_start_any_stage_under_supervision(client: TestClient) -> None:
    person = make_user(client)
    clinician = make_user(client, "clinician")
    clinic_id = client.post(
        "/api/v1/clinics", json={"name": "Diabetes clinic"}, headers=clinician.auth
    ).json()["clinic_id"]
    invitation = client.post(
        f"/api/v1/clinics/{clinic_id}/invitations", headers=clinician.auth
    ).json()
    accepted = client.post(
        "/api/v1/invitations/accept", json={"token": invitation["token"]}, headers=person.auth
    )
    assert accepted.status_code == 200, accepted.text

    started = _put(client, person.id, clinician, "closed_loop_smb", 0)
    assert started.status_code == 200, started.text
    assert started.json()["changed_by"] == clinician.id
    # the person may step down and back up to what the clinician started
    assert _put(client, person.id, person, "low_glucose_suspend", 1).status_code == 200
    assert _put(client, person.id, person, "closed_loop_smb", 2).status_code == 200


def test_time_in_a_stage_is_summed_across_interruptions() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        ModeSpell("open_loop", start),
        ModeSpell("low_glucose_suspend", start + timedelta(days=14)),
        ModeSpell("open_loop", start + timedelta(days=17)),  # 3 days of suspend, then ill
        ModeSpell("low_glucose_suspend", start + timedelta(days=18)),
    ]
    with pytest.raises(GuardrailViolation):
        check_loop_mode_change(
            history, "closed_loop_temp_basal", start + timedelta(days=19), supervised=False
        )
    # 3 + 2 days of low-glucose suspend
    check_loop_mode_change(
        history, "closed_loop_temp_basal", start + timedelta(days=20), supervised=False
    )
