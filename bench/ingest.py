"""CGM ingestion end to end: raw reading on Kafka → validated reading on Kafka (and alerts).

Starts the local broker's topics for this run, the cgm-ingestion service and the alerts service
as their own processes (fresh SQLite files), then

1. throughput: publishes a burst of raw readings (many people, 5-minute series) as fast as
   the producer goes and measures how fast validated readings come out;
2. latency: publishes at a steady 1,000 readings/s and measures, per reading, the time from
   publishing the raw reading to receiving the validated one (p50/p99), and for each person
   with urgent lows, the time from the first low reading young enough to count (readings
   older than 12 min only mean "no data" to the alert rules) to the urgent-low alert being
   raised on alerts.v1.

Ends with `RESULT ingest readings_per_s=<n> p99_ms=<x>`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from langerhans.alerts.v1 import alerts_pb2
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2

from services.runtime.kafka.envelope import encode_headers, envelope_from_record, new_envelope
from services.runtime.local_kafka import KafkaPaths, bootstrap_servers
from services.runtime.settings import REPO_ROOT
from services.runtime.topics import TopicSpec, ensure_topics

PARTITIONS = 6
TICK_S = 0.005
# Younger than the alert rules' 12-minute limit for a reading to count, with a margin.
FRESH = timedelta(minutes=11)


def _topic(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:8]}.v1"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f}"


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_report(processes: dict[str, int], before: dict[str, float], readings: int) -> str:
    parts = [
        f"{name} {(_cpu_s(pid) - before[name]) * 1000 / max(readings, 1):.3f}"
        for name, pid in processes.items()
    ]
    return "CPU ms per reading: " + ", ".join(parts)


def _local_broker_pid() -> int | None:
    """The local broker's process (its CPU is part of the budget), if this machine runs it."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(KafkaPaths.default().pid_file.read_text().strip())
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Collector:
    """Consumes a topic from the start; remembers when each key:measured_at arrived."""

    def __init__(self, servers: str, topic: str, kind: str) -> None:
        self.arrivals: dict[str, float] = {}
        # Wall-clock stamps per key: (stored by the service: ce_time, published by its relay:
        # record timestamp, received here), to split the latency into its stages.
        self.stages: dict[str, tuple[float, float, float]] = {}
        self.count = 0
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=servers, auto_offset_reset="earliest")
        parts = None
        while not parts:
            parts = self._consumer.partitions_for_topic(topic)
            time.sleep(0.1)
        self._consumer.assign([TopicPartition(topic, p) for p in parts])
        self._kind = kind
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                wall = time.time()
                for record in records:
                    envelope = envelope_from_record(record)
                    if self._kind == "reading":
                        reading = envelope.parse(cgm_pb2.CgmReading)
                        key = f"{reading.patient_id}:{reading.measured_at.seconds}"
                    else:
                        if envelope.event_type != alerts_pb2.AlertStateChanged.DESCRIPTOR.full_name:
                            continue
                        changed = envelope.parse(alerts_pb2.AlertStateChanged)
                        if changed.previous_state != alerts_pb2.ALERT_STATE_UNSPECIFIED:
                            continue  # only raises
                        key = f"{changed.alert.patient_id}:{changed.alert.type}"
                    if key not in self.arrivals:
                        self.arrivals[key] = now
                        stored = envelope.time.timestamp()
                        self.stages[key] = (stored, record.timestamp / 1000, wall)
                    self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def _raw(patient: str, at: datetime, value: float) -> cgm_pb2.RawCgmReading:
    message = cgm_pb2.RawCgmReading(
        patient_id=patient,
        sensor_id=f"{patient}-sensor",
        device_id=f"{patient}-hub",
        glucose=common_pb2.GlucoseQuantity(value=value, unit=common_pb2.GLUCOSE_UNIT_MG_DL),
        sensor_age_min=3 * 1440,
    )
    message.measured_at.FromDatetime(at)
    return message


Encoded = tuple[bytes, bytes, list[tuple[str, bytes]]]


def _encode(message: cgm_pb2.RawCgmReading) -> Encoded:
    """Key, value and CloudEvents headers of a raw reading (built before the clock runs, so
    the load generator spends its CPU on sending, not on building messages)."""
    envelope = new_envelope(message.patient_id, message, source="bench/hub", time=datetime.now(UTC))
    return message.patient_id.encode(), envelope.data, encode_headers(envelope)


