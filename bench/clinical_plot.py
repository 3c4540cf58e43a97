"""Engine against open-loop baseline, per scenario, as one PNG (from the bench-clinical tables).

`python -m bench.clinical_plot` reads the cohort rows ("| <scenario> | all | …") of
docs/clinical-baseline.md and docs/clinical-dosing-engine.md, which `make bench-clinical`
writes, and draws TIR and TBR<70 side by side with the issue's goals, into
docs/img/clinical_comparison.png.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["CohortRow", "cohort_rows", "plot_comparison"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
TIR_GOAL_PCT = 90.0  # standard scenario (issue 4)
TBR70_GOAL_PCT = 1.0


@dataclass(frozen=True, slots=True)
class CohortRow:
    tir_pct: float
    tbr70_pct: float
    severe_events: int


def cohort_rows(table_md: str) -> dict[str, CohortRow]:
    """The whole-cohort row of each scenario in a bench-clinical table, by scenario name."""
    rows: dict[str, CohortRow] = {}
    for line in table_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # scenario | group | days | TIR | TBR<70 | TBR<54 | … | severe | TDD
        if len(cells) == 15 and cells[1] == "all" and cells[2].isdigit():
            rows[cells[0]] = CohortRow(
                tir_pct=float(cells[3]), tbr70_pct=float(cells[4]), severe_events=int(cells[13])
            )
    return rows


def plot_comparison(
    baseline: dict[str, CohortRow], engine: dict[str, CohortRow], path: Path
) -> Path:
    """Bars of TIR and TBR<70 per scenario, baseline and engine, severe events annotated."""
    scenarios = [name for name in engine if name in baseline]
    if not scenarios:
        raise ValueError("no scenario appears in both tables")
    x = np.arange(len(scenarios))
    width = 0.38
    fig, (ax_tir, ax_tbr) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, field, goal, label in (
        (ax_tir, "tir_pct", TIR_GOAL_PCT, "TIR 70–180 mg/dL, %"),
        (ax_tbr, "tbr70_pct", TBR70_GOAL_PCT, "TBR < 70 mg/dL, %"),
    ):
        base_values = [getattr(baseline[s], field) for s in scenarios]
        engine_values = [getattr(engine[s], field) for s in scenarios]
        ax.bar(x - width / 2, base_values, width, color="tab:gray", label="open-loop baseline")
        ax.bar(x + width / 2, engine_values, width, color="tab:blue", label="dosing engine")
        ax.axhline(goal, color="tab:red", lw=1, ls="--", label=f"goal in standard ({goal:g} %)")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    ax_tir.set_ylim(60, 100)
    top = max(r.tbr70_pct for r in [*baseline.values(), *engine.values()])
    ax_tbr.set_ylim(0, top * 1.3)
    for i, s in enumerate(scenarios):
        ax_tir.annotate(
            f"{engine[s].tir_pct:.1f}", (x[i] + width / 2, engine[s].tir_pct),
            ha="center", va="bottom", fontsize=8,
        )  # fmt: skip
        severe = f"severe {baseline[s].severe_events}→{engine[s].severe_events}"
        ax_tbr.annotate(severe, (x[i], 0.95), xycoords=("data", "axes fraction"),
                        ha="center", va="top", fontsize=7, color="tab:red")  # fmt: skip
    handles, labels = ax_tir.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 0.95))
    ax_tbr.set_xticks(x, scenarios, rotation=30, ha="right")
    fig.suptitle("In-silico cohort (30 people): open-loop baseline against the dosing engine")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, default=DOCS / "clinical-baseline.md")
    parser.add_argument("--engine", type=Path, default=DOCS / "clinical-dosing-engine.md")
    parser.add_argument("--out", type=Path, default=DOCS / "img" / "clinical_comparison.png")
    args = parser.parse_args(argv)
    baseline = cohort_rows(args.baseline.read_text())
    engine = cohort_rows(args.engine.read_text())
    path = plot_comparison(baseline, engine, args.out)
    print(f"{len(engine)} scenarios plotted to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
