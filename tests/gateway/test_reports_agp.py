"""AGP report: consensus metrics on a designed trace, percentiles, daily traces, PNG/PDF files
and access checks. Readings go in through the Nightscout upload API like any uploader's."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread

from services.runtime.clock import FixedClock
from tests.gateway.conftest import User, follow, make_user

SECRET = "agp-uploader-secret"
# 20 readings repeating: 1 < 54, 1 in 54–69, 14 in range, 3 in 181–250, 1 > 250. So every
# whole number of blocks has TBR54 5 %, TBR70 10 %, TIR 70 %, TAR180 20 %, TAR250 5 %.
BLOCK_MG_DL = [50, 65] + [120] * 14 + [200] * 3 + [300]


def upload(client: TestClient, person: User, points: list[tuple[datetime, int]]) -> None:
    secret_set = client.put(
        f"/api/v1/people/{person.id}/nightscout/secret",
        json={"secret": SECRET},
        headers=person.auth,
    )
    assert secret_set.status_code in {200, 204}, secret_set.text
    headers = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}
    docs = [
        {
            "type": "sgv",
            "sgv": v,
            "date": int(t.timestamp() * 1000),
            "dateString": t.isoformat(),
            "direction": "Flat",
            "device": "agp-test",
        }
        for t, v in points
    ]
    for i in range(0, len(docs), 1000):
        r = client.post("/api/v1/entries", json=docs[i : i + 1000], headers=headers)
        assert r.status_code == 200, r.text


def five_minute_slots(start: datetime, end: datetime, skip_day: datetime | None = None):
    t = start
    while t < end:
        if skip_day is None or not (skip_day <= t < skip_day + timedelta(days=1)):
            yield t
        t += timedelta(minutes=5)


@pytest.fixture
def person(client: TestClient) -> User:
    return make_user(client, "person", "Agnes Pruitt")


def test_metrics_match_the_designed_trace(
    client: TestClient, person: User, clock: FixedClock
) -> None:
    now = clock.now()  # 2026-01-15 12:00 UTC
    start = datetime(2026, 1, 2, tzinfo=UTC)  # 14 whole UTC days ending today
    gap = datetime(2026, 1, 5, tzinfo=UTC)  # one day without a sensor
    times = list(five_minute_slots(start, now, skip_day=gap))
    values = [BLOCK_MG_DL[i % len(BLOCK_MG_DL)] for i in range(len(times))]
    assert len(values) % len(BLOCK_MG_DL) == 0  # whole blocks: the percentages are exact
    # Readings outside the period must not count.
    upload(client, person, [*zip(times, values, strict=True), (start - timedelta(minutes=5), 40)])

    r = client.get(f"/api/v1/people/{person.id}/reports/agp", headers=person.auth)
    assert r.status_code == 200, r.text
    report = r.json()
    m = report["metrics"]
    v = np.array(values, dtype=float)
    assert m["readings"] == len(values)
    assert m["tir_pct"] == 70.0
    assert m["tbr70_pct"] == 10.0
    assert m["tbr54_pct"] == 5.0
    assert m["tar180_pct"] == 20.0
    assert m["tar250_pct"] == 5.0
    assert m["mean_mg_dl"] == pytest.approx(v.mean(), abs=0.06)
    assert m["sd_mg_dl"] == pytest.approx(v.std(ddof=1), abs=0.06)
    assert m["cv_pct"] == pytest.approx(100 * v.std(ddof=1) / v.mean(), abs=0.06)
    assert m["gmi_pct"] == pytest.approx(3.31 + 0.02392 * v.mean(), abs=0.06)
    slots_in_period = (now - start) / timedelta(minutes=5)
    assert m["coverage_pct"] == pytest.approx(100 * len(times) / slots_in_period, abs=0.06)
    assert m["sufficient_data"] is True

    assert report["days"] == 14
    assert report["display_name"] == "Agnes Pruitt"
    assert datetime.fromisoformat(report["start"]) == start
    dates = [d["date"] for d in report["daily"]]
    assert dates == [(start + timedelta(days=i)).date().isoformat() for i in range(14)]
    by_date = {d["date"]: d for d in report["daily"]}
    assert by_date["2026-01-05"]["glucose_mg_dl"] == []
    assert by_date["2026-01-05"]["tir_pct"] is None
    assert len(by_date["2026-01-04"]["glucose_mg_dl"]) == 288
    assert len(by_date["2026-01-15"]["glucose_mg_dl"]) == 144  # today up to noon


def test_percentiles_follow_time_of_day_in_the_requested_zone(
    client: TestClient, person: User, clock: FixedClock
) -> None:
    now = clock.now()
    start = now - timedelta(days=14)

    # 100 mg/dL before local noon in New York, 200 after; late morning a spread of values.
    def level(t: datetime) -> int:
        local = t.astimezone(ZoneInfo("America/New_York"))
        if 9 <= local.hour < 10:
            return 60 + (local.minute // 5) * 10  # 60, 70, …, 170 within the hour
        return 100 if local.hour < 12 else 200

    upload(client, person, [(t, level(t)) for t in five_minute_slots(start, now)])
    r = client.get(
        f"/api/v1/people/{person.id}/reports/agp",
        params={"tz": "America/New_York"},
        headers=person.auth,
    )
    assert r.status_code == 200, r.text
    bins = {b["minute_of_day"]: b for b in r.json()["percentiles"]}
    assert len(bins) == 96
    early, late = bins[3 * 60 + 7], bins[15 * 60 + 7]
    assert early["p5"] == early["p50"] == early["p95"] == 100
    assert late["p5"] == late["p50"] == late["p95"] == 200
    spread = bins[9 * 60 + 22]  # 09:15–09:30, pooled with its neighbours: only the ramp
    assert spread["p5"] < spread["p25"] < spread["p50"] < spread["p75"] < spread["p95"]
    assert spread["p5"] >= 60
    assert spread["p95"] <= 170
    bad = client.get(
        f"/api/v1/people/{person.id}/reports/agp",
        params={"tz": "Mars/Olympus"},
        headers=person.auth,
    )
    assert bad.status_code == 422


def test_no_readings_gives_no_numbers(client: TestClient, person: User) -> None:
    r = client.get(f"/api/v1/people/{person.id}/reports/agp?days=7", headers=person.auth)
    assert r.status_code == 200, r.text
    m = r.json()["metrics"]
    assert m["readings"] == 0
    assert m["coverage_pct"] == 0
    assert m["sufficient_data"] is False
    for key in ("mean_mg_dl", "sd_mg_dl", "cv_pct", "gmi_pct", "tir_pct", "tbr70_pct"):
        assert m[key] is None
    assert all(b["p50"] is None for b in r.json()["percentiles"])
    png = client.get(f"/api/v1/people/{person.id}/reports/agp.png?days=7", headers=person.auth)
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG")


def test_png_and_pdf_are_valid_files(client: TestClient, person: User, clock: FixedClock) -> None:
    now = clock.now()
    start = now - timedelta(days=14)
    upload(
        client,
        person,
        [(t, 130 + int(60 * np.sin(i / 40))) for i, t in enumerate(five_minute_slots(start, now))],
    )
    png = client.get(f"/api/v1/people/{person.id}/reports/agp.png", headers=person.auth)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.headers["cache-control"] == "no-store"
    pixels = imread(io.BytesIO(png.content), format="png")
    assert pixels.shape[0] > 400
    assert pixels.shape[1] > 800
    assert pixels.std() > 0.05  # something was drawn

    pdf = client.get(f"/api/v1/people/{person.id}/reports/agp.pdf", headers=person.auth)
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    body = pdf.content
    assert body.startswith(b"%PDF-")
    assert body.rstrip().endswith(b"%%EOF")
    assert re.search(rb"/Count 1\b", body), "one page"
    assert len(body) > 10_000


@pytest.mark.parametrize("suffix", ["", ".png", ".pdf"])
def test_reports_are_access_checked(client: TestClient, person: User, suffix: str) -> None:
    url = f"/api/v1/people/{person.id}/reports/agp{suffix}"
    stranger = make_user(client, "person", "Stranger")
    caregiver = make_user(client, "caregiver", "Carer")
    assert client.get(url, headers=stranger.auth).status_code == 404
    assert client.get(url, headers=caregiver.auth).status_code == 404
    assert client.get(url).status_code == 401
    follow(client, person, caregiver, view=True)
    assert client.get(url, headers=caregiver.auth).status_code == 200
    # The stranger's own report is theirs alone: the person cannot read it either.
    other = f"/api/v1/people/{stranger.id}/reports/agp{suffix}"
    assert client.get(other, headers=person.auth).status_code == 404
