"""alerts: evaluates rules on readings, forecasts and pump events; notifies and escalates."""
