"""Consumer crash storm: 10,000 CGM readings flow raw → cgm-ingestion → dosing-engine and
alerts, each service its own process (`langerhans serve …`) on the real broker, and each is
SIGKILLed 20 times at random points of the stream (so also between a storage commit and the
offset commit). Afterwards: readings lost = 0, duplicate dose commands = 0, duplicate
notifications = 0.

200 simulated people, one reading a minute for 50 minutes each, on a clock shared by all
processes and running 12× (so the readings are live for the dosing engine: a reading older
than 12 minutes would never be dosed on). A third of the people rise (the loop doses), a
fifth fall into urgent lows (alerts notify a webhook receiver).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2

from services.runtime.clock import AcceleratedClock
from services.runtime.command_signing import generate_signing_key, write_private_key
from services.runtime.kafka.envelope import encode_headers, envelope_from_record, new_envelope
from services.runtime.settings import REPO_ROOT
from tests.alerts.helpers import Receiver
from tests.device_gateway.harness import clock_env
from tests.dosing_engine.conftest import settings_changed
from tests.reliability.figures import record_figure

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PEOPLE = 200
READINGS_EACH = 50
READINGS = PEOPLE * READINGS_EACH  # 10,000
KILLS_EACH = 20
SPEED = 12.0
PARTITIONS = 6
DRAIN_S = 420


class Service:
    """One service process; SIGKILL and restart it on demand."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name, self.env, self.log = name, env, log
        self.kills = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", self.name],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_and_restart(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1
        self.process = self._start()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _read_all(servers: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        out: list[Any] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic}"
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                out.extend(envelope_from_record(r) for r in records)
        return out
    finally:
        consumer.close()


def _glucose(kind: int, minute: int) -> float:
    if kind == 0:  # rising after a meal: the loop raises insulin
        return 140.0 + 3.0 * minute
    if kind == 1:  # falling into an urgent low
        return max(42.0, 150.0 - 3.0 * minute)
    return 120.0 + 5.0 * ((minute % 10) - 5) / 5  # steady


