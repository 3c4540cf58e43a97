"""Partner scopes: read-only by construction. Nothing that doses exists as a scope."""

from __future__ import annotations

__all__ = ["PARTNER_SCOPES", "WEBHOOK_EVENTS"]

PARTNER_SCOPES: dict[str, str] = {
    "glucose.read": "your glucose readings (CGM) with trend",
    "events.read": "carbs and insulin you logged",
    "devices.read": "the devices you use",
    "alerts.read": "alerts raised for you",
}

# Webhook event -> the scope the app needs to subscribe to it.
WEBHOOK_EVENTS: dict[str, str] = {
    "egv.created": "glucose.read",
    "event.created": "events.read",
    "device.changed": "devices.read",
    "alert.raised": "alerts.read",
}
