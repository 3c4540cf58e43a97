"""Inputs the fuzzers found that used to raise instead of being refused clearly."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from langerhans.cgm.v1 import cgm_pb2

from services.cgm_ingestion.events import raw_from_proto
from services.cgm_ingestion.readings import Rejection, RejectReason, validate
from tests.fuzz.test_fuzz_nightscout import WRITE, client

__all__ = ["client"]

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def test_sensor_age_beyond_the_calendar_is_unknown_not_an_overflow() -> None:
    message = cgm_pb2.RawCgmReading(patient_id="p", sensor_id="s", sensor_age_min=2**32 - 1)
    message.measured_at.FromDatetime(NOW)
    message.glucose.value = 120
    message.glucose.unit = 1  # type: ignore[assignment]
    raw = raw_from_proto(message)
    assert raw.device_time == NOW
    assert raw.sensor_started_at is None


def test_timestamp_outside_protobuf_range_is_rejected_as_missing() -> None:
    message = cgm_pb2.RawCgmReading(patient_id="p", sensor_id="s")
    message.measured_at.seconds = 2**62
    message.glucose.value = 120
    outcome = validate(raw_from_proto(message), NOW)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is RejectReason.MISSING_TIMESTAMP


def test_profile_with_a_non_string_default_is_refused(client: TestClient) -> None:
    body = {"store": {"Default": {"dia": 6}}, "defaultProfile": ["Default"]}
    response = client.post("/api/v1/profile.json", json=body, headers=WRITE)
    assert response.status_code in {400, 422}, response.text


def test_treatment_moved_onto_another_ones_slot_is_refused(client: TestClient) -> None:
    first = {"eventType": "Note", "created_at": "2026-01-15T09:00:00Z", "identifier": "regr-a"}
    second = {"eventType": "Note", "created_at": "2026-01-15T09:05:00Z", "identifier": "regr-b"}
    for doc in (first, second):
        assert client.post("/api/v1/treatments.json", json=doc, headers=WRITE).status_code == 200
    moved = {**second, "created_at": first["created_at"]}
    response = client.post("/api/v1/treatments.json", json=moved, headers=WRITE)
    assert response.status_code in {400, 409, 422}, response.text
    found = client.get(
        "/api/v1/treatments.json", params={"find[eventType]": "Note"}, headers=WRITE
    ).json()
    assert {t["identifier"] for t in found} >= {"regr-a", "regr-b"}


def test_find_with_a_number_beyond_64_bits_is_refused(client: TestClient) -> None:
    for value in ("1" * 20, "-" + "9" * 25, "1e309", "inf"):
        response = client.get(
            "/api/v1/entries.json", params={"find[date][$gte]": value}, headers=WRITE
        )
        assert response.status_code in {400, 422}, (value, response.text)
