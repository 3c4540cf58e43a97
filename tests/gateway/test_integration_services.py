"""The gateway in front of the REAL dosing-engine, cgm-ingestion and alerts servicers.

Each service runs its own servicer class on its own migrated SQLite store, served over a real
gRPC socket on 127.0.0.1; the gateway is the real app pointed at that address. State gets into
the services through their own domain entry points (what their Kafka consumers call:
`DosingEngine.on_settings` / `on_reading`, `AlertsService.on_reading`) or their own gRPC API
(`IngestReadings`), never through the gateway. Expected numbers come from the therapy settings
the test gives the engine (carb ratio 10 g/U, ISF 50 mg/dL/U, target 100-110 mg/dL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from langerhans.alerts.v1 import alerts_service_pb2 as alerts_pb
from langerhans.alerts.v1 import alerts_service_pb2_grpc as alerts_grpc
from langerhans.cgm.v1 import cgm_ingestion_service_pb2 as cgm_pb
from langerhans.cgm.v1 import cgm_ingestion_service_pb2_grpc as cgm_grpc
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as dosing_pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as dosing_grpc
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.app import create_app
from gateway.clients.services import timestamp
from gateway.models import AuditRow
from gateway.settings import GatewaySettings
from services.alerts.events import AlertTopics, OutboxAlertEvents
from services.alerts.repository import AlertRepository
from services.alerts.repository import metadata as alerts_metadata
from services.alerts.service import AlertsService
from services.alerts.servicer import AlertsServicer
from services.cgm_ingestion.repository import metadata as cgm_metadata
from services.cgm_ingestion.servicer import CgmIngestionServicer
from services.dosing_engine.repository import Repository
from services.dosing_engine.repository import metadata as dosing_metadata
from services.dosing_engine.service import DosingEngine
from services.dosing_engine.servicer import DosingEngineServicer
from services.runtime import migrations
from services.runtime.clock import FixedClock
from services.runtime.command_signing import generate_signing_key
from services.runtime.db import create_service_engine, session_scope
from services.runtime.grpc_server import servicer
from tests.dosing_engine.conftest import reading, settings_changed
from tests.gateway.conftest import User, follow, make_user
from tests.gateway.grpc_fakes import serve_fakes


@dataclass
class Backends:
    client: TestClient
    address: str
    clock: FixedClock
    dosing: sessionmaker[Session]
    alerts: sessionmaker[Session]


def _store(tmp_path: Path, service: str, metadata: object) -> tuple[Engine, sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / service}.sqlite3"
    migrations.upgrade(service, database_url=url, target_metadata=metadata)  # type: ignore[arg-type]
    engine = create_service_engine(service, url, connect_args={"check_same_thread": False})
    return engine, sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def backends(
    settings: GatewaySettings, clock: FixedClock, engine: Engine, tmp_path: Path
) -> Iterator[Backends]:
    dosing_engine, dosing = _store(tmp_path, "dosing-engine", dosing_metadata)
    cgm_engine, cgm = _store(tmp_path, "cgm-ingestion", cgm_metadata)
    alerts_engine, alerts = _store(tmp_path, "alerts", alerts_metadata)
    signer = generate_signing_key()
    definitions = [
        servicer(
            dosing_pb.DESCRIPTOR.services_by_name["DosingEngineService"].full_name,
            dosing_grpc.add_DosingEngineServiceServicer_to_server,
            DosingEngineServicer(dosing, clock, signer),
        ),
        servicer(
            cgm_pb.DESCRIPTOR.services_by_name["CgmIngestionService"].full_name,
            cgm_grpc.add_CgmIngestionServiceServicer_to_server,
            CgmIngestionServicer(cgm, clock, "UTC"),
        ),
        servicer(
            alerts_pb.DESCRIPTOR.services_by_name["AlertsService"].full_name,
            alerts_grpc.add_AlertsServiceServicer_to_server,
            AlertsServicer(alerts, clock, AlertTopics()),
        ),
    ]
    try:
        with serve_fakes(*definitions) as address:
            wired = settings.model_copy(
                update={
                    "dosing_engine_addr": address,
                    "cgm_ingestion_addr": address,
                    "alerts_addr": address,
                }
            )
            with TestClient(create_app(wired, clock, engine=engine)) as client:
                yield Backends(client, address, clock, dosing, alerts)
    finally:
        for e in (dosing_engine, cgm_engine, alerts_engine):
            e.dispose()


def _engine_knows(b: Backends, person_id: str, glucose_mg_dl: float | None = None) -> None:
    """Therapy settings and an hour of readings, as the engine's consumer would store them."""
    with session_scope(b.dosing) as session:
        engine = DosingEngine(Repository(session), b.clock, generate_signing_key())
        engine.on_settings(settings_changed(person_id))
    if glucose_mg_dl is None:
        return
    now = b.clock.now()
    for i in range(12, -1, -1):
        with session_scope(b.dosing) as session:
            engine = DosingEngine(Repository(session), b.clock, generate_signing_key())
            engine.on_reading(reading(person_id, now - timedelta(minutes=5 * i), glucose_mg_dl))


