"""Kafka backbone benchmark: sustained throughput, then latency at a steady 2,000 msgs/s.

Everything goes through the backbone as services use it: `EventProducer` (idempotent,
acks=all, CloudEvents headers, batching on) into a 12-partition topic, consumed by
`ConsumerRunner` processes (manual offset commits after the storage commit, dedupe rows in a
SQLite file per consumer, `transaction_batch` records per storage transaction).

    python -m bench.bus [--messages 200000] [--consumers 2] [--rate 2000] [--seconds 15]

Also prints the CPU time per message of the producer, the consumers and the local broker, and
of kafka-python alone (the floor under the backbone), each figure with the load average: on a
shared machine wall-clock rates measure the neighbours too.

Ends with `RESULT bus msgs_per_s=<n> p50_ms=<x> p99_ms=<y>`; writes a latency plot to
var/bench/bus_latency.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 12
PAYLOAD_BYTES = 100
PATIENTS = 1000


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _broker_cpu_s() -> float | None:
    """CPU seconds of the local broker process, None when it is not ours (remote cluster)."""
    from services.runtime.local_kafka import KafkaPaths, uses_local_broker

    if not uses_local_broker():
        return None
    try:
        pid = int(KafkaPaths.default().pid_file.read_text().strip())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


# ---------------------------------------------------------------------- consumer process
def _consumer(args: argparse.Namespace) -> None:
    import numpy as np
    from sqlalchemy.orm import Session, sessionmaker

    from services.runtime.db import create_service_engine
    from services.runtime.kafka import ConsumerRunner, Envelope, RunnerConfig, dedupe

    db_path = Path(args.db)
    db_path.unlink(missing_ok=True)
    # The services' own storage: SQLite in WAL mode with an fsync on every commit.
    engine = create_service_engine("bench-bus", f"sqlite:///{db_path}")
    dedupe.create_tables(engine)

    count = 0
    first_ns = 0
    last_ns = 0
    latencies_ns: list[int] = []

    def handler(envelope: Envelope, _session: Session) -> None:
        nonlocal count, first_ns, last_ns
        now_ns = time.time_ns()
        if not first_ns:
            first_ns = now_ns
        last_ns = now_ns
        count += 1
        if envelope.extensions.get("phase") == "measure":
            latencies_ns.append(now_ns - int(envelope.extensions["sentns"]))

    runner = ConsumerRunner(
        RunnerConfig(
            group_id=args.group,
            topics=[args.topic],
            bootstrap_servers=args.bootstrap,
            transaction_batch=args.transaction_batch,
            max_poll_records=args.transaction_batch,
            poll_timeout_ms=100,
            consumer_overrides={
                "fetch_max_wait_ms": 20,
                "max_partition_fetch_bytes": 4 * 1024 * 1024,
                "fetch_max_bytes": 16 * 1024 * 1024,
            },
        ),
        handler,
        sessionmaker(engine),
    )

    cpu = {"first_s": 0.0, "last_s": 0.0}
    previous = 0

    def report() -> None:
        nonlocal previous
        while not runner.stopping:
            if count != previous:
                # CPU while records flow (not start-up or the idle wait for SIGTERM), ±0.2 s
                cpu["first_s" if previous == 0 else "last_s"] = _cpu_s()
                previous = count
            print(json.dumps({"progress": count}), flush=True)
            time.sleep(0.2)

    threading.Thread(target=report, daemon=True).start()
    runner.run()
    if latencies_ns:
        np.save(args.latencies, np.asarray(latencies_ns, dtype=np.int64))
    cpu_s = max(cpu["last_s"] - cpu["first_s"], 0.0)
    print(json.dumps({"done": count, "first_ns": first_ns, "last_ns": last_ns, "cpu_s": cpu_s}),
          flush=True)  # fmt: skip


# ---------------------------------------------------------------------- orchestration
class Consumers:
    """N consumer processes of one group; progress is read from their stdout."""

    def __init__(self, n: int, bootstrap: str, topic: str, batch: int, out_dir: Path) -> None:
        self.group = f"bench-{topic}"
        self.counts = [0] * n
        self.final: list[dict[str, Any] | None] = [None] * n
        self.latency_files = [out_dir / f"latencies-{i}.npy" for i in range(n)]
        for path in self.latency_files:
            path.unlink(missing_ok=True)
        self.processes = []
        for i in range(n):
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "bench.bus", "--role", "consumer",
                    "--bootstrap", bootstrap, "--topic", topic, "--group", self.group,
                    "--db", str(out_dir / f"consumer-{i}.sqlite3"),
                    "--latencies", str(self.latency_files[i]),
                    "--transaction-batch", str(batch),
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            self.processes.append(process)
            threading.Thread(target=self._read, args=(i, process), daemon=True).start()

    def _read(self, i: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if "progress" in message:
                self.counts[i] = message["progress"]
            elif "done" in message:
                self.counts[i] = message["done"]
                self.final[i] = message

    def total(self) -> int:
        return sum(self.counts)

    def stop(self, timeout_s: float = 60.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        # the reader threads need a moment to see the final lines
        end = time.monotonic() + 5
        while any(f is None for f in self.final) and time.monotonic() < end:
            time.sleep(0.05)


def _producer(args: argparse.Namespace, bootstrap: str) -> Any:
    """The backbone's producer with its defaults, varied only by the command-line options."""
    from services.runtime.kafka import EventProducer

    overrides: dict[str, Any] = {"linger_ms": args.linger_ms}
    if args.compression != "none":
        overrides["compression_type"] = args.compression
    return EventProducer(bootstrap, source="bench-bus", **overrides)


