"""Bolus calculator, remote bolus, forecast and loop status (backed by the dosing engine)."""
