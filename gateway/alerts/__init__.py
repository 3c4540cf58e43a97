"""Alerts for apps and partners (backed by the alerts service)."""
