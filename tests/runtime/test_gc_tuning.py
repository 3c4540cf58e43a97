"""settle_heap: the start-up heap is frozen and young collections are less frequent."""

from __future__ import annotations

import subprocess
import sys

from services.runtime.settings import REPO_ROOT


def test_settle_heap_freezes_the_start_up_heap_in_a_service_process() -> None:
    # In a fresh interpreter: freezing the test runner's own heap would change other tests.
    script = (
        "import gc; from services.runtime.gc_tuning import settle_heap, YOUNG_THRESHOLD; "
        "before = gc.get_freeze_count(); settle_heap(); "
        "print(before, gc.get_freeze_count(), gc.get_threshold()[0] == YOUNG_THRESHOLD)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "0"
    assert int(out[1]) > 1000  # modules, classes, functions: everything imported so far
    assert out[2] == "True"