def _calc(b: Backends, person: User, who: User, **body: object) -> dict[str, object]:
    got = b.client.post(f"/api/v1/people/{person.id}/bolus-calculator", json=body, headers=who.auth)
    assert got.status_code == 200, got.text
    result: dict[str, object] = got.json()
    return result


# ---------------------------------------------------------------------- dosing engine
def test_bolus_calculator_is_the_engines_arithmetic(backends: Backends) -> None:
    b = backends
    ada = make_user(b.client)
    _engine_knows(b, ada.id)
    body = _calc(b, ada, ada, carbs_g=45, glucose_mg_dl=205)
    breakdown = body["breakdown"]
    assert isinstance(breakdown, dict)
    assert breakdown["carb_ratio_g_per_u"] == 10
    assert breakdown["isf_mg_dl_per_u"] == 50
    assert breakdown["carb_insulin_u"] == pytest.approx(4.5)  # 45 g / 10 g/U
    # correction toward the middle of the 100-110 target: (205 - 105) / 50
    assert breakdown["correction_insulin_u"] == pytest.approx(2.0)
    assert body["recommended_insulin_u"] == pytest.approx(6.5, abs=0.05)
    assert body["settings_version"] == 1

    # More carbs than the person's max bolus (8 U) allows: capped, never exceeded.
    big = _calc(b, ada, ada, carbs_g=200, glucose_mg_dl=205)
    assert big["recommended_insulin_u"] == pytest.approx(8.0)
    big_breakdown = big["breakdown"]
    assert isinstance(big_breakdown, dict)
    assert float(big_breakdown["unlimited_insulin_u"]) > 8.0

    # Dual wave: the immediate part is the asked share of the total.
    dual = _calc(
        b, ada, ada, carbs_g=45, glucose_mg_dl=205, kind="dual_wave",
        immediate_pct=60, extended_duration_min=120,
    )  # fmt: skip
    total = float(dual["recommended_insulin_u"])  # type: ignore[arg-type]
    assert float(dual["immediate_insulin_u"]) == pytest.approx(0.6 * total, abs=0.06)  # type: ignore[arg-type]
    assert dual["extended_duration_min"] == 120


def test_calculator_uses_the_engines_glucose_and_refuses_bad_input(backends: Backends) -> None:
    b = backends
    ada = make_user(b.client)
    _engine_knows(b, ada.id, glucose_mg_dl=155)
    body = _calc(b, ada, ada, carbs_g=0)
    assert body["glucose_mg_dl"] == pytest.approx(155)  # the latest stored reading
    assert body["reading_id"]
    breakdown = body["breakdown"]
    assert isinstance(breakdown, dict)
    assert breakdown["correction_insulin_u"] == pytest.approx((155 - 105) / 50)

    # A person the engine has no settings for: the engine's NOT_FOUND is the gateway's 404.
    bob = make_user(b.client, name="Bob")
    missing = b.client.post(
        f"/api/v1/people/{bob.id}/bolus-calculator", json={"carbs_g": 10}, headers=bob.auth
    )
    assert missing.status_code == 404, missing.text


def test_loop_status_and_forecast_come_from_the_engine(backends: Backends) -> None:
    b = backends
    ada = make_user(b.client)
    carer = make_user(b.client, "caregiver", "Carer")
    follow(b.client, ada, carer, view=True)
    _engine_knows(b, ada.id, glucose_mg_dl=180)

    status = b.client.get(f"/api/v1/people/{ada.id}/loop-status", headers=carer.auth)
    assert status.status_code == 200, status.text
    loop = status.json()
    # The mode is the one in the engine's settings; readings are fresh but nothing was ever
    # enacted on a pump, so it is not looping, and says why.
    assert loop["mode"] == "closed_loop_smb"
    assert loop["looping"] is False
    assert loop["reasons"], loop
    assert "ok" not in loop["reasons"], loop
    assert "not looping" in loop["summary"]

    forecast = b.client.get(f"/api/v1/people/{ada.id}/forecast", headers=carer.auth)
    assert forecast.status_code == 200, forecast.text
    fc = forecast.json()
    assert fc["available"] is True
    assert fc["lines"]
    assert all(len(line["glucose_mg_dl"]) > 1 for line in fc["lines"])
    assert fc["reading_id"]

    # A stranger learns nothing, and a person without settings gets the engine's answer.
    stranger = make_user(b.client, name="Eve")
    hidden = b.client.get(f"/api/v1/people/{ada.id}/loop-status", headers=stranger.auth)
    assert hidden.status_code == 404
    bare = b.client.get(f"/api/v1/people/{stranger.id}/loop-status", headers=stranger.auth)
    assert bare.status_code == 200, bare.text
    assert bare.json()["looping"] is False
    assert "no_settings" in bare.json()["reasons"], bare.json()


