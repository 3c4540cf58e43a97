"""JSON log lines carry the service, request and event ids, extras and exceptions."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.runtime.logging import bind_event_id, bind_request_id, configure_logging
from services.runtime.settings import ServiceSettings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(ServiceSettings(service_name="alerts"), stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_standard_fields(captured: io.StringIO) -> None:
    logging.getLogger("alerts.escalation").warning("low alert %s escalated", "a-7")
    (entry,) = lines(captured)
    assert entry["msg"] == "low alert a-7 escalated"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "alerts.escalation"
    assert entry["service"] == "alerts"
    ts = datetime.fromisoformat(str(entry["ts"]))
    assert ts.tzinfo is not None
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60
    assert "request_id" not in entry
    assert "event_id" not in entry


def test_ids_from_the_context_and_extras_are_included(captured: io.StringIO) -> None:
    log = logging.getLogger("alerts.consumer")
    with bind_event_id("evt-1"), bind_request_id("req-1"):
        log.info(
            "handled",
            extra={
                "patient_id": "p-1",
                "glucose_mg_dl": 54,
                "at": datetime(2026, 1, 1, tzinfo=UTC),
            },
        )
    log.info("after")
    handled, after = lines(captured)
    assert handled["event_id"] == "evt-1"
    assert handled["request_id"] == "req-1"
    assert handled["patient_id"] == "p-1"
    assert handled["glucose_mg_dl"] == 54
    assert handled["at"] == "2026-01-01T00:00:00+00:00"
    assert "event_id" not in after
    assert "request_id" not in after


def test_exceptions_are_logged_with_their_traceback(captured: io.StringIO) -> None:
    try:
        raise ValueError("bad reading")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (entry,) = lines(captured)
    assert "ValueError: bad reading" in str(entry["exc"])
    assert entry["level"] == "ERROR"


def test_configure_logging_twice_keeps_one_handler(captured: io.StringIO) -> None:
    other = io.StringIO()
    handler = configure_logging(ServiceSettings(service_name="alerts"), stream=other)
    try:
        logging.getLogger("x").warning("once")
        assert captured.getvalue() == ""
        assert len(lines(other)) == 1
    finally:
        logging.getLogger().removeHandler(handler)


def test_text_mode_for_terminals_still_shows_the_ids() -> None:
    stream = io.StringIO()
    handler = configure_logging(
        ServiceSettings(service_name="alerts", log_json=False), stream=stream
    )
    try:
        with bind_request_id("req-9"):
            logging.getLogger("x").warning("plain")
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert "plain" in line
    assert "request_id=req-9" in line
    assert not line.startswith("{")
