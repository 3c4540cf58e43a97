"""Reading and event ids stay the RFC 4122 name-based (SHA-1) UUIDs they always were:
re-published readings must keep their ids so consumers dedupe them."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from services.cgm_ingestion.events import reading_id

NAMESPACE = uuid.UUID("6f1d3c2e-8a57-4c1b-9e53-3f7d2b0c9a11")


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=120))
def test_reading_id_is_the_uuid5_of_the_identity(name: str) -> None:
    assert reading_id(name) == str(uuid.uuid5(NAMESPACE, name))


def test_reading_id_is_a_version_5_uuid() -> None:
    parsed = uuid.UUID(reading_id("0123456789abcdef0123456789abcdef"))
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
