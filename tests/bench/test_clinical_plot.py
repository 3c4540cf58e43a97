"""The engine-against-baseline plot reads the cohort rows bench-clinical writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clinical_plot import cohort_rows, plot_comparison

HEADER = (
    "| scenario | group | days | TIR % | TBR<70 % | TBR<54 % | TAR>180 % | TAR>250 % "
    "| mean mg/dL | CV % | GMI % | LBGI | HBGI | severe | TDD U |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def _table(rows: list[tuple[str, str, float, float, int]]) -> str:
    return HEADER + "".join(
        f"| {s} | {g} | 7 | {tir} | {tbr} | 0.00 | 9.0 | 1.0 | 125 | 30.0 | 6.30 | 0.7 | 2.3 "
        f"| {severe} | 32.0 |\n"
        for s, g, tir, tbr, severe in rows
    )


def test_only_whole_cohort_rows_are_read_with_their_figures() -> None:
    table = _table(
        [
            ("standard", "all", 89.2, 0.78, 0),
            ("standard", "child", 86.0, 1.29, 0),
            ("hub_offline", "all", 80.7, 2.11, 3),
        ]
    )
    rows = cohort_rows("# title\n\nsome text | with a pipe\n" + table)
    assert set(rows) == {"standard", "hub_offline"}
    assert (rows["standard"].tir_pct, rows["standard"].tbr70_pct) == (89.2, 0.78)
    assert rows["hub_offline"].severe_events == 3


def test_the_plot_is_written_and_needs_shared_scenarios(tmp_path: Path) -> None:
    baseline = cohort_rows(_table([("standard", "all", 83.0, 1.14, 2)]))
    engine = cohort_rows(_table([("standard", "all", 89.2, 0.78, 0)]))
    path = plot_comparison(baseline, engine, tmp_path / "img" / "cmp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="both tables"):
        plot_comparison(baseline, cohort_rows(_table([("dawn", "all", 88.0, 1.0, 0)])), path)


def test_the_committed_tables_have_every_scenario_in_both() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    baseline = cohort_rows((docs / "clinical-baseline.md").read_text())
    engine = cohort_rows((docs / "clinical-dosing-engine.md").read_text())
    assert "standard" in engine
    assert set(engine) == set(baseline)
