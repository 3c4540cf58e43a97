"""Prometheus metrics of the device gateway (names are the contract in docs/observability.md)."""

from __future__ import annotations

from langerhans.device.v1 import device_pb2
from prometheus_client import Counter

__all__ = ["PUMP_COMMANDS", "command_outcome", "record_command_transition"]

PUMP_COMMANDS = Counter(
    "langerhans_pump_commands_total",
    "Pump command lifecycle transitions, by the state reached "
    "(queued, sent, received, executed, rejected, expired, uncertain).",
    ["outcome"],
)


def command_outcome(state: int) -> str:
    """`PUMP_COMMAND_STATE_EXECUTED` -> `executed`; unknown numbers -> `unknown`."""
    try:
        name = device_pb2.PumpCommandState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return "unknown"
    return name.removeprefix("PUMP_COMMAND_STATE_").lower()


def record_command_transition(state: int) -> None:
    PUMP_COMMANDS.labels(outcome=command_outcome(state)).inc()