def _request_and_confirm(
    b: Backends, person: User, carbs_g: float
) -> tuple[dict[str, object], int]:
    made = b.client.post(
        f"/api/v1/people/{person.id}/bolus-requests", json={"carbs_g": carbs_g}, headers=person.auth
    )
    assert made.status_code == 201, made.text
    req: dict[str, object] = made.json()
    confirmed = b.client.post(
        f"/api/v1/people/{person.id}/bolus-requests/{req['request_id']}/confirm",
        json={"insulin_u": req["insulin_u"]},
        headers=person.auth,
    )
    after = b.client.get(
        f"/api/v1/people/{person.id}/bolus-requests/{req['request_id']}", headers=person.auth
    )
    return after.json(), confirmed.status_code


def _engine_commands(b: Backends, person_id: str) -> list[str]:
    with b.dosing() as session:
        return [c.command_id for c in Repository(session).commands_for(person_id)]


def test_remote_bolus_is_signed_and_queued_by_the_engine_once(
    backends: Backends, engine: Engine
) -> None:
    b = backends
    ada = make_user(b.client)
    _engine_knows(b, ada.id, glucose_mg_dl=160)  # readings from hub-1: the engine knows a hub
    req, code = _request_and_confirm(b, ada, 20)
    assert code == 200, req
    recommendation = req["recommendation"]
    assert isinstance(recommendation, dict)
    # 20 g / 10 + (160 - 105) / 50, rounded to the pump's increment by the engine
    assert req["insulin_u"] == pytest.approx(3.1, abs=0.05)
    assert float(req["insulin_u"]) <= recommendation["recommended_insulin_u"]  # type: ignore[arg-type]
    assert req["status"] == "issued"
    assert req["command_id"] in _engine_commands(b, ada.id)  # stored and signed by the engine

    # A second bolus inside the decision window: the gateway refuses before the engine.
    second, code = _request_and_confirm(b, ada, 10)
    assert code == 409, second
    assert second["status"] == "refused"
    assert len(_engine_commands(b, ada.id)) == 1
    with Session(engine) as session:
        actions = list(session.scalars(select(AuditRow.action)))
    assert actions.count("bolus.issued") == 1
    assert "bolus.refused" in actions


def test_remote_bolus_the_engine_refuses_is_refused(backends: Backends, engine: Engine) -> None:
    b = backends
    ada = make_user(b.client)
    _engine_knows(b, ada.id)  # settings, but no reading from any hub: no pump to send to
    req, code = _request_and_confirm(b, ada, 20)
    assert code == 409, req  # the engine's FAILED_PRECONDITION
    assert req["status"] == "refused"
    assert req["command_id"] is None
    assert _engine_commands(b, ada.id) == []
    with Session(engine) as session:
        actions = list(session.scalars(select(AuditRow.action)))
    assert "bolus.refused" in actions
    assert "bolus.issued" not in actions


# ---------------------------------------------------------------------- cgm-ingestion
def _raw(person_id: str, at: datetime, mg_dl: float) -> cgm_pb2.RawCgmReading:
    return cgm_pb2.RawCgmReading(
        patient_id=person_id,
        device_id="hub-1",
        sensor_id="sensor-1",
        measured_at=timestamp(at),
        received_at=timestamp(at),
        glucose=common_pb2.GlucoseQuantity(value=mg_dl, unit=common_pb2.GLUCOSE_UNIT_MG_DL),
        source=cgm_pb2.READING_SOURCE_HUB,
        sensor_age_min=3 * 24 * 60,
    )


def _ingest(address: str, readings: list[cgm_pb2.RawCgmReading]) -> cgm_pb.IngestReadingsResponse:
    async def call() -> cgm_pb.IngestReadingsResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cgm_grpc.CgmIngestionServiceStub(channel)
            response: cgm_pb.IngestReadingsResponse = await stub.IngestReadings(
                cgm_pb.IngestReadingsRequest(readings=readings), timeout=10
            )
            return response

    return asyncio.run(call())


