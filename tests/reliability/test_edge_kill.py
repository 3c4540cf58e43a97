"""The hub killed (SIGKILL) 20 times mid-bolus — after the pump took the bolus, before its
answer reached the hub — then restarted: automatic dosing stays paused until pump history has
reconciled the dose (dosing resumed before reconciliation = 0), no command is ever delivered
twice, and after reconciliation dosing resumes.

The hub's real command path runs in `tests/reliability/edge_child.py`; the pump's memory is a
file, as a pump is a separate device that outlives the hub's crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from langerhans.device.v1 import device_pb2

from services.runtime.clock import AcceleratedClock
from services.runtime.command_signing import (
    CommandSigner,
    generate_signing_key,
    write_public_key,
)
from services.runtime.settings import REPO_ROOT
from tests.device_gateway.harness import clock_env
from tests.reliability.edge_child import DEVICE, PATIENT
from tests.reliability.figures import record_figure

pytestmark = [pytest.mark.slow]
KILLS = 20
PROBES = 3  # automatic doses tried after each restart, before reconciliation
SPEED = 60.0


class Hub:
    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state, self.env = state, env
        self.process = self._start()
        self.pending_at_start = self._ready()

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.edge_child", str(self.state)],
            cwd=REPO_ROOT, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip

    def _ready(self) -> int:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        assert line[:1] == ["READY"], line
        return int(line[1])

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def answer(self) -> list[str]:
        assert self.process.stdout is not None
        return self.process.stdout.readline().split()

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def restart(self) -> None:
        self.kill()
        self.process = self._start()
        self.pending_at_start = self._ready()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Hub, CommandSigner, AcceleratedClock, Path]]:
    signer = generate_signing_key()
    write_public_key(signer.public_key, tmp_path / "signing.pub")
    env_clock = clock_env(SPEED)
    clock = AcceleratedClock(
        speed=SPEED,
        sim_start=datetime.fromisoformat(env_clock["LANGERHANS_CLOCK_SIM_START"]),
        real_start_epoch_s=float(env_clock["LANGERHANS_CLOCK_REAL_START_EPOCH_S"]),
    )
    hub = Hub(tmp_path, {**os.environ, **env_clock})
    yield hub, signer, clock, tmp_path / "pump-history.jsonl"
    hub.stop()


def _micro_bolus(signer: CommandSigner, clock: AcceleratedClock, sequence: int) -> tuple[str, str]:
    command = device_pb2.PumpCommand(
        command_id=str(uuid.uuid4()), patient_id=PATIENT, device_id=DEVICE, sequence=sequence,
        origin=device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC, issued_by="dosing-engine",
    )  # fmt: skip
    now = clock.now()
    command.issued_at.FromDatetime(now)
    command.expires_at.FromDatetime(now + timedelta(seconds=60))
    command.deliver_bolus.insulin_u = round(0.2 + 0.05 * (sequence % 20), 2)
    command.deliver_bolus.immediate_pct = 100
    command.deliver_bolus.automatic = True
    return command.command_id, signer.sign(command).SerializeToString().hex()


def _history_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_hub_killed_mid_bolus_twenty_times(
    world: tuple[Hub, CommandSigner, AcceleratedClock, Path],
) -> None:
    hub, signer, clock, history = world
    sequence = 0
    resumed_early = 0
    paused_restarts = 0
    resumed_after = 0
    sent_to_pump: list[str] = []
    for _ in range(KILLS):
        # A bolus, and the plug pulled the moment the pump has recorded it.
        sequence += 1
        command_id, envelope = _micro_bolus(signer, clock, sequence)
        before = _history_lines(history)
        hub.send(f"CMD {envelope}")
        deadline = time.monotonic() + 5
        while _history_lines(history) == before:
            assert time.monotonic() < deadline, "the pump never took the bolus"
            time.sleep(0.001)
        sent_to_pump.append(command_id)
        hub.restart()
        paused_restarts += hub.pending_at_start > 0
        # Before reconciliation: automatic doses must be refused.
        for _ in range(PROBES):
            sequence += 1
            probe_id, envelope = _micro_bolus(signer, clock, sequence)
            hub.send(f"CMD {envelope}")
            answer = hub.answer()
            if hub.pending_at_start and answer[2] == "executed":
                resumed_early += 1
            if answer[2] == "executed":
                sent_to_pump.append(probe_id)
        hub.send("RECONCILE")
        reconciled = hub.answer()
        assert reconciled[0] == "RECONCILED"
        assert reconciled[2] == "0", reconciled  # nothing left uncertain
        # After reconciliation the loop doses again.
        sequence += 1
        after_id, envelope = _micro_bolus(signer, clock, sequence)
        hub.send(f"CMD {envelope}")
        if hub.answer()[2] == "executed":
            resumed_after += 1
            sent_to_pump.append(after_id)
    # Every command reached the pump at most once: one history record per command sent.
    records = _history_lines(history)
    print(
        f"kills={KILLS} paused_restarts={paused_restarts} resumed_early={resumed_early} "
        f"resumed_after={resumed_after} pump_records={records} sent={len(sent_to_pump)}"
    )
    record_figure("edge_kills_mid_bolus", KILLS)
    record_figure("edge_dosing_resumed_before_reconciliation", resumed_early)
    record_figure("edge_double_deliveries", records - len(sent_to_pump))
    assert paused_restarts == KILLS  # every kill left an uncertain dose behind
    assert resumed_early == 0
    assert resumed_after == KILLS
    assert records == len(sent_to_pump)
