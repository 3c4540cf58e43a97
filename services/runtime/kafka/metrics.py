"""Prometheus metrics of the event backbone (exposed by each service's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONSUMER_LAG",
    "EVENTS_DEAD_LETTERED",
    "EVENTS_DUPLICATE",
    "EVENTS_HANDLED",
    "EVENTS_RETRIED",
    "EVENTS_SENT",
    "HANDLER_SECONDS",
    "OUTBOX_PENDING",
    "OUTBOX_PUBLISHED",
]

_LABELS = ("topic", "group")

EVENTS_HANDLED = Counter(
    "langerhans_events_handled_total", "Events handled and committed to storage", _LABELS
)
EVENTS_DUPLICATE = Counter(
    "langerhans_events_duplicate_total", "Re-delivered events skipped by the dedupe table", _LABELS
)
EVENTS_RETRIED = Counter(
    "langerhans_events_retried_total", "Handler attempts that failed and were retried", _LABELS
)
EVENTS_DEAD_LETTERED = Counter(
    "langerhans_events_dead_lettered_total",
    "Records sent to the dead-letter topic",
    (*_LABELS, "reason"),
)
HANDLER_SECONDS = Histogram(
    "langerhans_event_handler_seconds",
    "Handler time per event including its storage commit",
    _LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG = Gauge(
    "langerhans_consumer_lag_records",
    "High watermark minus the next offset to handle, per partition",
    (*_LABELS, "partition"),
)
EVENTS_SENT = Counter("langerhans_events_sent_total", "Events handed to the producer", ("topic",))
OUTBOX_PUBLISHED = Counter(
    "langerhans_outbox_published_total", "Outbox rows published and marked", ("topic",)
)
OUTBOX_PENDING = Gauge("langerhans_outbox_pending_rows", "Outbox rows not yet published")
