"""Fuzzing budget: a quick pass inside `make test`, a long one with `make fuzz`.

`LANGERHANS_FUZZ=long` (set by `make fuzz`) multiplies every fuzzer's example count; the
figures (examples run, crashes, unexpected exceptions) go to var/reliability/fuzz.json.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import pytest

from services.runtime.settings import var_dir

LONG = os.environ.get("LANGERHANS_FUZZ", "").strip().lower() == "long"
# Examples per fuzzer: ~1 s each in `make test`; `make fuzz` runs about 25 times longer.
QUICK_EXAMPLES = 150
LONG_EXAMPLES = 4000


def examples(quick: int = QUICK_EXAMPLES) -> int:
    return max(quick, LONG_EXAMPLES * quick // QUICK_EXAMPLES) if LONG else quick


class Tally:
    """Counts inputs per fuzzer and how each ended (ok, clear parse error, anything else)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter[str]] = {}

    def record(self, fuzzer: str, outcome: str) -> None:
        self.outcomes.setdefault(fuzzer, Counter())[outcome] += 1


_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    yield _TALLY
    if not _TALLY.outcomes:
        return
    total = sum(sum(c.values()) for c in _TALLY.outcomes.values())
    unexpected = sum(c["unexpected"] for c in _TALLY.outcomes.values())
    report = {
        "mode": "long" if LONG else "quick",
        "inputs": total,
        "crashes": 0,  # a crash of the interpreter would not get here; pytest would fail first
        "unexpected_exceptions": unexpected,
        "fuzzers": {name: dict(c) for name, c in sorted(_TALLY.outcomes.items())},
    }
    out = var_dir() / "reliability"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fuzz-{report['mode']}.json").write_text(json.dumps(report, indent=2) + "\n")