def test_crash_storm(make_topic: Callable[..., str], kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = {
        name: make_topic(PARTITIONS, f"storm{name}")
        for name in ("raw", "readings", "events", "pumpev", "therapy", "outcomes", "decisions",
                     "commands", "alerts", "deliveries")
    }  # fmt: skip
    clock_vars = clock_env(SPEED)
    clock = AcceleratedClock(
        speed=SPEED,
        sim_start=datetime.fromisoformat(clock_vars["LANGERHANS_CLOCK_SIM_START"]),
        real_start_epoch_s=float(clock_vars["LANGERHANS_CLOCK_REAL_START_EPOCH_S"]),
    )
    signer = generate_signing_key()
    write_private_key(signer, tmp_path / "signing.pem")
    receiver = Receiver()
    run = uuid.uuid4().hex[:8]
    base = {
        **os.environ,
        **clock_vars,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LANGERHANS_GRPC_PORT": "0",
        "LANGERHANS_METRICS_PORT": "0",
        "LANGERHANS_LOG_JSON": "false",
    }
    envs = {
        "cgm-ingestion": {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'cgm.sqlite3'}",
            "LANGERHANS_RAW_TOPIC": topics["raw"],
            "LANGERHANS_READINGS_TOPIC": topics["readings"],
            "LANGERHANS_EVENTS_TOPIC": topics["events"],
            "LANGERHANS_CONSUMER_GROUP": f"storm-cgm-{run}",
        },
        "dosing-engine": {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'dosing.sqlite3'}",
            "LANGERHANS_READINGS_TOPIC": topics["readings"],
            "LANGERHANS_PUMP_EVENTS_TOPIC": topics["pumpev"],
            "LANGERHANS_SETTINGS_TOPIC": topics["therapy"],
            "LANGERHANS_OUTCOMES_TOPIC": topics["outcomes"],
            "LANGERHANS_DECISIONS_TOPIC": topics["decisions"],
            "LANGERHANS_COMMANDS_TOPIC": topics["commands"],
            "LANGERHANS_COMMAND_SIGNING_KEY_PATH": str(tmp_path / "signing.pem"),
            "LANGERHANS_CONSUMER_GROUP": f"storm-dosing-{run}",
        },
        "alerts": {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.sqlite3'}",
            "LANGERHANS_INPUT_TOPICS": json.dumps([topics["readings"]]),
            "LANGERHANS_ALERTS_TOPIC": topics["alerts"],
            "LANGERHANS_DELIVERIES_TOPIC": topics["deliveries"],
            "LANGERHANS_CONSUMER_GROUP": f"storm-alerts-{run}",
            "LANGERHANS_DEFAULT_WEBHOOK_URL": receiver.url,
            "LANGERHANS_DELIVERY_INTERVAL_S": "0.1",
        },
    }
    services = {
        name: Service(name, {**base, **env}, tmp_path / f"{name}.log") for name, env in envs.items()
    }
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)

    def send(topic: str, key: str, message: Any, event_id: str | None = None) -> None:
        envelope = new_envelope(key, message, source="reliability/storm", time=clock.now(),
                                event_id=event_id)  # fmt: skip
        producer.send(topic, key=key.encode(), value=envelope.data,
                      headers=encode_headers(envelope))  # fmt: skip

    people = [f"storm-{run}-{n:03d}" for n in range(PEOPLE)]
    kinds = {p: (0 if n % 3 == 0 else 1 if n % 5 == 1 else 2) for n, p in enumerate(people)}
    for person in people:
        send(topics["therapy"], person,
             settings_changed(person, common_pb2.LOOP_MODE_CLOSED_LOOP_SMB))  # fmt: skip
    producer.flush()
    time.sleep(5)  # let the dosing engine store settings before the first reading

    rng = random.Random(11)
    stream_real_s = READINGS_EACH * 60 / SPEED
    schedule = sorted(
        (rng.uniform(2.0, stream_real_s - 2.0), name)
        for name in services
        for _ in range(KILLS_EACH)
    )
    produced: set[str] = set()
    started = time.monotonic()
    start_sim = clock.now().replace(microsecond=0)
    try:
        for minute in range(READINGS_EACH):
            due = start_sim + timedelta(minutes=minute)
            while clock.now() < due:
                elapsed = time.monotonic() - started
                while schedule and schedule[0][0] <= elapsed:
                    services[schedule.pop(0)[1]].kill_and_restart()
                time.sleep(0.02)
            for n, person in enumerate(people):
                raw = cgm_pb2.RawCgmReading(
                    patient_id=person, device_id="hub-1", sensor_id=f"sensor-{n}",
                    source_record_id=f"{person}-{minute}",
                )  # fmt: skip
                raw.measured_at.FromDatetime(due)
                raw.received_at.FromDatetime(due)
                raw.glucose.value = _glucose(kinds[person], minute)
                raw.glucose.unit = common_pb2.GLUCOSE_UNIT_MG_DL
                send(topics["raw"], person, raw)
                produced.add(f"{person}-{minute}")
            producer.flush()
        while schedule:  # any kill left over
            services[schedule.pop(0)[1]].kill_and_restart()
        stream_s = time.monotonic() - started

        # Drain: every reading validated, decided; alerts delivered.
        deadline = time.monotonic() + DRAIN_S
        readings: list[Any] = []
        decisions: list[Any] = []
        while time.monotonic() < deadline:
            readings = _read_all(kafka_bootstrap, topics["readings"])
            decisions = _read_all(kafka_bootstrap, topics["decisions"])
            decided = {d.parse(dosing_pb2.DosingDecision).reading_id for d in decisions}
            valid = {r.parse(cgm_pb2.CgmReading).reading_id for r in readings}
            if len(valid) >= READINGS and decided >= valid:
                break
            time.sleep(5)
        time.sleep(5)  # late duplicates would show now
        for service in services.values():
            service.stop()
        commands = _read_all(kafka_bootstrap, topics["commands"])
        readings = _read_all(kafka_bootstrap, topics["readings"])
        decisions = _read_all(kafka_bootstrap, topics["decisions"])
    finally:
        producer.close()
        for service in services.values():
            service.stop()
        receiver.close()

    # --- readings: every raw reading became exactly one validated reading
    validated = [r.parse(cgm_pb2.CgmReading) for r in readings]
    identities = {(v.patient_id, v.measured_at.seconds) for v in validated}
    lost = READINGS - len(identities)
    # --- decisions and commands: one per reading / per decision
    by_reading: dict[str, set[str]] = defaultdict(set)
    for d in (e.parse(dosing_pb2.DosingDecision) for e in decisions):
        by_reading[d.reading_id].add(d.decision_id)
    duplicate_decisions = sum(len(ids) - 1 for ids in by_reading.values())
    # One decision may legitimately give a temp basal and a micro-bolus; a duplicate is a
    # second command id for the same decision and action (the hub would execute both). The
    # same command re-published under its own id after a kill is harmless (the hub dedupes).
    by_decision: dict[tuple[str, str], set[str]] = defaultdict(set)
    for envelope in commands:
        signed = device_pb2.SignedPumpCommand.FromString(envelope.data)
        command = device_pb2.PumpCommand.FromString(signed.command)
        action = command.WhichOneof("action") or ""
        by_decision[(command.decision_id, action)].add(command.command_id)
    duplicate_commands = sum(len(ids) - 1 for ids in by_decision.values())
    republished = len(commands) - sum(len(ids) for ids in by_decision.values())
    # --- notifications: each (alert, notification number) delivered under one key
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    by_notification: dict[tuple[str, int], set[str]] = defaultdict(set)
    for body in bodies:
        by_notification[(body["alert_id"], body["notification"])].add(body["delivery_id"])
    duplicate_notifications = sum(len(ids) - 1 for ids in by_notification.values())
    lows = {b["patient_id"] for b in bodies if b["type"] == "urgent_low"}
    expected_lows = sum(1 for k in kinds.values() if k == 1)
    kills = {name: s.kills for name, s in services.items()}
    print(
        f"readings={READINGS} validated={len(identities)} lost={lost} "
        f"decisions={len(by_reading)} dup_decisions={duplicate_decisions} "
        f"commands={sum(len(i) for i in by_decision.values())} dup_commands={duplicate_commands} "
        f"republished_same_id={republished} "
        f"notifications={len(by_notification)} dup_notifications={duplicate_notifications} "
        f"urgent_low_people={len(lows)}/{expected_lows} kills={kills} stream_s={stream_s:.0f}"
    )
    record_figure("storm_kills", sum(kills.values()))
    record_figure("storm_readings_lost", lost)
    record_figure("storm_duplicate_dose_commands", duplicate_commands)
    record_figure("storm_duplicate_notifications", duplicate_notifications)
    record_figure("storm_dose_commands", sum(len(i) for i in by_decision.values()))
    record_figure("storm_commands_republished_same_id", republished)
    assert kills == dict.fromkeys(services, KILLS_EACH)
    assert lost == 0
    assert duplicate_decisions == 0
    assert duplicate_commands == 0
    assert duplicate_notifications == 0
    assert by_decision, "the loop issued no command at all: nothing was tested"
    assert len(lows) == expected_lows  # every urgent low was notified
