"""An independently written Nightscout client (py-nightscout, from PyPI) against real uvicorn.

py-nightscout only reads; the writes are the xDrip+/AndroidAPS/Loop-shaped uploads, sent over
real HTTP the way those apps send them (JSON body, `api-secret` = SHA-1 of the secret).
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.gateway import ns_payloads as ns
from tests.gateway.conftest import PASSWORD

py_nightscout = pytest.importorskip("py_nightscout")

SECRET = "client-test-secret-1"


@pytest.fixture
def uploaded(live_server):
    """A person whose uploaders have written entries, treatments, device status and a profile."""
    with httpx.Client(base_url=live_server, timeout=10) as http:
        email = "ns-client@example.org"
        created = http.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": PASSWORD, "display_name": "NS", "role": "person"},
        )
        person_id = created.json()["id"]
        auth = {
            "Authorization": "Bearer "
            + http.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}).json()[
                "access_token"
            ]
        }
        assert (
            http.put(
                f"/api/v1/people/{person_id}/nightscout/secret",
                json={"secret": SECRET},
                headers=auth,
            ).status_code
            == 204
        )
        token = http.post(
            f"/api/v1/people/{person_id}/nightscout/tokens", json={"name": "follower"}, headers=auth
        ).json()["token"]
        headers = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}
        data = {
            "sgvs": ns.xdrip_sgvs(8),
            "treatments": ns.aaps_treatments() + ns.loop_treatments(),
            "statuses": [ns.aaps_devicestatus(), ns.loop_devicestatus()],
            "profile": ns.aaps_profile(),
        }
        for path, body in (
            ("/api/v1/entries", data["sgvs"]),
            ("/api/v1/treatments", data["treatments"]),
            ("/api/v1/devicestatus", data["statuses"]),
            ("/api/v1/profile", data["profile"]),
        ):
            r = http.post(path, json=body, headers=headers)
            assert r.status_code == 200, r.text
    return {"url": live_server, "token": token, **data}


async def test_py_nightscout_reads_back_what_uploaders_wrote(uploaded):
    for credential in (SECRET, f"token={uploaded['token']}"):
        api = py_nightscout.Api(uploaded["url"], api_secret=credential)
        status = await api.get_server_status()
        assert (status.status, status.apiEnabled) == ("ok", True)

        sgvs = await api.get_sgvs()
        # Nightscout's default count (10) covers the 8 uploaded; newest first.
        assert [s.sgv for s in sgvs] == [e["sgv"] for e in uploaded["sgvs"]]
        assert [s.direction for s in sgvs] == [e["direction"] for e in uploaded["sgvs"]]
        assert [int(s.date.timestamp() * 1000) for s in sgvs] == [
            e["date"] for e in uploaded["sgvs"]
        ]
        assert {s.device for s in sgvs} == {"xDrip-DexcomG6"}

        treatments = await api.get_treatments()
        got = {(t.eventType, t.insulin, t.carbs, t.enteredBy) for t in treatments}
        sent = {
            (t["eventType"], t.get("insulin"), t.get("carbs"), t["enteredBy"])
            for t in uploaded["treatments"]
        }
        assert got == sent
        temp = [t for t in treatments if t.eventType == "Temp Basal"]
        assert sorted((t.rate, t.duration) for t in temp) == [(0.85, 30), (1.2, 30)]

        profiles = await api.get_profiles()
        default = profiles.profile_definitions[0].get_default_profile()
        assert default.dia == 5.0
        assert [e.value for e in default.basal.entries] == [0.8, 1.1]
        assert default.sens.entries[0].value == 45.0

        statuses = await api.get_latest_devices_status()
        assert set(statuses) == {"loop://iPhone", "openaps://samsung SM-G970F"}
        assert statuses["loop://iPhone"].loop["cob"]["cob"] == 20
        assert statuses["openaps://samsung SM-G970F"].openaps["iob"]["iob"] == 2.1


async def test_py_nightscout_with_a_wrong_secret_gets_nothing(uploaded):
    import aiohttp

    api = py_nightscout.Api(uploaded["url"], api_secret="not-the-secret-at-all")
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await api.get_sgvs()
    assert info.value.status == 401
