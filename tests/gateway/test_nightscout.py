"""The Nightscout-compatible API with xDrip+/AndroidAPS/Loop-shaped uploads: written is read."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.models import NsEntry, NsTreatment
from tests.gateway import ns_payloads as ns
from tests.gateway.conftest import make_user

SECRET = "uploader-secret-42"


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.fixture
def person(client):
    user = make_user(client)
    r = client.put(
        f"/api/v1/people/{user.id}/nightscout/secret", json={"secret": SECRET}, headers=user.auth
    )
    assert r.status_code == 204, r.text
    return user


W = {"api-secret": sha1(SECRET)}


def _subset(uploaded: dict[str, Any], stored: dict[str, Any]) -> bool:
    return all(stored.get(k) == v for k, v in uploaded.items())


def test_secret_rules(client):
    user = make_user(client)
    short = client.put(
        f"/api/v1/people/{user.id}/nightscout/secret",
        json={"secret": "elevenchars"},
        headers=user.auth,
    )
    assert short.status_code == 422
    assert client.get("/api/v1/entries.json").status_code == 401
    assert (
        client.get("/api/v1/entries.json", headers={"api-secret": sha1("elevenchars")}).status_code
        == 401
    )
    # The secret itself (not its SHA-1) is not a credential on the wire.
    client.put(
        f"/api/v1/people/{user.id}/nightscout/secret", json={"secret": SECRET}, headers=user.auth
    )
    assert client.get("/api/v1/entries.json", headers={"api-secret": SECRET}).status_code == 401
    assert client.get("/api/v1/entries.json", headers=W).status_code == 200


def test_xdrip_entries_round_trip_with_queries(client, person):
    sgvs = ns.xdrip_sgvs(12)
    r = client.post("/api/v1/entries", json=sgvs, headers=W)
    assert r.status_code == 200, r.text
    assert all(len(d["_id"]) == 24 for d in r.json())
    back = client.get("/api/v1/entries/sgv.json", params={"count": 100}, headers=W).json()
    assert len(back) == 12
    for uploaded, stored in zip(sgvs, back, strict=True):  # both newest first
        assert _subset(uploaded, stored), (uploaded, stored)
    assert len(client.get("/api/v1/entries.json", headers=W).json()) == 10  # default count
    current = client.get("/api/v1/entries/current.json", headers=W).json()
    assert [e["sgv"] for e in current] == [150]
    since = client.get(
        "/api/v1/entries.json",
        params={"find[date][$gte]": str(ns.T0_MS - 15 * ns.MIN_MS), "count": "100"},
        headers=W,
    ).json()
    assert [e["sgv"] for e in since] == [150, 147, 144, 141]
    by_iso = client.get(
        "/api/v1/entries/sgv.json",
        params={
            "find[dateString][$gte]": ns.iso(ns.T0_MS - 15 * ns.MIN_MS),
            "find[sgv][$lt]": "147",
            "count": "100",
        },
        headers=W,
    ).json()
    assert [e["sgv"] for e in by_iso] == [144, 141]
    bad = client.get("/api/v1/entries.json", params={"find[secret][$gte]": "1"}, headers=W)
    assert bad.status_code == 422


def test_uploads_are_deduplicated_like_nightscout(client, person, engine):
    sgvs = ns.xdrip_sgvs(6)
    client.post("/api/v1/entries", json=sgvs, headers=W)
    client.post("/api/v1/entries", json=sgvs[:3], headers=W)  # uploader retry
    client.post("/api/v1/entries.json", json=sgvs[0], headers=W)  # single object
    aaps = ns.aaps_treatments()
    client.post("/api/v1/treatments", json=aaps, headers=W)
    client.post("/api/v1/treatments", json=aaps, headers=W)
    # AndroidAPS re-uploads a changed record under the same identifier: updated, not doubled.
    changed = {**aaps[4], "carbs": 20}
    client.post("/api/v1/treatments", json=changed, headers=W)
    # Without identifier: created_at + eventType is the identity.
    loop = ns.loop_treatments()
    client.post("/api/v1/treatments", json=loop, headers=W)
    client.post(
        "/api/v1/treatments",
        json=[{k: v for k, v in t.items() if k != "syncIdentifier"} for t in loop],
        headers=W,
    )
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(NsEntry)).scalar_one() == 6
        assert conn.execute(select(func.count()).select_from(NsTreatment)).scalar_one() == 8
    carbs = client.get(
        "/api/v1/treatments.json", params={"find[eventType]": "Carb Correction"}, headers=W
    ).json()
    assert sorted(t["carbs"] for t in carbs) == [20, 30]


def test_aaps_and_loop_treatments_devicestatus_profile_round_trip(client, person):
    uploads = ns.aaps_treatments() + ns.loop_treatments()
    r = client.post("/api/v1/treatments.json", json=uploads, headers=W)
    assert r.status_code == 200, r.text
    back = client.get("/api/v1/treatments.json", params={"count": "100"}, headers=W).json()
    assert len(back) == len(uploads)
    by_time = {t["created_at"]: t for t in back}
    for t in uploads:
        assert _subset(t, by_time[t["created_at"]]), t
    recent = client.get(
        "/api/v1/treatments",
        params={"find[created_at][$gte]": ns.iso(ns.T0_MS - 20 * ns.MIN_MS)},
        headers=W,
    ).json()
    assert {t["enteredBy"] for t in recent} == {"loop://iPhone"}

    for status in (ns.aaps_devicestatus(), ns.loop_devicestatus()):
        assert client.post("/api/v1/devicestatus", json=status, headers=W).status_code == 200
    statuses = client.get("/api/v1/devicestatus.json", headers=W).json()
    assert [s["device"] for s in statuses] == ["loop://iPhone", "openaps://samsung SM-G970F"]
    assert statuses[0]["loop"]["predicted"]["values"][:2] == [150, 148]
    assert statuses[1]["openaps"]["iob"]["iob"] == 2.1
    assert statuses[1]["pump"]["reservoir"] == 120.5

    profile = ns.aaps_profile()
    assert client.post("/api/v1/profile", json=profile, headers=W).status_code == 200
    stored = client.get("/api/v1/profile.json", headers=W).json()
    assert _subset(profile, stored[0])
    assert client.get("/api/v1/profile/current", headers=W).json()["store"] == profile["store"]


def test_bad_items_reject_the_whole_upload(client, person, engine):
    good = ns.xdrip_sgvs(3)
    future = {**good[0], "date": ns.T0_MS + 60 * ns.MIN_MS, "dateString": None}
    cases = [
        ("/api/v1/entries", [*good, {**good[0], "sgv": "high", "date": ns.T0_MS - 1}]),
        ("/api/v1/entries", [*good, future]),
        ("/api/v1/entries", [*good, {"type": "sgv", "sgv": 100}]),  # no time
        (
            "/api/v1/treatments",
            [
                *ns.aaps_treatments(),
                {"eventType": "Correction Bolus", "insulin": 45, "created_at": ns.iso(ns.T0_MS)},
            ],
        ),
        (
            "/api/v1/treatments",
            [{"eventType": "Meal Bolus", "carbs": 400, "created_at": ns.iso(ns.T0_MS)}],
        ),
        (
            "/api/v1/treatments",
            [
                {
                    "eventType": "Temp Basal",
                    "rate": 45,
                    "duration": 30,
                    "created_at": ns.iso(ns.T0_MS),
                }
            ],
        ),
        ("/api/v1/devicestatus", [{"device": "x", "openaps": "not an object"}]),
        ("/api/v1/profile", {"defaultProfile": "A", "store": {"B": {}}}),
        ("/api/v1/entries", []),
        ("/api/v1/entries", ["not an object"]),
    ]
    for url, body in cases:
        r = client.post(url, json=body, headers=W)
        assert r.status_code == 422, (url, r.text)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(NsEntry)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(NsTreatment)).scalar_one() == 0


def test_read_only_tokens_and_isolation(client, person):
    client.post("/api/v1/entries", json=ns.xdrip_sgvs(3), headers=W)
    created = client.post(
        f"/api/v1/people/{person.id}/nightscout/tokens", json={"name": "mum"}, headers=person.auth
    )
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("mum-")
    assert len(client.get("/api/v1/entries.json", params={"token": token}).json()) == 3
    as_header = client.get("/api/v1/entries.json", headers={"api-secret": f"token={token}"})
    assert len(as_header.json()) == 3
    # Read-only: uploads refused, nothing stored.
    r = client.post("/api/v1/entries", params={"token": token}, json=ns.xdrip_sgvs(5))
    assert r.status_code == 403
    assert len(client.get("/api/v1/entries.json", params={"token": token, "count": 50}).json()) == 3
    verify = client.get("/api/v1/verifyauth", params={"token": token}).json()["message"]
    assert (verify["canRead"], verify["canWrite"]) == (True, False)
    assert client.get("/api/v1/verifyauth", headers=W).json()["message"]["canWrite"] is True
    assert client.get("/api/v1/verifyauth").json()["message"]["message"] == "UNAUTHORIZED"

    # Another person's secret sees only their own (empty) data.
    other = make_user(client)
    client.put(
        f"/api/v1/people/{other.id}/nightscout/secret",
        json={"secret": "another-secret-1"},
        headers=other.auth,
    )
    assert (
        client.get("/api/v1/entries.json", headers={"api-secret": sha1("another-secret-1")}).json()
        == []
    )

    # Revoked tokens stop working.
    client.delete(
        f"/api/v1/people/{person.id}/nightscout/tokens/{created.json()['token_id']}",
        headers=person.auth,
    )
    assert client.get("/api/v1/entries.json", params={"token": token}).status_code == 401


def test_status_is_public_and_personal_data_free(client):
    status = client.get("/api/v1/status.json").json()
    assert (status["status"], status["apiEnabled"]) == ("ok", True)
    assert status["settings"]["units"] == "mg/dl"


def test_app_glucose_endpoint_reads_nightscout_uploads_with_paging(client, person):
    client.post("/api/v1/entries", json=ns.xdrip_sgvs(12), headers=W)
    url = f"/api/v1/people/{person.id}/glucose"
    page = client.get(url, params={"limit": 5}, headers=person.auth).json()
    assert [r["glucose_mg_dl"] for r in page["readings"]] == [150, 147, 144, 141, 138]
    assert page["readings"][0]["trend"] == "FortyFiveUp"
    nxt = client.get(url, params={"limit": 5, "end": page["next_end"]}, headers=person.auth).json()
    assert [r["glucose_mg_dl"] for r in nxt["readings"]] == [135, 132, 129, 126, 123]
    last = client.get(url, params={"limit": 5, "end": nxt["next_end"]}, headers=person.auth).json()
    assert (len(last["readings"]), last["next_end"]) == (2, None)


def test_oversized_upload_is_refused_before_parsing(client, person, settings, engine):
    huge = ns.xdrip_sgvs(1) * 1 + [
        {**ns.xdrip_sgvs(1)[0], "date": ns.T0_MS - i * 1000, "pad": "x" * 2000}
        for i in range(1, 1200)
    ]
    r = client.post("/api/v1/entries", json=huge, headers=W)
    assert r.status_code == 413
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(NsEntry)).scalar_one() == 0