def _payload(i: int) -> bytes:
    return (b"%012d" % i).ljust(PAYLOAD_BYTES, b".")


def _wait_for(consumers: Consumers, target: int, timeout_s: float, label: str) -> bool:
    started = time.monotonic()
    last = -1.0
    while consumers.total() < target:
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            print(f"  {label}: timed out at {consumers.total():,}/{target:,}", flush=True)
            return False
        if any(p.poll() is not None for p in consumers.processes):
            print(f"  {label}: a consumer exited early", flush=True)
            return False
        if elapsed - last >= 2.0:
            print(f"  {label}: consumed {consumers.total():,}/{target:,}", flush=True)
            last = elapsed
        time.sleep(0.05)
    return True


def _throughput(args: argparse.Namespace, bootstrap: str, out_dir: Path) -> float:
    from services.runtime.topics import TopicSpec, ensure_topics

    topic = f"bench.bus.t{uuid.uuid4().hex[:8]}.v1"
    ensure_topics([TopicSpec(topic, PARTITIONS, "bench", retention_ms=3_600_000)], bootstrap)
    print(f"throughput: {args.messages:,} messages of {PAYLOAD_BYTES} B over {PARTITIONS} "
          f"partitions, {args.consumers} consumer process(es)", flush=True)  # fmt: skip
    consumers = Consumers(args.consumers, bootstrap, topic, args.transaction_batch, out_dir)
    producer = _producer(args, bootstrap)
    time.sleep(args.join_wait_s)  # let the group form so the clock measures work, not joins
    started_ns = time.time_ns()
    started = time.monotonic()
    producer_cpu0_s = _cpu_s()
    broker_cpu0_s = _broker_cpu_s()
    broker_cpu_s: float | None = None
    try:
        for i in range(args.messages):
            producer.send(topic, f"patient-{i % PATIENTS}", _payload(i), event_type="bench.Ping")
            if i % 50_000 == 0 and i:
                print(f"  produced {i:,} ({i / (time.monotonic() - started):,.0f}/s)", flush=True)
        producer.flush(120)
        produce_s = time.monotonic() - started
        producer_cpu_s = _cpu_s() - producer_cpu0_s
        print(f"  producer done: {args.messages / produce_s:,.0f} msgs/s acknowledged ({_load()})",
              flush=True)  # fmt: skip
        ok = _wait_for(consumers, args.messages, args.timeout_s, "throughput")
        broker_now_s = _broker_cpu_s()
        if broker_cpu0_s is not None and broker_now_s is not None:
            broker_cpu_s = broker_now_s - broker_cpu0_s
    finally:
        producer.close()
        consumers.stop()
    if not ok:
        return 0.0
    last_ns = max(int(f["last_ns"]) for f in consumers.final if f)
    elapsed_s = (last_ns - started_ns) / 1e9
    rate = float(args.messages / elapsed_s)
    print(f"  {args.messages:,} produced and consumed in {elapsed_s:.2f} s: {rate:,.0f} msgs/s "
          f"({_load()})", flush=True)  # fmt: skip
    _cpu_budget(args.messages, producer_cpu_s, [f["cpu_s"] for f in consumers.final if f],
                broker_cpu_s)  # fmt: skip
    return rate


