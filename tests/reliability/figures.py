"""Figures the reliability scenarios measure, merged into var/reliability/figures.json."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

from services.runtime.settings import var_dir

__all__ = ["figures_path", "read_figures", "record_figure"]


def figures_path() -> Path:
    return var_dir() / "reliability" / "figures.json"


def read_figures(path: Path | None = None) -> dict[str, float | int | str]:
    path = path or figures_path()
    try:
        data: dict[str, float | int | str] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def record_figure(name: str, value: float | int | str) -> None:
    """Store one figure (several test processes may write at once: the file is locked)."""
    path = figures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".figures.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        figures = read_figures(path)
        figures[name] = value
        path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
