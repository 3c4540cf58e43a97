"""schemathesis against the gateway's OpenAPI schema: no input makes it answer 5xx.

Signed in as a person; `{person_id}` is that person (otherwise nearly every call would stop at
the access check). Backend services are not configured here, so their routes must answer
503 — counted separately, as that is the documented answer, not a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.core.result import Ok

from tests.gateway.conftest import User, make_user

EXPECTED_503_PREFIXES = (
    "/api/v1/people/{person_id}/bolus",
    "/api/v1/people/{person_id}/forecast",
    "/api/v1/people/{person_id}/loop-status",
    "/api/v1/people/{person_id}/alerts",
    "/partner/v1/alerts",
)


@pytest.fixture
def signed_in(app: FastAPI) -> Iterator[User]:
    with TestClient(app) as client:
        yield make_user(client)


@pytest.mark.slow
def test_no_server_errors(app: FastAPI, signed_in: User) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    server_errors: list[tuple[str, str, int, str]] = []
    calls = 0

    for result in api.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            nonlocal calls
            if case.path_parameters and "person_id" in case.path_parameters:
                case.path_parameters["person_id"] = signed_in.id
            response = case.call(headers={"Authorization": f"Bearer {signed_in.access}"})
            calls += 1
            expected_503 = response.status_code == 503 and case.path.startswith(
                EXPECTED_503_PREFIXES
            )
            if response.status_code >= 500 and not expected_503:
                server_errors.append(
                    (case.method, case.path, response.status_code, response.text[:200])
                )

        check()
    assert calls > 100
    assert server_errors == []