def _floor(args: argparse.Namespace, bootstrap: str) -> None:
    """kafka-python alone, no backbone: the same records (key, 100 B value, the same CloudEvents
    headers) produced and then consumed by bare KafkaProducer/KafkaConsumer, in this process,
    with no decoding, dedupe or storage. Its CPU per message is the floor under the backbone."""
    from kafka import KafkaConsumer, KafkaProducer

    from services.runtime.kafka import EventProducer
    from services.runtime.kafka.envelope import encode_headers, new_envelope
    from services.runtime.topics import TopicSpec, ensure_topics

    topic = f"bench.bus.f{uuid.uuid4().hex[:8]}.v1"
    ensure_topics([TopicSpec(topic, PARTITIONS, "bench", retention_ms=3_600_000)], bootstrap)
    n = args.floor_messages
    template = new_envelope("patient-0", _payload(0), source="bench-bus", time=_now(),
                            event_type="bench.Ping")  # fmt: skip
    headers = encode_headers(template)  # same header names and sizes as the backbone's
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=args.linger_ms, batch_size=256 * 1024,
                             partitioner=EventProducer.default_partitioner())  # fmt: skip
    keys = [f"patient-{i}".encode() for i in range(PATIENTS)]
    cpu0_s = _cpu_s()
    for i in range(n):
        producer.send(topic, key=keys[i % PATIENTS], value=_payload(i), headers=headers)
    producer.flush(120)
    produce_us = (_cpu_s() - cpu0_s) / n * 1e6
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"floor-{topic}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=args.transaction_batch,
                             fetch_max_wait_ms=20)  # fmt: skip
    got = 0
    cpu0_s = 0.0
    while got < n:
        batch = consumer.poll(timeout_ms=500)
        if got == 0 and batch:
            cpu0_s = _cpu_s()  # after the group join
        for records in batch.values():
            got += len(records)
    consume_us = (_cpu_s() - cpu0_s) / n * 1e6
    consumer.close(autocommit=False)
    print(f"floor (kafka-python alone, {n:,} messages): produce {produce_us:.1f} µs/msg, "
          f"consume {consume_us:.1f} µs/msg of CPU; together {produce_us + consume_us:.1f} "
          f"({_load()})", flush=True)  # fmt: skip


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _cpu_budget(
    messages: int, producer_s: float, consumer_s: list[float], broker_s: float | None
) -> None:
    """CPU per message of each part: what the rate would be with the cores to ourselves.

    Wall-clock throughput on a shared machine says more about the neighbours than about the
    backbone; CPU time per message does not depend on them as much (contention still inflates
    it a little), so it shows what limits the rate.
    """
    per_us = {
        "producer": producer_s / messages * 1e6,
        "consumers": sum(consumer_s) / messages * 1e6,
    }
    if broker_s is not None:
        per_us["broker"] = broker_s / messages * 1e6
    total_us = sum(per_us.values())
    parts = ", ".join(f"{name} {us:.1f}" for name, us in per_us.items())
    cores = os.cpu_count() or 1
    print(f"  CPU per message (µs): {parts}; total {total_us:.1f} → on {cores} idle cores at "
          f"most {cores * 1e6 / total_us:,.0f} msgs/s", flush=True)  # fmt: skip


def _latency(args: argparse.Namespace, bootstrap: str, out_dir: Path) -> Any:
    import numpy as np

    from services.runtime.topics import TopicSpec, ensure_topics

    topic = f"bench.bus.l{uuid.uuid4().hex[:8]}.v1"
    ensure_topics([TopicSpec(topic, PARTITIONS, "bench", retention_ms=3_600_000)], bootstrap)
    total = int(args.rate * (args.warmup_s + args.seconds))
    print(f"latency: {args.rate:,} msgs/s for {args.warmup_s:.0f} s warm-up + "
          f"{args.seconds:.0f} s measured", flush=True)  # fmt: skip
    consumers = Consumers(args.consumers, bootstrap, topic, args.transaction_batch, out_dir)
    producer = _producer(args, bootstrap)
    time.sleep(args.join_wait_s)
    interval_s = 1.0 / args.rate
    started = time.monotonic()
    behind_max_s = 0.0
    try:
        for i in range(total):
            due = started + i * interval_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                behind_max_s = max(behind_max_s, -delay)
            phase = "warmup" if i < args.rate * args.warmup_s else "measure"
            producer.send(
                topic,
                f"patient-{i % PATIENTS}",
                _payload(i),
                event_type="bench.Ping",
                extensions={"sentns": str(time.time_ns()), "phase": phase},
            )
            if i % (args.rate * 5) == 0 and i:
                print(f"  sent {i:,}/{total:,}", flush=True)
        producer.flush(60)
        print(f"  sender at most {behind_max_s * 1000:.1f} ms behind schedule ({_load()})",
              flush=True)  # fmt: skip
        _wait_for(consumers, total, args.timeout_s, "latency")
    finally:
        producer.close()
        consumers.stop()
    arrays = [np.load(path) for path in consumers.latency_files if path.exists()]
    latencies_ms: Any = np.concatenate(arrays) / 1e6 if arrays else np.zeros(0)
    measured = int(args.rate * args.seconds)
    print(f"  {latencies_ms.size:,}/{measured:,} measured messages received", flush=True)
    return latencies_ms


