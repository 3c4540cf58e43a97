"""`langerhans run` keeps simulated time moving forward across runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.runtime.supervisor import _last_simulated_instant, platform_specs


def test_every_process_gets_the_same_clock_origin_and_speed() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    specs = platform_specs(2, 60.0, "127.0.0.1:1", sim_start=start, real_start_epoch_s=123.0)
    clocks = {
        (
            spec.env["LANGERHANS_CLOCK_SIM_START"],
            spec.env["LANGERHANS_CLOCK_REAL_START_EPOCH_S"],
            spec.env["LANGERHANS_CLOCK_SPEED"],
        )
        for spec in specs
    }
    assert clocks == {(start.isoformat(), "123.0", "60.0")}


def test_a_run_that_ended_ahead_moves_the_next_start_forward(tmp_path: Path) -> None:
    clock_file = tmp_path / "run-clock.json"
    ahead = datetime.now(UTC) + timedelta(hours=7)
    clock_file.write_text(json.dumps({"last_simulated_instant": ahead.isoformat()}))
    assert _last_simulated_instant(clock_file) == ahead
    assert max(datetime.now(UTC), _last_simulated_instant(clock_file)) == ahead


def test_missing_or_corrupt_clock_file_means_no_constraint(tmp_path: Path) -> None:
    assert _last_simulated_instant(tmp_path / "absent.json") < datetime(2000, 1, 1, tzinfo=UTC)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert _last_simulated_instant(corrupt) < datetime(2000, 1, 1, tzinfo=UTC)