def test_glucose_is_read_from_cgm_ingestion(backends: Backends) -> None:
    b = backends
    ada = make_user(b.client)
    carer = make_user(b.client, "caregiver", "Carer")
    follow(b.client, ada, carer, view=True)
    now = b.clock.now()
    values = [100 + 4 * i for i in range(12)]  # oldest first, one every 5 min
    raws = [_raw(ada.id, now - timedelta(minutes=5 * (11 - i)), v) for i, v in enumerate(values)]
    impossible = _raw(ada.id, now - timedelta(minutes=2), 2000)  # outside any sensor's range
    ingested = _ingest(b.address, [*raws, impossible])
    assert (ingested.accepted, len(ingested.rejected)) == (12, 1)

    got = b.client.get(f"/api/v1/people/{ada.id}/glucose", headers=carer.auth)
    assert got.status_code == 200, got.text
    page = got.json()
    assert [r["glucose_mg_dl"] for r in page["readings"]] == list(reversed(values))
    # Paging by the service: the 5 newest, then the next page from `next_end`.
    first = b.client.get(
        f"/api/v1/people/{ada.id}/glucose", params={"limit": 5}, headers=carer.auth
    ).json()
    assert [r["glucose_mg_dl"] for r in first["readings"]] == list(reversed(values))[:5]
    assert first["next_end"] is not None
    older = b.client.get(
        f"/api/v1/people/{ada.id}/glucose",
        params={"limit": 5, "end": first["next_end"]},
        headers=carer.auth,
    ).json()
    assert [r["glucose_mg_dl"] for r in older["readings"]] == list(reversed(values))[5:10]

    stranger = make_user(b.client, name="Eve")
    hidden = b.client.get(f"/api/v1/people/{ada.id}/glucose", headers=stranger.auth)
    assert hidden.status_code == 404


# ---------------------------------------------------------------------- alerts
def _raise_low(b: Backends, person_id: str) -> str:
    """A low reading through the alerts service's own rules (what its consumer does)."""
    with session_scope(b.alerts) as session:
        service = AlertsService(
            AlertRepository(session, None), OutboxAlertEvents(session, b.clock, AlertTopics()),
            b.clock,
        )  # fmt: skip
        work = service.on_reading(person_id, b.clock.now(), 50, None)
    assert work.raised, "a reading of 50 mg/dL raises a low alert"
    return str(work.raised[0].alert_id)


def test_alerts_listed_and_acknowledged_in_the_alerts_service(backends: Backends) -> None:
    b = backends
    ada = make_user(b.client)
    watcher = make_user(b.client, "caregiver", "Viewer only")
    carer = make_user(b.client, "caregiver", "Carer")
    follow(b.client, ada, watcher, view=True)
    follow(b.client, ada, carer, view=True, receive_alerts=True)
    alert_id = _raise_low(b, ada.id)

    listed = b.client.get(f"/api/v1/people/{ada.id}/alerts", headers=watcher.auth)
    assert listed.status_code == 200, listed.text
    assert alert_id in [a["alert_id"] for a in listed.json()["alerts"]]

    refused = b.client.post(
        f"/api/v1/people/{ada.id}/alerts/{alert_id}/acknowledge", json={}, headers=watcher.auth
    )
    assert refused.status_code == 403, refused.text
    acked = b.client.post(
        f"/api/v1/people/{ada.id}/alerts/{alert_id}/acknowledge", json={}, headers=carer.auth
    )
    assert acked.status_code == 200, acked.text

    async def stored_state() -> int:
        async with grpc.aio.insecure_channel(b.address) as channel:
            got = await alerts_grpc.AlertsServiceStub(channel).GetAlert(
                alerts_pb.GetAlertRequest(alert_id=alert_id), timeout=10
            )
            return int(got.alert.state)

    from langerhans.alerts.v1 import alerts_pb2

    assert asyncio.run(stored_state()) == alerts_pb2.ALERT_STATE_ACKNOWLEDGED

    # Someone else's alert id under Ada's path is not Ada's: not found, nothing changed.
    bob = make_user(b.client, name="Bob")
    bobs = _raise_low(b, bob.id)
    crossed = b.client.post(
        f"/api/v1/people/{ada.id}/alerts/{bobs}/acknowledge", json={}, headers=carer.auth
    )
    assert crossed.status_code == 404, crossed.text
