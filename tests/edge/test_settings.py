"""Edge settings: the same environment variables and checks as the services' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.settings import EdgeSettings, SettingsError, edge_var_dir
from services.runtime.clock import AcceleratedClock, SystemClock
from services.runtime.settings import var_dir


def test_environment_then_keywords() -> None:
    env = {
        "LANGERHANS_POLL_INTERVAL_S": "12.5",
        "DEVICE_GATEWAY_ADDR": "10.0.0.7:6000",
        "LANGERHANS_LOG_JSON": "false",
        "LANGERHANS_STATE_ROOT": "/srv/hub",
        "LANGERHANS_CLOCK_SPEED": "60",
        "LANGERHANS_CLOCK_SIM_START": "2026-03-01T08:00:00+00:00",
    }
    s = EdgeSettings(environ=env, offline_after_s=90)
    assert s.poll_interval_s == 12.5
    assert s.offline_after_s == 90
    assert s.resolved_hub_addr == "10.0.0.7:50061"
    assert s.resolved_enroll_addr == "10.0.0.7:50062"
    assert s.log_json is False
    assert s.state_root == Path("/srv/hub")
    assert isinstance(s.clock(), AcceleratedClock)
    assert isinstance(EdgeSettings(environ={}).clock(), SystemClock)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LANGERHANS_POLL_INTERVAL_S": "0"}, "poll_interval_s"),
        ({"LANGERHANS_SUSPEND_THRESHOLD_MG_DL": "40"}, "suspend_threshold"),
        ({"LANGERHANS_LOG_JSON": "maybe"}, "boolean"),
        ({"LANGERHANS_ENVIRONMENT": "production", "LANGERHANS_CLOCK_SPEED": "10"}, "accelerated"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        EdgeSettings(environ=env)


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown"):
        EdgeSettings(environ={}, poll_interval=5)


def test_var_dir_is_the_services_one() -> None:
    assert edge_var_dir() == var_dir()