def _plot(latencies_ms: Any, path: Path, rate: int, p50: float, p99: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    upper = max(float(np.percentile(latencies_ms, 99.9)), 1.0)
    hist.hist(np.clip(latencies_ms, 0, upper), bins=100, color="#3a7ca5")
    hist.set_xlabel("produce → handled latency (ms)")
    hist.set_ylabel("messages")
    hist.set_title(f"{latencies_ms.size:,} messages at {rate:,} msgs/s")
    for value, label in ((p50, "p50"), (p99, "p99")):
        hist.axvline(value, color="#d1495b", linestyle="--")
        hist.text(value, hist.get_ylim()[1] * 0.9, f" {label} {value:.1f} ms", color="#d1495b")
    ordered = np.sort(latencies_ms)
    cdf.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size, color="#3a7ca5")
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("fraction ≤ x")
    cdf.grid(True, which="both", alpha=0.3)
    fig.suptitle("Langerhans Kafka backbone (local broker, 12 partitions)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bench", "consumer"], default="bench")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--join-wait-s", type=float, default=4.0)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--compression", default="none", help="producer compression_type")
    parser.add_argument("--transaction-batch", type=int, default=1000)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--skip-throughput", action="store_true", help="latency phase only")
    parser.add_argument("--skip-latency", action="store_true", help="throughput phase only")
    parser.add_argument("--floor-messages", type=int, default=50_000,
                        help="kafka-python alone, for comparison (0: skip)")  # fmt: skip
    # consumer role
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--group", default="")
    parser.add_argument("--db", default="")
    parser.add_argument("--latencies", default="")
    args = parser.parse_args()
    if args.role == "consumer":
        _consumer(args)
        return 0

    import numpy as np

    from services.runtime.local_kafka import bootstrap_servers, kafka_up
    from services.runtime.settings import var_dir

    if kafka_up() != 0:
        print("bench-bus: Kafka is not available", file=sys.stderr)
        return 1
    bootstrap = bootstrap_servers()
    out_dir = var_dir() / "bench" / "bus"
    out_dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"bench-bus: broker {bootstrap}, {os.cpu_count()} CPUs, load average {load:.1f}",
          flush=True)  # fmt: skip

    if args.floor_messages and not args.skip_throughput:
        _floor(args, bootstrap)
    rate = 0.0 if args.skip_throughput else _throughput(args, bootstrap, out_dir)
    if args.skip_latency:
        return 0
    latencies_ms = _latency(args, bootstrap, out_dir)
    if latencies_ms.size == 0:
        print("bench-bus: no latency samples", file=sys.stderr)
        return 1
    p50, p90, p99, p999 = (float(np.percentile(latencies_ms, q)) for q in (50, 90, 99, 99.9))
    print(f"  latency ms: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  p99.9 {p999:.2f}  "
          f"max {float(latencies_ms.max()):.2f}", flush=True)  # fmt: skip
    plot = var_dir() / "bench" / "bus_latency.png"
    _plot(latencies_ms, plot, args.rate, p50, p99)
    print(f"  plot: {plot}")
    print(f"  load average now {os.getloadavg()[0]:.1f} (other processes share the CPUs)")
    goal = "meets" if rate >= 20_000 and p99 <= 50 else "MISSES"
    print(f"  goal ≥ 20,000 msgs/s and p99 ≤ 50 ms: {goal}")
    print(f"RESULT bus msgs_per_s={rate:.0f} p50_ms={p50:.2f} p99_ms={p99:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
