"""Controllers by name, for `make bench-clinical CONTROLLER=<name>`.

Add an algorithm by registering a factory `TherapySettings -> Controller` here.
"""

from __future__ import annotations

from sim.controller import ControllerFactory
from sim.controllers.baseline import BaselineController
from sim.controllers.dosing_engine import DosingEngineController

__all__ = ["CONTROLLERS", "resolve_controller"]

CONTROLLERS: dict[str, ControllerFactory] = {
    "baseline": BaselineController,
    "dosing-engine": DosingEngineController,
}


def resolve_controller(name: str) -> ControllerFactory:
    """The factory registered as `name`; a clear error listing the known names otherwise."""
    try:
        return CONTROLLERS[name]
    except KeyError:
        known = ", ".join(sorted(CONTROLLERS))
        raise ValueError(f"unknown controller {name!r}; known: {known}") from None