def _send_encoded(producer: KafkaProducer, topic: str, encoded: Encoded) -> None:
    key, value, headers = encoded
    producer.send(topic, key=key, value=value, headers=headers)


def _send(producer: KafkaProducer, topic: str, message: cgm_pb2.RawCgmReading) -> None:
    _send_encoded(producer, topic, _encode(message))


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", f"import sys; from {module} import serve; sys.exit(serve())"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _processed(database: Path) -> int:
    import sqlite3

    with contextlib.suppress(sqlite3.Error):
        connection = sqlite3.connect(database)
        try:
            return int(connection.execute("SELECT count(*) FROM processed_events").fetchone()[0])
        finally:
            connection.close()
    return 0


def _wait_processed(database: Path, count: int, timeout_s: float) -> None:
    """Wait until the service behind `database` has handled `count` events (or give up)."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):
            connection = sqlite3.connect(database)
            try:
                done = connection.execute("SELECT count(*) FROM processed_events").fetchone()[0]
            finally:
                connection.close()
            if done >= count:
                return
        time.sleep(0.5)


def _steady(
    producer: KafkaProducer,
    raw_t: str,
    readings: Collector,
    alerts: Collector,
    *,
    rate: int,
    seconds: int,
    now: datetime,
    tag: str,
    pids: dict[str, int] | None = None,
) -> float:
    """Publish at `rate` readings/s for `seconds`; returns the p99 latency to validated (ms)."""
    print(f"==> steady: {rate} readings/s for {seconds} s", flush=True)
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    lows: dict[str, float] = {}
    lows_wall: dict[str, float] = {}
    interval = 1.0 / rate
    # Every reading in the past (more than 5 min ahead would rightly be refused); the last
    # two steps are recent enough for the alert rules (older readings count only as "no data").
    base_time = max(now, datetime.now(UTC)) - timedelta(minutes=5 * seconds)
    plan: list[tuple[str, str, float, datetime, Encoded]] = []
    for n in range(rate * seconds):
        person = n % rate  # one reading per person per second, 5 min apart in device time
        patient = f"steady-{tag}-{person}"
        at = base_time + timedelta(minutes=5 * (n // rate))
        value = 45.0 if person % 20 == 0 else 110.0 + person % 30
        message = _raw(patient, at, value)
        key = f"{patient}:{message.measured_at.seconds}"
        plan.append((patient, key, value, at, _encode(message)))
    cpu_before = {name: _cpu_s(pid) for name, pid in (pids or {}).items()}
    # Sent in ticks of 5 ms (5 readings at 1,000/s) rather than one sleep per reading: the
    # producer then builds one request per tick instead of one per reading or two, which
    # was most of the load generator's CPU (and the broker's). Each reading's latency is
    # measured from its own send.
    per_tick = max(1, round(rate * TICK_S))
    next_t = time.perf_counter()
    for start in range(0, len(plan), per_tick):
        next_t += interval * per_tick
        for patient, key, value, at, encoded in plan[start : start + per_tick]:
            _send_encoded(producer, raw_t, encoded)
            stamp = time.perf_counter()
            sent[key] = stamp
            sent_wall[key] = time.time()
            # An urgent low is timed from the first low reading recent enough to raise one.
            alert_key = f"{patient}:{alerts_pb2.ALERT_TYPE_URGENT_LOW}"
            if value < 55 and alert_key not in lows and datetime.now(UTC) - at <= FRESH:
                lows[alert_key] = stamp
                lows_wall[alert_key] = sent_wall[key]
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    producer.flush()
    wait_until = time.perf_counter() + 60
    while time.perf_counter() < wait_until and not (
        all(k in readings.arrivals for k in sent) and all(p in alerts.arrivals for p in lows)
    ):
        time.sleep(0.1)
    latencies = [
        (readings.arrivals[k] - t) * 1000 for k, t in sent.items() if k in readings.arrivals
    ]
    alert_latencies = [
        (alerts.arrivals[p] - t) * 1000 for p, t in lows.items() if p in alerts.arrivals
    ]
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    print(
        f"    validated {len(latencies)}/{len(sent)}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies, default=float('nan')):.1f} ms ({_load()})"
    )
    print(
        f"    urgent lows alerted {len(alert_latencies)}/{len(lows)} (from the first low "
        "reading young enough to raise one): "
        f"p50 {_percentile(alert_latencies, 50):.1f} ms, "
        f"p99 {_percentile(alert_latencies, 99):.1f} ms"
    )
    _print_stages("validated", readings, sent_wall)
    _print_stages("alerts", alerts, lows_wall)
    if pids:
        print(f"    {_cpu_report(pids, cpu_before, len(sent))} (steady phase)")
    return p99


def _print_stages(name: str, collector: Collector, sent_wall: dict[str, float]) -> None:
    """p50/p99 of each stage: raw sent → stored (ce_time) → published (record time) → here."""
    stored, relayed, received = [], [], []
    for key, t_sent in sent_wall.items():
        stages = collector.stages.get(key)
        if stages is None:
            continue
        t_stored, t_published, t_received = stages
        stored.append((t_stored - t_sent) * 1000)
        relayed.append((t_published - t_stored) * 1000)
        received.append((t_received - t_published) * 1000)
    parts = [
        f"{label} p50 {_percentile(v, 50):.0f} / p99 {_percentile(v, 99):.0f}"
        for label, v in (
            ("sent→stored", stored),
            ("stored→published", relayed),
            ("published→received", received),
        )
    ]
    print(f"    {name} stages (ms): " + ", ".join(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=30_000, help="readings in the burst")
    parser.add_argument("--rate", type=int, default=1000, help="steady readings per second")
    parser.add_argument("--seconds", type=int, default=15, help="duration of the steady phase")
    parser.add_argument(
        "--cgm-processes",
        type=int,
        default=1,
        # On one SQLite file a second process only queues for the same write lock, and
        # across processes SQLite busy-polls it (no fair queue): slower, not faster.
        help="cgm-ingestion consumer processes (more pay off with PostgreSQL, not SQLite)",
    )
    args = parser.parse_args(argv)

    servers = bootstrap_servers()
    raw_t, readings_t, events_t = _topic("raw"), _topic("readings"), _topic("cgmevents")
    alerts_t, deliveries_t = _topic("alerts"), _topic("deliveries")
    ensure_topics(
        [
            TopicSpec(name, PARTITIONS, "bench", replication=1)
            for name in (raw_t, readings_t, events_t, alerts_t, deliveries_t)
        ],
        servers,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    base = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": servers,
        "LANGERHANS_GRPC_PORT": "0",
        "LANGERHANS_METRICS_PORT": "0",
        "LANGERHANS_LOG_LEVEL": "WARNING",
    }
    cgm_env = {
        **base,
        "DATABASE_URL": f"sqlite:///{work / 'cgm.sqlite3'}",
        "LANGERHANS_RAW_TOPIC": raw_t,
        "LANGERHANS_READINGS_TOPIC": readings_t,
        "LANGERHANS_EVENTS_TOPIC": events_t,
        "LANGERHANS_CONSUMER_GROUP": f"bench-cgm-{uuid.uuid4().hex[:6]}",
    }
    alerts_env = {
        **base,
        "DATABASE_URL": f"sqlite:///{work / 'alerts.sqlite3'}",
        "LANGERHANS_INPUT_TOPICS": f'["{readings_t}"]',
        "LANGERHANS_ALERTS_TOPIC": alerts_t,
        "LANGERHANS_DELIVERIES_TOPIC": deliveries_t,
        "LANGERHANS_CONSUMER_GROUP": f"bench-alerts-{uuid.uuid4().hex[:6]}",
    }
    print(
        f"==> starting {args.cgm_processes} cgm-ingestion processes and alerts "
        f"(state in {work}; {_load()})",
        flush=True,
    )
    processes = [
        _start("services.alerts.main", alerts_env, work / "alerts.log"),
        _start("services.cgm_ingestion.main", cgm_env, work / "cgm.log"),
    ]
    # More cgm-ingestion members of the same group share the partitions (keyed by person) and
    # the database; only the first runs the outbox relay.
    for n in range(1, args.cgm_processes):
        extra_env = {**cgm_env, "LANGERHANS_OUTBOX_RELAY": "false"}
        processes.append(_start("services.cgm_ingestion.main", extra_env, work / f"cgm{n}.log"))
    readings = Collector(servers, readings_t, "reading")
    alerts = Collector(servers, alerts_t, "alert")
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=2, acks=1, batch_size=256 * 1024)
    try:
        # Warm-up: both services joined their groups and handled something.
        warm = f"warm-{uuid.uuid4().hex[:6]}"
        now = datetime.now(UTC).replace(microsecond=0)
        _send(producer, raw_t, _raw(warm, now - timedelta(minutes=1), 120))
        producer.flush()
        deadline = time.monotonic() + 120
        while not readings.count and time.monotonic() < deadline:
            time.sleep(0.2)
        if not readings.count:
            print("services did not come up; see the logs in", work)
            return 1
        # Every cgm-ingestion member joined (their rebalance is over) once readings of people
        # on every partition come through after a pause.
        time.sleep(3)
        seen = readings.count
        for n in range(60):
            _send(producer, raw_t, _raw(f"{warm}-{n}", now - timedelta(minutes=1), 120))
        producer.flush()
        while readings.count < seen + 60 and time.monotonic() < deadline:
            time.sleep(0.2)
        # The alerts member must have partitions too (a member that joined before the topic's
        # metadata reached it can sit idle): it has handled the warm-up readings.
        _wait_processed(work / "alerts.sqlite3", 61, 60)
        if _processed(work / "alerts.sqlite3") < 61:
            print("alerts did not handle the warm-up readings; see the logs in", work)
            return 1

        # 1. throughput: a burst of 5-minute series, people interleaved.
        people = 500
        per_person = max(1, args.burst // people)
        total = people * per_person
        start_at = now - timedelta(minutes=5 * per_person + 10)
        print(f"==> burst: {total} readings from {people} people", flush=True)
        burst = [
            _encode(
                _raw(
                    f"burst-{p}", start_at + timedelta(minutes=5 * step), 100 + (step * 7 + p) % 150
                )
            )
            for step in range(per_person)
            for p in range(people)
        ]
        before = readings.count
        pids = {"alerts": processes[0].pid, "bench": os.getpid()}
        pids |= {f"cgm-ingestion#{n}": p.pid for n, p in enumerate(processes[1:])}
        broker = _local_broker_pid()
        if broker is not None:
            pids["broker (shared with anything else using it)"] = broker
        cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}
        t0 = time.perf_counter()
        for encoded in burst:
            _send_encoded(producer, raw_t, encoded)
        producer.flush()
        sent_s = time.perf_counter() - t0
        last_report = t0
        while readings.count - before < total and time.perf_counter() - t0 < 300:
            time.sleep(0.05)
            if time.perf_counter() - last_report >= 5:
                last_report = time.perf_counter()
                print(f"    {readings.count - before}/{total} validated", flush=True)
        elapsed = time.perf_counter() - t0
        done = readings.count - before
        throughput = done / elapsed
        print(
            f"    {done}/{total} validated in {elapsed:.1f} s (published in {sent_s:.1f} s): "
            f"{throughput:.0f} readings/s ({_load()})"
        )

        # Let the alerts service catch up with the burst before measuring latency.
        _wait_processed(work / "alerts.sqlite3", total + 1, 300)
        print(f"    {_cpu_report(pids, cpu_before, total)} (alerts caught up)", flush=True)
        p99 = _steady(
            producer,
            raw_t,
            readings,
            alerts,
            rate=args.rate,
            seconds=args.seconds,
            now=now,
            tag="a",
            pids=pids,
        )
        if p99 > 1000 and throughput < args.rate:
            rate = max(50, int(throughput * 0.5))
            print(f"==> {args.rate}/s is above this machine's capacity now; again at {rate}/s")
            _wait_processed(work / "alerts.sqlite3", total + 1 + args.rate * args.seconds, 300)
            _steady(
                producer, raw_t, readings, alerts, rate=rate, seconds=args.seconds, now=now, tag="b"
            )
    finally:
        producer.close()
        readings.close()
        alerts.close()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    print(f"RESULT ingest readings_per_s={throughput:.0f} p99_ms={p99:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
