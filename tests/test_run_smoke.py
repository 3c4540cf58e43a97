"""`langerhans run` end to end: the loop closes and Ctrl-C leaves no process behind.

Runs the whole platform as a subprocess on the shared local broker, with ports moved
(LANGERHANS_PORT_BASE), consumer groups of its own and a var directory of its own, so it does
not disturb a `make run` on the same machine. Waits until the dosing engine decided for a
simulated person and a signed command was executed by the simulated pump, checks the gateway
answers with a demo account, then sends SIGINT and checks every child process is gone.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from langerhans.device.v1 import device_pb2

from services.runtime.local_kafka import broker_reachable
from services.runtime.settings import DEFAULT_KAFKA_BOOTSTRAP, REPO_ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PORT_BASE = 18_600
PASSWORD = "smoke-test-demo-password"
LOOP_DEADLINE_S = 150.0
STOP_DEADLINE_S = 30.0
EXECUTED = device_pb2.PumpCommandState.PUMP_COMMAND_STATE_EXECUTED


def _count(db: Path, query: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as conn:
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet, or busy
        return 0


def _http(path: str, token: str | None = None, body: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT_BASE}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json"}
        | ({"authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _children_of_run(var_dir: Path) -> list[int]:
    """PIDs of processes started for this run (their environment names its var directory)."""
    marker = f"LANGERHANS_VAR_DIR={var_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def test_run_closes_the_loop_and_stops_cleanly(tmp_path: Path) -> None:
    if not broker_reachable(DEFAULT_KAFKA_BOOTSTRAP, timeout_s=2.0):
        pytest.skip("the shared local Kafka broker is not running (make kafka-up)")
    var_dir = tmp_path / "var"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": DEFAULT_KAFKA_BOOTSTRAP,
        "LANGERHANS_VAR_DIR": str(var_dir),
        "LANGERHANS_PORT_BASE": str(PORT_BASE),
        "LANGERHANS_DEMO_PASSWORD": PASSWORD,
    }
    log = (tmp_path / "run.out").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "--people", "2", "--speed", "120"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dosing_db = var_dir / "db" / "dosing_engine.sqlite3"
    device_db = var_dir / "db" / "device_gateway.sqlite3"
    try:
        deadline = time.monotonic() + LOOP_DEADLINE_S
        decisions = executed = 0
        while time.monotonic() < deadline and not (decisions and executed):
            assert run.poll() is None, (tmp_path / "run.out").read_text()[-3000:]
            time.sleep(2.0)
            decisions = _count(
                dosing_db,
                "select count(*) from decisions where patient_id like 'sim-person-%'",
            )
            executed = _count(
                device_db,
                f"select count(*) from commands where state = {EXECUTED}",
            )
        assert decisions > 0, "no dosing decision for a simulated person"
        assert executed > 0, "no command executed by a simulated pump"

        assert _http("/healthz") == {"status": "ok"}
        tokens = _http(
            "/api/v1/auth/token",
            body={"email": "caregiver@demo.langerhans", "password": PASSWORD},
        )
        assert isinstance(tokens, dict)
        page = _http("/api/v1/people/sim-person-0000/glucose", token=tokens["access_token"])
        assert isinstance(page, dict)
        assert page["readings"], "the gateway shows no glucose for the demo person"
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
        log.close()
    assert run.returncode == 0, (tmp_path / "run.out").read_text()[-3000:]
    left = _children_of_run(var_dir)
    assert left == [], f"processes left behind: {left}"
