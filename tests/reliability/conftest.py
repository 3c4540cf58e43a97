"""Reliability scenarios run whole processes for minutes: only under `make test-reliability`.

They are marked slow and skipped unless LANGERHANS_RELIABILITY=1 (the make target sets it), so
`make test` stays within its CI budget; the fault proxy's own unit tests always run.
"""

from __future__ import annotations

import os

import pytest

from tests.runtime.conftest import kafka_bootstrap, make_topic

__all__ = ["kafka_bootstrap", "make_topic"]

ENABLED = os.environ.get("LANGERHANS_RELIABILITY", "").strip() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="whole-platform scenario: run with `make test-reliability`")
    for item in items:
        if "slow" in item.keywords and str(item.path).startswith(os.path.dirname(__file__)):
            item.add_marker(skip)
