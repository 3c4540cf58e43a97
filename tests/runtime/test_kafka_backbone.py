"""The event backbone against the real broker, with producers and consumers in other processes.

The worker half of this module runs as `python -m tests.runtime.test_kafka_backbone …` in a
subprocess. Its handler appends one row per handling to an `effects` table (no unique key,
so a double handling shows up as two rows), in the same transaction as the dedupe row.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import Column, Engine, Integer, String, Table, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.db import create_service_engine, new_metadata
from services.runtime.kafka import ConsumerRunner, Envelope, EventProducer, RunnerConfig, dedupe
from services.runtime.topics import dlq_topic
from tests.runtime.conftest import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 180.0

metadata = new_metadata()
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("value", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
)


def _engine(database_url: str, service: str) -> Engine:
    """The consuming service's own storage, exactly as services open it."""
    return create_service_engine(service, database_url)


# ---------------------------------------------------------------------- worker (subprocess)
def _produce(args: argparse.Namespace) -> None:
    with EventProducer(args.bootstrap, source="test-producer") as producer:
        for i in range(args.start, args.start + args.count):
            value = args.poison if i in args.poison_at else str(i)
            key = f"patient-{i % args.key_count}"
            producer.send(args.topic, key, value.encode(), event_type="test.Value")
        producer.flush()
    print(json.dumps({"produced": args.count}), flush=True)


