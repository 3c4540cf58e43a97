"""Accelerated clocks in separate processes agree on simulated time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from services.runtime.clock import AcceleratedClock, SystemClock, clock_from_settings
from services.runtime.settings import REPO_ROOT, ServiceSettings

# Reads its clock from the environment like a service does, then reports simulated now each
# time the parent says "go".
CHILD = """
import sys, time
from services.runtime.settings import ServiceSettings
clock = ServiceSettings().clock()
print("ready", flush=True)
for line in sys.stdin:
    print(clock.now().isoformat(), time.time(), flush=True)
"""

SPEED = 120.0


def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )


def test_two_processes_agree_on_simulated_time() -> None:
    sim_start = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    real_start = time.time()
    env = {
        **os.environ,
        "LANGERHANS_CLOCK_SPEED": str(SPEED),
        "LANGERHANS_CLOCK_SIM_START": sim_start.isoformat(),
        "LANGERHANS_CLOCK_REAL_START_EPOCH_S": repr(real_start),
    }
    first = spawn(env)
    time.sleep(0.3)  # the second process starts later: it must still agree
    second = spawn(env)
    try:
        for proc in (first, second):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for _ in range(3):
            readings = []
            for proc in (first, second):
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc in (first, second):
                assert proc.stdout is not None
                sim_iso, real_s = proc.stdout.readline().split()
                readings.append((datetime.fromisoformat(sim_iso), float(real_s)))
            (sim_a, real_a), (sim_b, real_b) = readings
            # each process: simulated time is the shared origin plus scaled real elapsed time
            for sim, real in readings:
                expected = sim_start + timedelta(seconds=(real - real_start) * SPEED)
                assert abs((sim - expected).total_seconds()) < 0.01 * SPEED
            # across processes: the difference is only the real gap between the two reads
            gap_sim_s = abs((sim_a - sim_b).total_seconds())
            assert gap_sim_s <= SPEED * (abs(real_a - real_b) + 0.05)
            assert gap_sim_s < SPEED * 0.5
            time.sleep(0.2)
    finally:
        for proc in (first, second):
            proc.kill()
            proc.communicate()  # reaps it and closes its pipes


def test_accelerated_clock_runs_at_its_speed() -> None:
    clock = AcceleratedClock(
        sim_start=datetime(2026, 1, 1, tzinfo=UTC), real_start_epoch_s=time.time(), speed=600.0
    )
    before = clock.now()
    time.sleep(0.1)
    advanced_s = (clock.now() - before).total_seconds()
    assert 60 * 0.9 < advanced_s < 60 * 3


async def test_accelerated_sleep_takes_scaled_real_time() -> None:
    clock = AcceleratedClock(
        sim_start=datetime(2026, 1, 1, tzinfo=UTC), real_start_epoch_s=time.time(), speed=600.0
    )
    started = time.monotonic()
    await clock.sleep(60)  # one simulated minute
    elapsed_s = time.monotonic() - started
    assert 0.09 < elapsed_s < 1.0


def test_settings_choose_real_time_unless_accelerated() -> None:
    assert isinstance(ServiceSettings().clock(), SystemClock)
    accelerated = clock_from_settings(60.0, None, None)
    assert isinstance(accelerated, AcceleratedClock)
    with pytest.raises(ValueError, match="positive"):
        AcceleratedClock(datetime(2026, 1, 1, tzinfo=UTC), time.time(), 0.0)
