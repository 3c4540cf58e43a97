"""The Nightscout-compatible API under hostile uploaders and followers, through the real app.

POST bodies (random JSON and mutated recorded xDrip+/AndroidAPS/Loop uploads), `find[...]`
queries and credentials: every answer is a success or a clear 4xx; an unhandled exception
(500) fails the test (TestClient re-raises it).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gateway.app import create_app
from gateway.db import make_engine, migrate
from gateway.settings import GatewaySettings
from services.runtime.clock import FixedClock
from tests.fuzz.conftest import Tally, examples
from tests.gateway import ns_payloads as ns
from tests.gateway.conftest import make_user, pem_of

SECRET = "fuzzing-uploader-secret"
WRITE = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}
CLEAR_4XX = {400, 401, 403, 404, 405, 413, 415, 422}
# Each example is a full HTTP request through the app: fewer in the quick pass.
FUZZ_SETTINGS = settings(
    max_examples=examples(50), deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("nsfuzz") / "gateway.sqlite3"
    url = f"sqlite:///{path}"
    settings_ = GatewaySettings(
        environment="test",
        database_url=url,
        jwt_private_key_pem=SecretStr(pem_of(Ed25519PrivateKey.generate())),
        secret_pepper=SecretStr("fuzz-pepper-" + "x" * 40),
        argon2_time_cost=1,
        argon2_memory_kib=64,
        http_port=8000,
        log_json=False,
    )
    migrate(url)
    engine = make_engine(url)
    app = create_app(
        settings_, FixedClock(datetime.fromtimestamp(ns.T0_MS / 1000, UTC)), engine=engine
    )
    with TestClient(app) as test_client:
        user = make_user(test_client)
        response = test_client.put(
            f"/api/v1/people/{user.id}/nightscout/secret",
            json={"secret": SECRET},
            headers=user.auth,
        )
        assert response.status_code == 204, response.text
        yield test_client
    engine.dispose()


def _check(tally: Tally, name: str, status: int) -> None:
    if status < 300:
        tally.record(name, "ok")
    elif status in CLEAR_4XX:
        tally.record(name, "parse_error")
    else:
        tally.record(name, "unexpected")
        raise AssertionError(f"{name}: unexpected status {status}")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["sgv", "mbg", "cal", "Meal Bolus", "Temp Basal", "2026-01-15T12:00:00Z"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                st.sampled_from(
                    [
                        "date",
                        "dateString",
                        "sgv",
                        "type",
                        "eventType",
                        "insulin",
                        "carbs",
                        "created_at",
                        "duration",
                        "absolute",
                        "device",
                        "_id",
                        "$where",
                        "mills",
                    ]
                ),
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)
RECORDED: dict[str, list[Any]] = {
    "entries": ns.xdrip_sgvs(3),
    "treatments": ns.aaps_treatments()[:4] + ns.loop_treatments()[:4],
    "devicestatus": [ns.aaps_devicestatus(), ns.loop_devicestatus()],
    "profile": [ns.aaps_profile()],
}


@st.composite
def mutated_upload(draw: st.DrawFn, kind: str) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(RECORDED[kind])))
    for _ in range(draw(st.integers(1, 3))):
        keys = list(doc)
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace" and keys:
            doc[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "delete" and keys:
            del doc[draw(st.sampled_from(keys))]
        else:
            doc[draw(st.text(max_size=8))] = draw(json_values)
    return draw(st.sampled_from([doc, [doc], [doc, doc]]))


@pytest.mark.parametrize("kind", sorted(RECORDED))
def test_uploads_are_stored_or_refused_clearly(client: TestClient, kind: str, tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(body=st.one_of(json_values, mutated_upload(kind)))
    def run(body: Any) -> None:
        response = client.post(f"/api/v1/{kind}.json", json=body, headers=WRITE)
        _check(tally, f"nightscout.post.{kind}", response.status_code)

    run()


def test_raw_bodies_that_are_not_json(client: TestClient, tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(
        body=st.binary(max_size=200),
        kind=st.sampled_from(sorted(RECORDED)),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded"]
        ),
    )
    def run(body: bytes, kind: str, content_type: str) -> None:
        response = client.post(
            f"/api/v1/{kind}.json", content=body, headers={**WRITE, "content-type": content_type}
        )
        _check(tally, "nightscout.post.raw", response.status_code)

    run()


FIELDS = [
    "date",
    "dateString",
    "sgv",
    "type",
    "created_at",
    "eventType",
    "insulin",
    "carbs",
    "secret",
    "_id",
    "mills",
    "",
]
OPS = ["", "$gte", "$lte", "$gt", "$lt", "$eq", "$ne", "$in", "$nin", "$regex", "$where", "$"]
query_values = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["1768478400000", "2026-01-15T12:00:00Z", "NaN", "inf", "-1", "1e309", ""]),
)


@st.composite
def find_params(draw: st.DrawFn) -> list[tuple[str, str | int | float | bool | None]]:
    params: list[tuple[str, str | int | float | bool | None]] = []
    for _ in range(draw(st.integers(0, 4))):
        field = draw(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)))
        op = draw(st.sampled_from(OPS))
        key = f"find[{field}]" + (f"[{op}]" if op else "")
        key = draw(st.sampled_from([key, key + "[x]", f"find{field}", key.replace("]", "")]))
        params.append((key, draw(query_values)))
    if draw(st.booleans()):
        params.append(("count", draw(query_values)))
    return params


@pytest.mark.parametrize(
    "path", ["entries", "entries/sgv", "entries/current", "treatments", "devicestatus", "profile"]
)
def test_find_queries_answer_or_refuse_clearly(client: TestClient, path: str, tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(params=find_params())
    def run(params: list[tuple[str, str | int | float | bool | None]]) -> None:
        response = client.get(f"/api/v1/{path}.json", params=params, headers=WRITE)
        _check(tally, f"nightscout.find.{path}", response.status_code)

    run()


def test_credentials_are_accepted_or_refused_never_crash(client: TestClient, tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(
        secret=st.one_of(
            st.text(max_size=60),
            st.sampled_from(["token=", "token=abc", WRITE["api-secret"].upper(), "Bearer x"]),
        ),
        where=st.sampled_from(["header", "query"]),
    )
    def run(secret: str, where: str) -> None:
        if where == "header" and not (secret.isascii() and secret.isprintable()):
            return  # the HTTP client cannot send it as a header at all
        if where == "header":
            response = client.get("/api/v1/verifyauth", headers={"api-secret": secret})
        else:
            response = client.get("/api/v1/entries.json", params={"token": secret})
        _check(tally, "nightscout.auth", response.status_code)

    run()
