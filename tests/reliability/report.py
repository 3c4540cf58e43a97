"""Print the one-line summary of `make test-reliability` (or `make fuzz` with `fuzz`).

`python -m tests.reliability.report` → `RESULT reliability name=figure …` from
var/reliability/figures.json; `… report fuzz` → `RESULT fuzz …` from the fuzz run's JSON.
"""

from __future__ import annotations

import json
import sys

from services.runtime.settings import var_dir
from tests.reliability.figures import read_figures


def reliability_line() -> str:
    figures = read_figures()
    if not figures:
        return "RESULT reliability none=no-figures-recorded"
    return "RESULT reliability " + " ".join(f"{k}={v}" for k, v in sorted(figures.items()))


def fuzz_line(mode: str = "long") -> str:
    path = var_dir() / "reliability" / f"fuzz-{mode}.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        return "RESULT fuzz none=no-figures-recorded"
    return (
        f"RESULT fuzz inputs={report['inputs']} fuzzers={len(report['fuzzers'])} "
        f"crashes={report['crashes']} unexpected_exceptions={report['unexpected_exceptions']}"
    )


def main(argv: list[str]) -> int:
    print(fuzz_line() if argv[:1] == ["fuzz"] else reliability_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
