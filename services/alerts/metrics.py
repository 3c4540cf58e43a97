"""Alerts metrics: open alerts per lifecycle state, recomputed from storage.

The gauge is computed from the `alerts` table (not incremented on each change), so it is right
after a restart and whichever process or API call changed an alert.
"""

from __future__ import annotations

import logging

from prometheus_client import Gauge
from sqlalchemy.orm import Session, sessionmaker

from services.alerts.repository import AlertRepository

__all__ = ["ALERTS_ACTIVE", "refresh_alerts_active"]

log = logging.getLogger(__name__)

ALERTS_ACTIVE = Gauge(
    "langerhans_alerts_active",
    "Open (unresolved) alerts by lifecycle state, counted in the alerts store.",
    ("state",),
)


def refresh_alerts_active(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Set the gauge from storage; returns the counts by state (for logs and tests)."""
    with sessions() as session:
        counts = AlertRepository(session).open_counts_by_state()
    for state, count in counts.items():
        ALERTS_ACTIVE.labels(state.value).set(count)
    return {state.value: count for state, count in counts.items()}
