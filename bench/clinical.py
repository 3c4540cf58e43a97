"""In-silico clinical benchmark: every scenario over the virtual cohort for one controller.

Run as `python -m bench.clinical [--controller NAME]` (or `make bench-clinical CONTROLLER=NAME`).
Prints a table per scenario (whole cohort and by age group), writes the tables to
docs/clinical-<controller>.md, and ends with
`RESULT clinical controller=<name> scenario=standard tir=<%> tbr70=<%> tbr54=<%> severe=<n>`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sim.controllers import CONTROLLERS, resolve_controller
from sim.metrics import Outcomes, mean_outcomes, outcomes
from sim.person import make_cohort
from sim.runner import RunResult, run_cohort
from sim.scenarios import SCENARIOS

COHORT_SEED = 2004
RUN_SEED = 7
HEADER = (
    "| scenario | group | days | TIR % | TBR<70 % | TBR<54 % | TAR>180 % | TAR>250 % "
    "| mean mg/dL | CV % | GMI % | LBGI | HBGI | severe | TDD U |"
)
RULE = "|" + "---|" * 15


def _row(scenario: str, group: str, o: Outcomes) -> str:
    return (
        f"| {scenario} | {group} | {o.days:.0f} | {o.tir_pct:.1f} | {o.tbr70_pct:.2f} "
        f"| {o.tbr54_pct:.2f} | {o.tar180_pct:.1f} | {o.tar250_pct:.1f} | {o.mean_mg_dl:.0f} "
        f"| {o.cv_pct:.1f} | {o.gmi_pct:.2f} | {o.lbgi:.2f} | {o.hbgi:.2f} "
        f"| {o.severe_events} | {o.total_daily_insulin_u:.1f} |"
    )


def _rows(result: RunResult) -> list[str]:
    per = [
        outcomes(result.glucose_mg_dl[i], float(result.to_body_u[i].sum()))
        for i in range(len(result.people))
    ]
    rows = [_row(result.scenario.name, "all", mean_outcomes(per))]
    for group in ("child", "adolescent", "adult"):
        sub = [o for o, p in zip(per, result.people, strict=True) if p.age_group == group]
        if sub:
            rows.append(_row(result.scenario.name, group, mean_outcomes(sub)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--controller", default="baseline", choices=sorted(CONTROLLERS))
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument("--out", default="docs", help="folder for clinical-<controller>.md")
    args = parser.parse_args(argv)
    factory = resolve_controller(args.controller)
    people = make_cohort(COHORT_SEED)
    names = args.scenario or list(SCENARIOS)
    print(f"cohort: {len(people)} people (seed {COHORT_SEED}); controller {args.controller}")
    all_rows: list[str] = []
    standard: Outcomes | None = None
    for name in names:
        scenario = SCENARIOS[name]
        t = time.perf_counter()
        result = run_cohort(people, scenario, factory, seed=RUN_SEED)
        result.controller = args.controller
        rows = _rows(result)
        all_rows.extend(rows)
        print(
            f"\n{name}: {scenario.description} — {scenario.days} days "
            f"({time.perf_counter() - t:.1f} s)"
        )
        print(HEADER)
        print(RULE)
        print("\n".join(rows))
        if name == "standard":
            standard = result.cohort_outcomes()
    out = Path(args.out) / f"clinical-{args.controller}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    scen_lines = "\n".join(
        f"- **{SCENARIOS[n].name}** ({SCENARIOS[n].days} days): {SCENARIOS[n].description}"
        for n in names
    )
    out.write_text(
        f"# In-silico outcomes: controller `{args.controller}`\n\n"
        f"Made by `make bench-clinical CONTROLLER={args.controller}` "
        f"(`python -m bench.clinical --controller {args.controller}`): {len(people)} virtual "
        f"people (cohort seed {COHORT_SEED}, run seed {RUN_SEED}), metrics from true blood "
        "glucose (2019 consensus; see docs/sim.md). Group rows are means over people; "
        "`severe` counts events (≥ 15 min < 54 mg/dL) over the group.\n\n"
        f"{scen_lines}\n\n{HEADER}\n{RULE}\n" + "\n".join(all_rows) + "\n",
        encoding="utf-8",
    )
    print(f"\ntables written to {out}")
    if standard is not None:
        print(
            f"RESULT clinical controller={args.controller} scenario=standard "
            f"tir={standard.tir_pct:.1f} tbr70={standard.tbr70_pct:.2f} "
            f"tbr54={standard.tbr54_pct:.2f} severe={standard.severe_events}"
        )


if __name__ == "__main__":
    main()
