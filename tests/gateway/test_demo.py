"""Demo seeding for `langerhans run`: accounts, shares, clinic and settings announced on Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from langerhans.common.v1 import common_pb2, therapy_pb2
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine

from edge.fleet import fleet_person
from gateway.db import make_session_factory
from gateway.demo import (
    CAREGIVER_EMAIL,
    CLINICIAN_EMAIL,
    fleet_demo_people,
    person_email,
    seed_demo,
)
from gateway.security.passwords import Passwords
from gateway.settings import GatewaySettings
from gateway.therapy.events import SETTINGS_TOPIC
from services.runtime import outbox
from services.runtime.clock import FixedClock

PASSWORD = "demo-password-one"


def _token(client: TestClient, email: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _settings_events(engine: Engine) -> list[therapy_pb2.TherapySettingsChanged]:
    with make_session_factory(engine)() as session:
        rows = outbox.pending_rows(session, 100)
    return [
        row.envelope.parse(therapy_pb2.TherapySettingsChanged)
        for row in rows
        if row.topic == SETTINGS_TOPIC
    ]


def _seed(engine: Engine, clock: FixedClock, password: str, people: int = 2) -> object:
    return seed_demo(
        make_session_factory(engine),
        clock,
        Passwords(1, 64),
        fleet_demo_people(people),
        password,
    )


def test_demo_accounts_see_the_simulated_people(
    client: TestClient, engine: Engine, clock: FixedClock
) -> None:
    _seed(engine, clock, PASSWORD)
    caregiver = _token(client, CAREGIVER_EMAIL, PASSWORD)
    people = client.get("/api/v1/people", headers=caregiver).json()
    assert sorted(p["person_id"] for p in people) == ["sim-person-0000", "sim-person-0001"]
    assert all({"view", "receive_alerts"} <= set(p["permissions"]) for p in people)
    assert all("remote_bolus" not in p["permissions"] for p in people)

    clinician = _token(client, CLINICIAN_EMAIL, PASSWORD)
    seen = client.get("/api/v1/people", headers=clinician).json()
    assert {p["person_id"] for p in seen} == {"sim-person-0000", "sim-person-0001"}

    person = _token(client, person_email("sim-person-0001"), PASSWORD)
    me = client.get("/api/v1/me", headers=person).json()
    assert me["id"] == "sim-person-0001"
    current = client.get("/api/v1/people/sim-person-0001/therapy-settings", headers=person)
    assert current.status_code == 200, current.text
    body = current.json()
    assert body["version"] == 1
    assert body["settings"]["loop_mode"] == "closed_loop_smb"
    virtual = fleet_person(1)
    assert body["settings"]["max_iob_u"] == virtual.therapy.max_iob_u
    assert body["settings"]["sensitivities"][0]["isf_mg_dl_per_u"] == (
        virtual.therapy.isf_mg_dl_per_u
    )


def test_settings_are_announced_once_per_version(
    client: TestClient, engine: Engine, clock: FixedClock
) -> None:
    _seed(engine, clock, PASSWORD)
    events = _settings_events(engine)
    assert [e.settings.patient_id for e in events] == ["sim-person-0000", "sim-person-0001"]
    first = events[0].settings
    virtual = fleet_person(0)
    assert first.version == 1
    assert first.loop_mode == common_pb2.LOOP_MODE_CLOSED_LOOP_SMB
    assert [(s.start_min, s.rate_u_per_h) for s in first.basal_schedule] == list(
        virtual.therapy.basal_schedule
    )
    assert first.max_iob_u == virtual.therapy.max_iob_u
    assert events[0].changed_by == "demo-clinician"

    # a second start changes nothing but the password
    _seed(engine, clock, "demo-password-two")
    assert len(_settings_events(engine)) == 2
    refused = client.post(
        "/api/v1/auth/token", json={"email": CAREGIVER_EMAIL, "password": PASSWORD}
    )
    assert refused.status_code == 401
    _token(client, CAREGIVER_EMAIL, "demo-password-two")

    # a change through the API is announced too, with the new version
    person = _token(client, person_email("sim-person-0000"), "demo-password-two")
    doc = client.get("/api/v1/people/sim-person-0000/therapy-settings", headers=person).json()
    changed = client.put(
        "/api/v1/people/sim-person-0000/therapy-settings",
        json={
            "settings": {**doc["settings"], "loop_mode": "open_loop"},
            "expected_version": 1,
            "reason": "back to open loop",
        },
        headers=person,
    )
    assert changed.status_code == 200, changed.text
    last = _settings_events(engine)[-1]
    assert (last.settings.version, last.settings.loop_mode) == (2, common_pb2.LOOP_MODE_OPEN_LOOP)


def test_bad_time_zone_is_refused_and_changes_nothing(
    client: TestClient, engine: Engine, clock: FixedClock
) -> None:
    _seed(engine, clock, PASSWORD, people=1)
    person = _token(client, person_email("sim-person-0000"), PASSWORD)
    doc = client.get("/api/v1/people/sim-person-0000/therapy-settings", headers=person).json()
    r = client.put(
        "/api/v1/people/sim-person-0000/therapy-settings",
        json={
            "settings": {**doc["settings"], "time_zone": "Mars/Olympus"},
            "expected_version": 1,
        },
        headers=person,
    )
    assert r.status_code == 422
    assert "time zone" in r.text
    assert len(_settings_events(engine)) == 1


def test_demo_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="development only"):
        GatewaySettings(
            environment="production",
            database_url="postgresql://u:p@127.0.0.1:1/x",
            grpc_tls_cert_path=Path("cert.pem"),
            grpc_tls_key_path=Path("key.pem"),
            demo=True,
            demo_password=SecretStr(PASSWORD),
            jwt_private_key_pem=SecretStr("x"),
            secret_pepper=SecretStr("p" * 40),
        )


def test_demo_people_get_the_closed_loop_settings_the_bench_evaluates() -> None:
    from sim.controllers.dosing_engine import LoopTuning, carb_ratio_factor

    for demo, index in zip(fleet_demo_people(6), range(6), strict=True):
        person = fleet_person(index)
        s = demo.settings
        expected_cr = person.therapy.carb_ratio_g_per_u * carb_ratio_factor(
            person.therapy, LoopTuning()
        )
        # stored in 0.1 g/U steps
        assert s.carb_ratios[0].carbs_g_per_u == pytest.approx(expected_cr, abs=0.051)
        usual = s.targets[0]
        assert usual.low_mg_dl == max(80.0, person.therapy.target_mg_dl - 20.0)
        by_start = {t.start_min: t for t in s.targets}
        # 80 mg/dL for the 2 h before the usual breakfast, lunch and dinner, then back
        for start_min, end_min in ((330, 450), (630, 750), (990, 1110)):
            assert (by_start[start_min].low_mg_dl, by_start[start_min].high_mg_dl) == (80.0, 80.0)
            back = by_start[end_min]
            assert (back.low_mg_dl, back.high_mg_dl) == (usual.low_mg_dl, usual.high_mg_dl)
