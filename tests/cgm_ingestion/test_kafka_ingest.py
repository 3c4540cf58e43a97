"""cgm-ingestion end to end on the real broker: burst with duplicates, backfill and garbage."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from langerhans.cgm.v1 import cgm_ingestion_service_pb2 as pb
from langerhans.cgm.v1 import cgm_ingestion_service_pb2_grpc as pb_grpc
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2

from services.cgm_ingestion.assessment import Point, arrow, rate_of_change
from services.cgm_ingestion.main import CgmIngestionSettings, run
from services.runtime.kafka.envelope import encode_headers, envelope_from_record, new_envelope

pytestmark = pytest.mark.kafka

_TRENDS = {
    common_pb2.TREND_DOUBLE_UP: "double_up",
    common_pb2.TREND_SINGLE_UP: "single_up",
    common_pb2.TREND_FORTY_FIVE_UP: "forty_five_up",
    common_pb2.TREND_FLAT: "flat",
    common_pb2.TREND_FORTY_FIVE_DOWN: "forty_five_down",
    common_pb2.TREND_SINGLE_DOWN: "single_down",
    common_pb2.TREND_DOUBLE_DOWN: "double_down",
    common_pb2.TREND_NOT_COMPUTABLE: "not_computable",
}


@pytest.fixture
def service(
    make_topic: Callable[..., str], kafka_bootstrap: str, tmp_path: Path
) -> Iterator[CgmIngestionSettings]:
    settings = CgmIngestionSettings(
        raw_topic=make_topic(3, "cgmraw"),
        readings_topic=make_topic(3, "cgmval"),
        events_topic=make_topic(3, "cgmevt"),
        consumer_group=f"cgm-test-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp_path / 'cgm.sqlite3'}",
        kafka_bootstrap_servers=kafka_bootstrap,
        grpc_port=0,
        metrics_port=0,
        transaction_batch=50,
    )
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    deadline = time.monotonic() + 30
    for topic in (settings.raw_topic, settings.readings_topic, settings.events_topic):
        while not probe.partitions_for_topic(topic) and time.monotonic() < deadline:
            time.sleep(0.2)
    probe.close()
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    ports: list[int] = []

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def go() -> None:
            from services.runtime import grpc_server

            original = grpc_server.build_server

            def capture(*args, **kwargs):
                server = original(*args, **kwargs)
                ports.append(server.port)
                return server

            grpc_server.build_server = capture
            try:
                await run(settings, stop)
            finally:
                grpc_server.build_server = original

        loop.run_until_complete(go())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not ports and time.monotonic() < deadline:
        time.sleep(0.05)
    settings.grpc_port = ports[0]
    yield settings
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    assert not thread.is_alive()


def _raw(patient: str, t: datetime, value: float, unit: int = common_pb2.GLUCOSE_UNIT_MG_DL):
    message = cgm_pb2.RawCgmReading(
        patient_id=patient,
        sensor_id="sensor-1",
        device_id="hub-1",
        glucose=common_pb2.GlucoseQuantity(value=value, unit=unit),  # type: ignore[arg-type]
        sensor_age_min=3 * 24 * 60,
    )
    message.measured_at.FromDatetime(t)
    return message


def test_burst_with_duplicates_backfill_and_garbage(
    service: CgmIngestionSettings, kafka_bootstrap: str
) -> None:
    patient = f"p-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=2)
    # A rise of 1.6 mg/dL/min with small noise, every 5 min for 2 h.
    rng = random.Random(11)
    trace = [
        (start + timedelta(minutes=5 * i), round(100 + 8 * i + rng.uniform(-1, 1)))
        for i in range(24)
    ]
    live, backfill = trace[:12] + trace[18:], trace[12:18]
    # linger: a burst leaves as one batch, as a hub forwarding its backfill sends it
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=200)

    def send(payload: bytes | cgm_pb2.RawCgmReading, event_type: str | None = None) -> None:
        envelope = new_envelope(
            patient, payload, source="test/hub", time=now, event_type=event_type
        )
        producer.send(
            service.raw_topic,
            key=patient.encode(),
            value=envelope.data,
            headers=encode_headers(envelope),
        )

    for t, v in live:
        send(_raw(patient, t, v))
        if rng.random() < 0.3:
            send(_raw(patient, t, v))  # duplicate delivery
    producer.flush()
    time.sleep(1.0)  # live readings first, then the hub's backfill after its outage
    shuffled = backfill[:]
    rng.shuffle(shuffled)
    for t, v in shuffled:
        send(_raw(patient, t, v))
        send(_raw(patient, t, v))
    # Garbage: future, missing time, nonsense value, unknown unit, undecodable bytes.
    send(_raw(patient, now + timedelta(minutes=30), 120))
    no_time = _raw(patient, now, 120)
    no_time.ClearField("measured_at")
    send(no_time)
    send(_raw(patient, now - timedelta(minutes=1), -12))
    send(_raw(patient, now - timedelta(minutes=1), 7, unit=0))
    send(b"\xff\x00 not a protobuf", event_type="langerhans.cgm.v1.RawCgmReading")
    # mmol/L is normalised: 5.5 mmol/L = 99 mg/dL.
    mmol_time = now - timedelta(seconds=30)
    send(_raw(patient, mmol_time, 5.5, unit=common_pb2.GLUCOSE_UNIT_MMOL_L))
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    partitions = consumer.partitions_for_topic(service.readings_topic) or set()
    consumer.assign([TopicPartition(service.readings_topic, p) for p in partitions])
    received: list[cgm_pb2.CgmReading] = []
    deadline = time.monotonic() + 60
    expected_count = len(trace) + 1
    while len(received) < expected_count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                received.append(envelope_from_record(record).parse(cgm_pb2.CgmReading))
    time.sleep(2.0)  # anything extra (a duplicate) would arrive now
    for records in consumer.poll(timeout_ms=1000).values():
        for record in records:
            received.append(envelope_from_record(record).parse(cgm_pb2.CgmReading))
    consumer.close()

    times = [r.measured_at.ToDatetime(UTC) for r in received]
    assert len(received) == expected_count, f"got {len(received)} readings"
    assert len(set(times)) == len(times), "a reading was published twice"
    assert sorted(times) == [t for t, _ in trace] + [mmol_time]
    # Published in time order, except readings older than one already published: those are
    # flagged as backfill (whether the backfill overtakes depends on how the polls fall).
    newest = None
    for t, reading in zip(times, received, strict=True):
        if newest is not None and t < newest:
            assert reading.backfill, f"{t} published after {newest} without the backfill flag"
        else:
            assert not reading.backfill, f"{t} flagged as backfill but newest so far"
            newest = t
    backfilled = [t for t, r in zip(times, received, strict=True) if r.backfill]
    assert backfilled == sorted(backfilled)
    assert set(backfilled) <= {t for t, _ in backfill}
    by_time = {r.measured_at.ToDatetime(UTC): r for r in received}
    assert by_time[mmol_time].glucose_mg_dl == 99

    # Trend as stored (recomputed after the backfill) equals the regression on the full trace.
    points = [Point(t.timestamp(), float(v)) for t, v in trace]
    with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.CgmIngestionServiceStub(channel)
        stored: list[cgm_pb2.CgmReading] = []
        token = ""
        while True:
            page = stub.ListReadings(
                pb.ListReadingsRequest(patient_id=patient, page_size=10, page_token=token)
            )
            stored += page.readings
            token = page.next_page_token
            if not token:
                break
        latest = stub.GetLatestReading(pb.GetLatestReadingRequest(patient_id=patient))
    assert [r.measured_at.ToDatetime(UTC) for r in stored] == sorted(times)
    assert latest.reading.measured_at.ToDatetime(UTC) == mmol_time
    for i, reading in enumerate(stored[: len(trace)]):
        rate = rate_of_change(points, i)
        assert _TRENDS[reading.trend] == arrow(rate).value
        if rate is not None:
            assert reading.rate_mg_dl_per_min == pytest.approx(rate, abs=0.01)
    # The published trend of live readings after the backfill window is the true one too.
    assert by_time[trace[-1][0]].trend == common_pb2.TREND_FORTY_FIVE_UP

    # Garbage is in the rejected record with reasons, and nowhere else.
    from sqlalchemy import create_engine, select

    from services.cgm_ingestion.repository import rejected_readings

    engine = create_engine(str(service.database_url))
    with engine.connect() as connection:
        rows = connection.execute(select(rejected_readings.c.reason)).scalars().all()
    engine.dispose()
    assert sorted(rows) == sorted(
        [
            "future_timestamp",
            "missing_timestamp",
            "implausible_value",
            "unknown_unit",
            "undecodable",
        ]
    )