def _consume(args: argparse.Namespace) -> None:
    engine = _engine(args.db_url, args.service)
    sessions = sessionmaker(engine)
    handled = 0

    def handler(event: Envelope, session: Session) -> None:
        nonlocal handled
        value = event.data.decode()
        if value == args.poison:
            raise RuntimeError(f"cannot handle {value}")
        # Mid-batch: once records are stored whose offsets are not yet committed.
        if args.crash_after is not None and handled >= args.crash_after:
            uncommitted = len(runner._pending)
            if uncommitted or handled >= args.crash_after + 100:
                print(f"SIGKILL at handled={handled} uncommitted={uncommitted}", file=sys.stderr)
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        session.execute(
            effects.insert().values(event_id=event.event_id, value=value, pid=os.getpid())
        )
        if args.slow_ms:
            time.sleep(args.slow_ms / 1000)
        handled += 1

    config = RunnerConfig(
        group_id=args.group,
        topics=[args.topic],
        bootstrap_servers=args.bootstrap,
        transaction_batch=args.batch,
        max_poll_records=args.max_poll,
        max_attempts=3,
        backoff_initial_s=0.05,
    )
    print(json.dumps({"ready": os.getpid()}), flush=True)
    runner = ConsumerRunner(config, handler, sessions)
    runner.run()
    labels = {"topic": args.topic, "group": args.group}
    print(
        json.dumps(
            {
                "handled": REGISTRY.get_sample_value("langerhans_events_handled_total", labels),
                "duplicates": REGISTRY.get_sample_value(
                    "langerhans_events_duplicate_total", labels
                ),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--key-count", type=int, default=10)
    parser.add_argument("--group", default="")
    parser.add_argument("--db-url", default="")
    parser.add_argument("--service", default="")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--max-poll", type=int, default=100)
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--poison", default="poison")
    parser.add_argument("--poison-at", type=int, nargs="*", default=[])
    args = parser.parse_args()
    # The runner's assignment log lines tell the test which member owns partitions.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("services.runtime.kafka").setLevel(logging.INFO)
    if args.role == "produce":
        _produce(args)
    else:
        _consume(args)


# ---------------------------------------------------------------------- test side
def _worker(*args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    """A worker process; its stderr goes to `stderr` when given (read while it runs)."""
    argv = [sys.executable, "-m", "tests.runtime.test_kafka_backbone", *args]
    if stderr is None:
        return subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    with stderr.open("w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes of a test; any still running at the end (a failed test) are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def _assigned(log: Path) -> bool:
    """True once the worker logging to `log` was last assigned at least one partition."""
    lines = re.findall(r"assigned \[(.*)\]", log.read_text()) if log.exists() else []
    return bool(lines) and lines[-1] != ""


def _finish(process: subprocess.Popen[str], timeout_s: float = 60.0) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=10)
        pytest.fail(f"worker did not finish in {timeout_s:.0f} s:\n{(err or '')[-3000:]}")
    return process.returncode, out, err or ""


def _stop(process: subprocess.Popen[str], log: Path | None = None) -> dict[str, float | None]:
    """SIGTERM a consumer; it must exit cleanly and report its counters."""
    process.send_signal(signal.SIGTERM)
    code, out, err = _finish(process, 60.0)
    assert code == 0, (log.read_text() if log is not None else err)[-3000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def effects_db(database_url: str, unique_service: str) -> Iterator[tuple[list[str], Engine]]:
    """The consumer's database (SQLite file, or a schema in PostgreSQL): worker args, engine."""
    engine = _engine(database_url, unique_service)
    metadata.create_all(engine)
    dedupe.create_tables(engine)
    yield ["--db-url", database_url, "--service", unique_service], engine
    engine.dispose()


def _counts(engine: Engine) -> tuple[int, int]:
    """(rows, distinct event ids) in the effects table."""
    with engine.connect() as connection:
        rows = connection.execute(select(func.count()).select_from(effects)).scalar_one()
        distinct = connection.execute(
            select(func.count(func.distinct(effects.c.event_id)))
        ).scalar_one()
    return int(rows), int(distinct)


def _produce_in_subprocess(bootstrap: str, topic: str, count: int, *extra: str) -> None:
    code, out, err = _finish(
        _worker(
            "produce", "--bootstrap", bootstrap, "--topic", topic, "--count", str(count), *extra
        ),
        RUN_TIMEOUT_S,
    )
    assert code == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"produced": count}


def _consume_args(bootstrap: str, topic: str, group: str, db: list[str], *extra: str) -> list[str]:
    return ["consume", "--bootstrap", bootstrap, "--topic", topic, "--group", group, *db, *extra]


@pytest.mark.kafka
@pytest.mark.slow
def test_produce_in_one_process_consume_in_another(
    kafka_bootstrap: str, make_topic, effects_db: tuple[list[str], Engine]
) -> None:
    db_args, engine = effects_db
    topic = make_topic(partitions=3)
    count = 300
    _produce_in_subprocess(kafka_bootstrap, topic, count)

    consumer = _worker(
        *_consume_args(kafka_bootstrap, topic, f"g-{topic}", db_args, "--batch", "25")
    )
    wait_until(lambda: _counts(engine)[1] >= count, RUN_TIMEOUT_S, f"{count} events handled")
    report = _stop(consumer)

    rows, distinct = _counts(engine)
    assert (rows, distinct) == (count, count)
    with engine.connect() as connection:
        values = {row[0] for row in connection.execute(select(effects.c.value))}
        consumer_pids = {row[0] for row in connection.execute(select(effects.c.pid))}
    assert values == {str(i) for i in range(count)}
    assert consumer_pids == {consumer.pid}
    assert report["handled"] == count


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 20])
def test_consumer_killed_mid_batch_loses_nothing_and_handles_nothing_twice(
    kafka_bootstrap: str, make_topic, effects_db: tuple[list[str], Engine], batch: int
) -> None:
    db_args, engine = effects_db
    topic = make_topic(partitions=3)
    group = f"g-{topic}"
    count = 400
    _produce_in_subprocess(kafka_bootstrap, topic, count)

    # First member: SIGKILLed in the middle of a poll batch after 130 handled records.
    first = _worker(
        *_consume_args(
            kafka_bootstrap,
            topic,
            group,
            db_args,
            "--batch",
            str(batch),
            "--max-poll",
            "100",
            "--crash-after",
            "130",
        )
    )
    code, _out, err = _finish(first, RUN_TIMEOUT_S)
    assert code == -signal.SIGKILL, err[-3000:]
    rows_at_crash, _ = _counts(engine)
    assert 0 < rows_at_crash < count

    # Second member: same group, picks up from the committed offsets.
    second = _worker(
        *_consume_args(
            kafka_bootstrap, topic, group, db_args, "--batch", str(batch), "--max-poll", "100"
        )
    )
    wait_until(lambda: _counts(engine)[1] >= count, RUN_TIMEOUT_S, f"all {count} events handled")
    time.sleep(1.0)  # let any straggling re-delivery show up before counting
    report = _stop(second)

    rows, distinct = _counts(engine)
    lost = count - distinct
    handled_twice = rows - distinct
    assert lost == 0
    assert handled_twice == 0
    # The crash left stored-but-uncommitted records: they came again and were skipped.
    assert report["duplicates"] is not None
    assert report["duplicates"] > 0


@pytest.mark.kafka
@pytest.mark.slow
def test_poison_and_malformed_records_go_to_the_dlq_and_the_consumer_goes_on(
    kafka_bootstrap: str, make_topic, effects_db: tuple[list[str], Engine]
) -> None:
    db_args, engine = effects_db
    topic = make_topic(partitions=1)  # one partition: "goes on" means the records after it
    count = 50
    _produce_in_subprocess(kafka_bootstrap, topic, count, "--poison-at", "10")
    # A record without CloudEvents headers, then more good ones after it.
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    raw.send(topic, key=b"patient-1", value=b"not an event").get(timeout=30)
    raw.close()
    _produce_in_subprocess(kafka_bootstrap, topic, 20)

    consumer = _worker(
        *_consume_args(kafka_bootstrap, topic, f"g-{topic}", db_args, "--batch", "5")
    )
    good = count - 1 + 20
    wait_until(lambda: _counts(engine)[1] >= good, RUN_TIMEOUT_S, f"{good} good events handled")
    _stop(consumer)
    assert _counts(engine) == (good, good)

    dead = KafkaConsumer(
        dlq_topic(topic),
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    letters: list[Any] = []
    deadline = time.monotonic() + 60
    while len(letters) < 2 and time.monotonic() < deadline:
        for records in dead.poll(timeout_ms=1000).values():
            letters.extend(records)
    dead.close()
    assert len(letters) == 2
    by_reason = {dict(r.headers)["dlq_reason"].decode(): r for r in letters}
    assert set(by_reason) == {"handler_failed", "malformed"}
    failed = dict(by_reason["handler_failed"].headers)
    assert by_reason["handler_failed"].value == b"poison"
    assert failed["dlq_attempts"] == b"3"
    assert b"cannot handle poison" in failed["dlq_error"]
    assert failed["dlq_source_topic"] == topic.encode()
    assert failed["ce_type"] == b"test.Value"  # original headers are kept
    assert by_reason["malformed"].value == b"not an event"
    assert b"missing CloudEvents headers" in dict(by_reason["malformed"].headers)["dlq_error"]


@pytest.mark.kafka
@pytest.mark.slow
def test_rebalance_between_two_members_handles_each_event_once(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    effects_db: tuple[list[str], Engine],
    workers: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    """A second member joins mid-stream and gets partitions; the first leaves; nothing is lost
    or handled twice. Half the events are produced only once the second member owns
    partitions, so it has work of its own however fast the first member drained the rest."""
    db_args, engine = effects_db
    topic = make_topic(partitions=4)
    group = f"g-{topic}"
    half = 200
    _produce_in_subprocess(kafka_bootstrap, topic, half)
    slow = ("--batch", "1", "--max-poll", "20", "--slow-ms", "20")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _worker(*_consume_args(kafka_bootstrap, topic, group, db_args, *slow), stderr=first_log)
    workers.append(first)
    wait_until(lambda: _counts(engine)[1] >= 40, START_TIMEOUT_S, "the first member to start")
    second = _worker(
        *_consume_args(kafka_bootstrap, topic, group, db_args, *slow), stderr=second_log
    )
    workers.append(second)
    wait_until(lambda: _assigned(second_log), START_TIMEOUT_S, "the second member's partitions")
    # Distinct keys spread the second half over every partition, the second member's too.
    _produce_in_subprocess(
        kafka_bootstrap, topic, half, "--start", str(half), "--key-count", str(half)
    )
    wait_until(lambda: second.pid in _pids(engine), START_TIMEOUT_S, "the second member to handle")
    assert _pids(engine) == {first.pid, second.pid}
    _stop(first, first_log)  # another rebalance: the second member takes everything
    count = 2 * half
    wait_until(lambda: _counts(engine)[1] >= count, RUN_TIMEOUT_S, f"all {count} events handled")
    _stop(second, second_log)
    rows, distinct = _counts(engine)
    assert (count - distinct, rows - distinct) == (0, 0)


def _pids(engine: Engine) -> set[int]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(select(effects.c.pid).distinct())}


if __name__ == "__main__":
    main()
