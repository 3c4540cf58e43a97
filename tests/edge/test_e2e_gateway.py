"""End to end with real processes: a simulated hub (edge agent, simulated pump and CGM, in this
process) ⇄ a device-gateway process over mutual TLS ⇄ the real Kafka broker.

One accelerated clock (240×) is shared by the gateway process and the agent, so two simulated
hours of outage take 30 real seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from langerhans.cgm.v1 import cgm_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2

from edge.agent import AgentConfig
from edge.fleet import build_simulated_hub
from edge.settings import EdgeSettings
from services.runtime.kafka.envelope import envelope_from_record
from services.runtime.local_kafka import bootstrap_servers, kafka_up
from tests.device_gateway.harness import (
    clock_env,
    free_port,
    make_command,
    new_signer,
    send,
    start_gateway,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
SPEED = 240.0
S = device_pb2.PumpCommandState


def _records(topic: str, key: str, servers: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every record of `key` now on `topic` (reads each partition up to its current end)."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} in {timeout_s} s"
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                out.extend(envelope_from_record(r).data for r in records if r.key == key.encode())
        return out
    finally:
        consumer.close()


def _records_until(
    topic: str, key: str, servers: str, done: Callable[[list[bytes]], bool], timeout_s: float = 30.0
) -> list[bytes]:
    """Re-read `topic` until `done` holds: the gateway publishes through its outbox, so a state it
    already reports over gRPC reaches the topic a moment later."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = _records(topic, key, servers)
        if done(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def test_readings_commands_and_a_two_hour_outage(tmp_path: Path) -> None:
    assert kafka_up() == 0
    servers = bootstrap_servers()
    signer, public = new_signer(tmp_path)
    clock = clock_env(SPEED)
    ports = [free_port() for _ in range(3)]
    gw = start_gateway(tmp_path / "gw", kafka=servers, public_key=public, clock=clock, ports=ports)
    settings = EdgeSettings(
        device_gateway_addr=gw.service_addr,
        hub_addr=gw.hub_addr,
        enroll_addr=gw.enroll_addr,
        gateway_ca_path=gw.ca_path,
        state_root=tmp_path / "edge",
        clock_speed=SPEED,
        clock_sim_start=datetime.fromisoformat(clock["LANGERHANS_CLOCK_SIM_START"]),
        clock_real_start_epoch_s=float(clock["LANGERHANS_CLOCK_REAL_START_EPOCH_S"]),
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    config = AgentConfig(poll_interval_s=60, heartbeat_interval_s=60, offline_after_s=300)
    hub = loop.run_until_complete(
        build_simulated_hub(settings, 1, config=config, name_prefix="e2e")
    )
    agent = hub.agent
    runner = threading.Thread(target=loop.run_until_complete, args=(agent.run(stop),), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not agent.link.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.link.connected, gw.log_path.read_text()[-2000:]
        patient, device = agent.identity.patient_id, agent.identity.device_id

        # --- a signed temp basal through SendCommand is executed by the simulated pump
        now = agent.clock.now()
        command, signed = make_command(
            signer, device_id=device, patient_id=patient, sequence=1, now=now,
            rate_u_per_h=0.85, lifetime_s=300, automatic=False,
        )  # fmt: skip
        sent = send(gw, signed)
        assert sent.state in (S.PUMP_COMMAND_STATE_QUEUED, S.PUMP_COMMAND_STATE_SENT)
        status = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = (
                gw.stub()
                .GetCommandStatus(
                    gw_pb2.GetCommandStatusRequest(command_id=command.command_id), timeout=5
                )
                .status
            )
            if status.state == S.PUMP_COMMAND_STATE_EXECUTED:
                break
            time.sleep(0.2)
        assert status is not None
        assert status.state == S.PUMP_COMMAND_STATE_EXECUTED
        states = [t.state for t in status.transitions]
        assert states[:2] == [S.PUMP_COMMAND_STATE_QUEUED, S.PUMP_COMMAND_STATE_SENT]
        assert S.PUMP_COMMAND_STATE_RECEIVED in states
        assert hub.person.pump.status(hub.person.t_min).temp_basal_u_per_h == pytest.approx(0.85)

        def executed(records: list[bytes]) -> bool:
            outcomes = [device_pb2.PumpCommandOutcome.FromString(d) for d in records]
            return any(
                o.command_id == command.command_id and o.state == S.PUMP_COMMAND_STATE_EXECUTED
                for o in outcomes
            )

        assert executed(_records_until("pump.command_outcomes.v1", patient, servers, executed))

        # --- the cloud goes away for two simulated hours
        outage_start = agent.clock.now()
        gw.stop()
        while agent.clock.now() - outage_start < timedelta(hours=2):
            time.sleep(0.5)
        assert agent.outbox.depth > 20  # readings kept on the hub
        gw = start_gateway(
            tmp_path / "gw", kafka=servers, public_key=public, clock=clock, ports=ports
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not agent.link.connected or agent.outbox.depth > 3):
            time.sleep(0.2)
        assert agent.outbox.depth <= 3

        # --- readings lost = 0, in order
        window = (outage_start - timedelta(minutes=30), agent.clock.now() - timedelta(minutes=10))
        expected = [
            r.timestamp for r in hub.person.readings if window[0] <= r.timestamp <= window[1]
        ]

        def measured_times(records: list[bytes]) -> list[datetime]:
            return [
                cgm_pb2.RawCgmReading.FromString(d).measured_at.ToDatetime()
                .replace(tzinfo=expected[0].tzinfo)
                for d in records
            ]  # fmt: skip

        def all_arrived(records: list[bytes]) -> bool:
            return set(expected) <= set(measured_times(records))

        records = _records_until("cgm.readings.raw.v1", patient, servers, all_arrived)
        raw = [cgm_pb2.RawCgmReading.FromString(d) for d in records]
        seen = measured_times(records)
        assert len(expected) >= 20
        missing = [t for t in expected if t not in set(seen)]
        assert missing == []
        firsts = list(dict.fromkeys(seen))  # first arrival of each reading
        assert firsts == sorted(firsts)
        assert any(r.backfill for r in raw)

        # --- a command from before the outage is stale now: never sent, never executed
        stale, stale_signed = make_command(
            signer, device_id=device, patient_id=patient, sequence=2, now=outage_start,
        )  # fmt: skip
        assert send(gw, stale_signed).state == S.PUMP_COMMAND_STATE_EXPIRED
        # and replayed directly to the hub (as by a compromised gateway) it is refused
        asyncio.run_coroutine_threadsafe(agent.on_command(stale_signed), loop).result(10)
        assert stale.command_id not in agent.executed_commands
        assert agent.executed_commands == [command.command_id]
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(30)
        agent.close()
        loop.close()
        gw.stop()
