"""Langerhans cloud services: device gateway, CGM ingestion, dosing engine, alerts."""
