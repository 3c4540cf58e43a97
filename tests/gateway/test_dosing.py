"""Bolus calculator, remote bolus, forecast, loop status and alerts through a real gRPC socket.

The backend is an in-process fake on 127.0.0.1 (the dosing engine has not landed yet); the
gateway side — access checks, two-step confirmation, the per-person guard, the audit log,
error mapping — is the real thing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from gateway.app import create_app
from gateway.models import AuditRow
from gateway.settings import GatewaySettings
from services.runtime.clock import FixedClock
from tests.gateway.conftest import User, follow, make_user
from tests.gateway.grpc_fakes import FakeAlerts, FakeDosingEngine, serve_fakes


@pytest.fixture
def engine_fake(clock: FixedClock) -> FakeDosingEngine:
    return FakeDosingEngine(clock)


@pytest.fixture
def alerts_fake(clock: FixedClock) -> FakeAlerts:
    return FakeAlerts(clock)


@pytest.fixture
def wired(
    settings: GatewaySettings,
    clock: FixedClock,
    engine: Engine,
    engine_fake: FakeDosingEngine,
    alerts_fake: FakeAlerts,
) -> Iterator[TestClient]:
    with serve_fakes(engine_fake, alerts_fake) as address:
        wired_settings = settings.model_copy(
            update={"dosing_engine_addr": address, "alerts_addr": address}
        )
        with TestClient(create_app(wired_settings, clock, engine=engine)) as test_client:
            yield test_client


def _actions(engine: Engine) -> list[str]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return list(session.scalars(select(AuditRow.action).order_by(AuditRow.seq)))


def test_bolus_calculator_returns_breakdown_and_propagates_request_id(
    wired: TestClient, engine_fake: FakeDosingEngine
) -> None:
    ada = make_user(wired)
    got = wired.post(
        f"/api/v1/people/{ada.id}/bolus-calculator",
        json={
            "carbs_g": 45,
            "glucose_mg_dl": 200,
            "kind": "dual_wave",
            "immediate_pct": 60,
            "extended_duration_min": 120,
        },
        headers={**ada.auth, "x-request-id": "req-calc-1"},
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["recommended_insulin_u"] == pytest.approx(4.5 + 2.0, abs=0.01)
    assert body["immediate_insulin_u"] == pytest.approx(6.5 * 0.6, abs=0.01)
    assert body["breakdown"]["carb_ratio_g_per_u"] == 10
    assert "req-calc-1" in engine_fake.request_ids_seen


def test_low_glucose_warning_and_bad_shapes(wired: TestClient) -> None:
    ada = make_user(wired)
    low = wired.post(
        f"/api/v1/people/{ada.id}/bolus-calculator",
        json={"carbs_g": 20, "glucose_mg_dl": 60},
        headers=ada.auth,
    )
    assert low.status_code == 200
    assert low.json()["recommended_insulin_u"] == 0
    assert [w["code"] for w in low.json()["warnings"]] == ["low_glucose"]
    bad = wired.post(
        f"/api/v1/people/{ada.id}/bolus-calculator",
        json={"carbs_g": 20, "kind": "extended"},
        headers=ada.auth,
    )
    assert bad.status_code == 422
    too_many_carbs = wired.post(
        f"/api/v1/people/{ada.id}/bolus-calculator", json={"carbs_g": 300}, headers=ada.auth
    )
    assert too_many_carbs.status_code == 422


def test_forecast_and_loop_status(wired: TestClient) -> None:
    ada = make_user(wired)
    fc = wired.get(f"/api/v1/people/{ada.id}/forecast", headers=ada.auth)
    assert fc.status_code == 200, fc.text
    assert fc.json()["lines"][0]["glucose_mg_dl"] == [150, 145, 140]
    assert fc.json()["lines"][0]["kind"] == "combined"
    ls = wired.get(f"/api/v1/people/{ada.id}/loop-status", headers=ada.auth)
    assert ls.status_code == 200, ls.text
    assert ls.json()["looping"] is True
    assert ls.json()["mode"] == "closed_loop_temp_basal"
    assert ls.json()["reasons"] == ["ok"]


def test_stranger_gets_404_and_viewer_cannot_dose(wired: TestClient) -> None:
    ada, eve, viewer = (
        make_user(wired),
        make_user(wired, "caregiver"),
        make_user(wired, "caregiver"),
    )
    follow(wired, ada, viewer, view=True)
    assert wired.get(f"/api/v1/people/{ada.id}/loop-status", headers=eve.auth).status_code == 404
    assert wired.get(f"/api/v1/people/{ada.id}/loop-status", headers=viewer.auth).status_code == 200
    refused = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests", json={"carbs_g": 30}, headers=viewer.auth
    )
    assert refused.status_code == 403


def test_unavailable_engine_is_503_not_500(
    settings: GatewaySettings, clock: FixedClock, engine: Engine
) -> None:
    dead = settings.model_copy(update={"dosing_engine_addr": "127.0.0.1:1", "grpc_deadline_s": 1})
    with TestClient(create_app(dead, clock, engine=engine)) as client:
        ada = make_user(client)
        got = client.get(f"/api/v1/people/{ada.id}/loop-status", headers=ada.auth)
        assert got.status_code == 503
        assert "unavailable" in got.json()["error"]["message"]
    with TestClient(create_app(settings, clock, engine=engine)) as client:
        ada = make_user(client)
        got = client.get(f"/api/v1/people/{ada.id}/forecast", headers=ada.auth)
        assert got.status_code == 503
        assert "not configured" in got.json()["error"]["message"]


def _request(client: TestClient, person: User, who: User, **body: Any) -> dict[str, Any]:
    got = client.post(
        f"/api/v1/people/{person.id}/bolus-requests",
        json={"carbs_g": 30, "glucose_mg_dl": 155, **body},
        headers=who.auth,
    )
    assert got.status_code == 201, got.text
    return dict(got.json())


def test_remote_bolus_two_steps_and_audit(
    wired: TestClient, engine_fake: FakeDosingEngine, engine: Engine
) -> None:
    ada, mum = make_user(wired), make_user(wired, "caregiver")
    follow(wired, ada, mum, view=True, remote_bolus=True)
    req = _request(wired, ada, mum)
    assert req["status"] == "pending"
    assert req["origin"] == "remote"
    assert req["insulin_u"] == pytest.approx(4.0, abs=0.01)
    # The person cannot confirm someone else's request; nothing is issued.
    other = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests/{req['request_id']}/confirm", headers=ada.auth
    )
    assert other.status_code == 403
    assert not engine_fake.issued
    done = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests/{req['request_id']}/confirm", headers=mum.auth
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "issued"
    assert done.json()["command_id"] == "cmd-1"
    again = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests/{req['request_id']}/confirm", headers=mum.auth
    )
    assert again.json()["command_id"] == "cmd-1"
    assert len(engine_fake.issued) == 1
    actions = _actions(engine)
    assert actions.count("bolus.requested") == 1
    assert actions.count("bolus.issued") == 1


def test_more_than_recommended_is_refused(wired: TestClient) -> None:
    ada = make_user(wired)
    got = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests",
        json={"carbs_g": 30, "glucose_mg_dl": 110, "insulin_u": 9},
        headers=ada.auth,
    )
    assert got.status_code == 422


def test_confirmation_after_five_minutes_is_refused(
    wired: TestClient, clock: FixedClock, engine_fake: FakeDosingEngine, engine: Engine
) -> None:
    ada = make_user(wired)
    req = _request(wired, ada, ada)
    clock.advance(301)
    late = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests/{req['request_id']}/confirm", headers=ada.auth
    )
    assert late.status_code == 409
    assert not engine_fake.issued
    assert "bolus.expired" in _actions(engine)


def test_concurrent_confirmations_issue_one_bolus_per_window(
    wired: TestClient, clock: FixedClock, engine_fake: FakeDosingEngine, engine: Engine
) -> None:
    ada, mum, dad = make_user(wired), make_user(wired, "caregiver"), make_user(wired, "caregiver")
    doc = make_user(wired, "clinician")
    for carer in (mum, dad):
        follow(wired, ada, carer, view=True, remote_bolus=True)
    requests = [(who, _request(wired, ada, who)) for who in (ada, mum, dad)]
    # A clinician (no remote_bolus) cannot even ask.
    assert (
        wired.post(
            f"/api/v1/people/{ada.id}/bolus-requests", json={"carbs_g": 10}, headers=doc.auth
        ).status_code
        == 404
    )
    engine_fake.delay_s = 0.05
    results: list[int] = []
    barrier = threading.Barrier(len(requests))

    def confirm(who: User, req: dict[str, Any]) -> None:
        barrier.wait()
        got = wired.post(
            f"/api/v1/people/{ada.id}/bolus-requests/{req['request_id']}/confirm",
            headers=who.auth,
        )
        results.append(got.status_code)

    threads = [threading.Thread(target=confirm, args=pair) for pair in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [200, 409, 409]
    assert len(engine_fake.issued) == 1
    assert _actions(engine).count("bolus.refused") == 2
    # After the window, a new request can be issued.
    clock.advance(301)
    later = _request(wired, ada, ada)
    ok = wired.post(
        f"/api/v1/people/{ada.id}/bolus-requests/{later['request_id']}/confirm", headers=ada.auth
    )
    assert ok.status_code == 200
    assert len(engine_fake.issued) == 2


def test_alerts_list_acknowledge_snooze(
    wired: TestClient, alerts_fake: FakeAlerts, engine: Engine
) -> None:
    ada, mum, eve = make_user(wired), make_user(wired, "caregiver"), make_user(wired)
    follow(wired, ada, mum, view=True, receive_alerts=True)
    alerts_fake.add("a-1", ada.id)
    alerts_fake.add("e-1", eve.id)
    listed = wired.get(f"/api/v1/people/{ada.id}/alerts", headers=mum.auth)
    assert listed.status_code == 200
    assert [a["alert_id"] for a in listed.json()["alerts"]] == ["a-1"]
    # Someone else's alert through my person id: not found, not acknowledged.
    cross = wired.post(f"/api/v1/people/{ada.id}/alerts/e-1/acknowledge", json={}, headers=mum.auth)
    assert cross.status_code == 404
    assert alerts_fake.alerts["e-1"].acknowledged_by == ""
    ack = wired.post(
        f"/api/v1/people/{ada.id}/alerts/a-1/acknowledge", json={"note": "juice"}, headers=mum.auth
    )
    assert ack.status_code == 200
    assert ack.json()["state"] == "acknowledged"
    assert ack.json()["acknowledged_by"] == mum.id
    snooze = wired.post(
        f"/api/v1/people/{ada.id}/alerts/a-1/snooze", json={"duration_min": 30}, headers=ada.auth
    )
    assert snooze.status_code == 200
    assert snooze.json()["alert"]["state"] == "snoozed"
    assert {"alert.acknowledged", "alert.snoozed"} <= set(_actions(engine))
