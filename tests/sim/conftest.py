"""Fixtures for the simulation tests."""

from __future__ import annotations

import pytest

from sim.person import VirtualPerson, make_cohort


@pytest.fixture(scope="session")
def cohort() -> list[VirtualPerson]:
    return make_cohort()
