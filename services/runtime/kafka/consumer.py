"""The consumer runner: handle each event once in storage, then commit its offset.

For every record: decode the CloudEvents envelope; skip it if the dedupe table already has
its event id; otherwise call the handler with the event and a SQLAlchemy session, and commit
the handler's changes together with the event-id row in ONE transaction. Only after that
commit is the Kafka offset committed. A crash anywhere therefore means re-delivery, and the
dedupe table makes re-delivery harmless. Handlers change only storage (events they cause go
through the outbox), so a rolled-back attempt leaves nothing behind.

A failing handler is retried a bounded number of times with backoff; then the record goes to
`<topic>.dlq` with headers saying why, and the runner carries on. A record that cannot be
decoded goes to the dead-letter topic at once. SIGTERM/SIGINT finish the current record,
commit and close.

Throughput: with `transaction_batch > 1` up to that many records of one poll, across
partitions, share one storage transaction (one fsync instead of one per record). If anything
in such a batch fails, the batch is rolled back and its records are handled partition by
partition, one by one, each with its own retries.

Hooks: subclasses override `order_batch`, `on_batch_start`, `on_batch_end`, `on_committed`,
`on_partitions_assigned` and `on_partitions_revoked` (no-ops by default, all called on the
consuming thread) rather than private methods.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.clock import Clock, SystemClock
from services.runtime.kafka import dedupe
from services.runtime.kafka.envelope import (
    Envelope,
    MalformedEventError,
    ProtoMessage,
    envelope_from_record,
)
from services.runtime.kafka.metrics import (
    CONSUMER_LAG,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_HANDLED,
    EVENTS_RETRIED,
    HANDLER_SECONDS,
)
from services.runtime.topics import dlq_topic

__all__ = [
    "ConsumerRunner",
    "Handler",
    "RunnerConfig",
    "await_topic_metadata",
    "count_pending_join_as_rejoin",
    "join_pending",
]

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Session], None]
"""Handles one event: changes storage through `session` only; must not commit it."""

MAX_ERROR_HEADER_CHARS = 1000
# poll() timeout while a group join is in flight: long enough for the round trip to finish
# inside poll() (a join collected by a later poll() costs another JoinGroup), short enough
# that a stop request is seen within a second.
JOIN_POLL_TIMEOUT_MS = 1000
# An asynchronous offset commit unanswered for this long no longer holds back the next one.
COMMIT_ANSWER_WAIT_S = 5.0


@dataclass
class RunnerConfig:
    """How one consumer group member consumes and retries."""

    group_id: str
    topics: Sequence[str]
    bootstrap_servers: str
    max_attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    transaction_batch: int = 1
    max_poll_records: int = 500
    poll_timeout_ms: int = 200
    # Shorter than Kafka's 45 s default so partitions of a crashed member move on quickly.
    # Commit offsets without waiting for the broker while running (latency); sync on stop.
    async_commit: bool = True
    # Offsets are committed at most this often while running (always before a rebalance and
    # on stop), and never while the previous asynchronous commit is unanswered: one commit
    # per poll piled up in-flight requests at 2,000 polls/s ("Node paused: max_in_flight").
    # Later offset commits only mean more re-delivery after a crash, which the dedupe skips.
    commit_interval_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    consumer_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be ≥ 1")
        if self.transaction_batch < 1:
            raise ValueError("transaction_batch must be ≥ 1")
        if not self.topics:
            raise ValueError("at least one topic is needed")


class _StopRequestedError(Exception):
    """Raised inside a retry backoff when a stop was requested: leave the record uncommitted."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalances run only inside poll, and offsets are committed before a poll that will
    rebalance, so a revoke finds little handled-but-uncommitted (an asynchronous commit may
    still be on its way, or a rebalance came unannounced); such records are re-delivered to
    the new owner and skipped by its dedupe table."""

    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._runner._forget(set(revoked), "revoked")
        self._runner.on_partitions_revoked(set(revoked), lost=False)

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Fetching resumes from the group's committed offsets (earliest for a new group).
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        self._runner.on_partitions_assigned(set(assigned))

    def on_partitions_lost(self, lost: Any) -> None:
        self._runner._forget(set(lost), "lost")
        self._runner.on_partitions_revoked(set(lost), lost=True)


class ConsumerRunner:
    """Runs one consumer group member until `stop()` or SIGTERM/SIGINT."""

    def __init__(
        self,
        config: RunnerConfig,
        handler: Handler,
        session_factory: sessionmaker[Session],
        *,
        message_type: type[ProtoMessage] | None = None,
        clock: Clock | None = None,
        dlq_producer: KafkaProducer | None = None,
    ) -> None:
        self.config = config
        self._handler = handler
        self._sessions = session_factory
        self._message_type = message_type
        self._clock = clock or SystemClock()
        self._dlq_producer = dlq_producer
        self._own_dlq_producer = False
        self._stop = threading.Event()
        self._pending: dict[TopicPartition, int] = {}
        self._commit_sent_s = float("-inf")
        self._commit_in_flight = False
        self._commit_seq = 0
        self._next_offset: dict[TopicPartition, int] = {}
        self._consumer: KafkaConsumer | None = None
        self._metric_children: dict[str, tuple[Any, Any, Any, Any]] = {}

    # ------------------------------------------------------------------ hooks
    def order_batch(self, envelopes: list[Envelope]) -> Sequence[int] | None:
        """The positions of `envelopes` in the order to handle them in their shared
        transaction (a permutation), or None for arrival order. Called first for every
        multi-event batch; `on_batch_end` follows in every case."""
        return None

    def on_batch_start(self, envelopes: list[Envelope]) -> None:
        """Before a batch's transaction, with its events in handling order (duplicates that
        will be skipped included)."""

    def on_batch_end(self, envelopes: list[Envelope], *, committed: bool) -> None:
        """After a batch's transaction: committed, or rolled back (its events are then handled
        again one by one, each in its own transaction, with no batch hooks around them)."""

    def on_committed(self, envelopes: list[Envelope]) -> None:
        """After a storage commit that handled `envelopes` (new events, not duplicates) and
        before their offsets are committed: e.g. wake the outbox relay. An error is logged
        and ignored (the commit stands)."""

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        """This member now owns `partitions` (consumption resumes at the committed offsets)."""

    def on_partitions_revoked(self, partitions: set[TopicPartition], *, lost: bool) -> None:
        """`partitions` moved to another member (`lost`: without a clean hand-over, e.g. this
        member was expelled): anything cached about their keys may be stale from now on."""

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the runner to finish the current record, commit and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current record, then stopping", signum)
        self.stop()

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Consume until stopped. Signal handlers are installed only on the main thread."""
        previous: dict[signal.Signals, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap_servers,
            group_id=self.config.group_id,
            client_id=f"langerhans-{self.config.group_id}",
            # Offsets are committed by hand, only after the storage commit.
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.config.max_poll_records,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            **self.config.consumer_overrides,
        )
        self._consumer = consumer
        if not count_pending_join_as_rejoin(consumer):
            log.info("kafka-python without the pending-join work-around (another version)")
        try:
            consumer.subscribe(list(self.config.topics), listener=_Listener(self))
            while not self._stop.is_set():
                timeout_ms = self.config.poll_timeout_ms
                if join_pending(consumer):
                    # Let poll() wait for the JoinGroup/SyncGroup round trip it started rather
                    # than time out in the middle of it (see count_pending_join_as_rejoin).
                    timeout_ms = max(timeout_ms, JOIN_POLL_TIMEOUT_MS)
                batch = consumer.poll(timeout_ms=timeout_ms)
                if batch and self.config.transaction_batch > 1:
                    self._handle_poll(consumer, batch)
                else:
                    for tp, records in batch.items():
                        if self._stop.is_set():
                            break
                        self._handle_partition(consumer, tp, records)
                if self._commit_due(consumer):
                    self._commit(consumer)
                self._update_lag(consumer)
        finally:
            try:
                self._commit(consumer, final=True)
            finally:
                consumer.close(autocommit=False)
                self._consumer = None
                if self._own_dlq_producer and self._dlq_producer is not None:
                    self._dlq_producer.close(timeout=10)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        log.info("consumer %s stopped", self.config.group_id)

    # ------------------------------------------------------------------ offsets
    def _forget(self, partitions: set[TopicPartition], why: str) -> None:
        for tp in partitions:
            if tp in self._pending:
                log.warning(
                    "%s[%d] %s with offset %d uncommitted; the new owner dedupes",
                    tp.topic,
                    tp.partition,
                    why,
                    self._pending[tp],
                )
            self._pending.pop(tp, None)
            self._next_offset.pop(tp, None)
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(tp.topic, self.config.group_id, str(tp.partition))

    def _commit(self, consumer: KafkaConsumer, *, final: bool = False) -> None:
        """Commit offsets of stored records: asynchronously while running, synchronously last.

        An asynchronous commit that fails or is overtaken by a rebalance only means
        re-delivery of records that are already stored, which the dedupe table skips.
        """
        offsets = dict(self._next_offset) if final else dict(self._pending)
        if not offsets:
            return
        to_commit = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        try:
            if final or not self.config.async_commit:
                consumer.commit(to_commit)
            else:
                self._commit_in_flight = True
                self._commit_seq += 1
                seq = self._commit_seq
                consumer.commit_async(
                    to_commit, callback=lambda o, r: self._async_commit_done(seq, o, r)
                )
        except Exception as exc:
            self._commit_in_flight = False
            log.warning("offset commit failed (%s); records may be re-delivered", exc)
            return
        self._commit_sent_s = time.monotonic()
        self._pending.clear()

    def _commit_due(self, consumer: KafkaConsumer) -> bool:
        if not self._pending:
            return False
        now_s = time.monotonic()
        if self._commit_in_flight and now_s - self._commit_sent_s < COMMIT_ANSWER_WAIT_S:
            return False
        if now_s - self._commit_sent_s >= self.config.commit_interval_ms / 1000:
            return True
        # A rebalance is coming (it runs inside the next poll): commit what is stored first.
        coordinator = getattr(consumer, "_coordinator", None)
        return bool(getattr(coordinator, "rejoin_needed", False)) or join_pending(consumer)

    def _async_commit_done(self, seq: int, offsets: Any, response: Any) -> None:
        """kafka-python calls this from poll() on the consuming thread."""
        if seq != self._commit_seq:
            return  # a later commit was sent meanwhile; it carries newer offsets
        self._commit_in_flight = False
        if not isinstance(response, Exception):
            return
        log.warning("async offset commit failed (%s); retried with the next commit", response)
        # Offsets of partitions still ours go back into the next commit unless superseded.
        for tp, meta in offsets.items():
            if tp in self._next_offset and self._pending.get(tp, -1) < meta.offset:
                self._pending[tp] = meta.offset

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        for tp, next_offset in self._next_offset.items():
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # partition no longer assigned
                highwater = None
            if highwater is not None:
                CONSUMER_LAG.labels(tp.topic, self.config.group_id, str(tp.partition)).set(
                    max(highwater - next_offset, 0)
                )

    def _done(self, tp: TopicPartition, offset: int) -> None:
        self._pending[tp] = offset + 1
        self._next_offset[tp] = offset + 1

    # ------------------------------------------------------------------ handling
    def _metrics(self, topic: str) -> tuple[Any, Any, Any, Any]:
        children = self._metric_children.get(topic)
        if children is None:
            group = self.config.group_id
            children = (
                EVENTS_HANDLED.labels(topic, group),
                EVENTS_DUPLICATE.labels(topic, group),
                EVENTS_RETRIED.labels(topic, group),
                HANDLER_SECONDS.labels(topic, group),
            )
            self._metric_children[topic] = children
        return children

    def _decode(self, record: Any) -> Envelope:
        envelope = envelope_from_record(record)
        if self._message_type is not None:
            envelope.parse(self._message_type)  # type and payload must fit, or it is poison
        return envelope

    def _handle_poll(self, consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        """All records of one poll, across partitions, in transactions of `transaction_batch`.

        One storage commit (one fsync) per transaction instead of one per partition: a poll
        spread over 12 partitions otherwise pays twelve. Only the common case takes this path:
        every record decodes. A malformed record anywhere, or a failing transaction, sends the
        rest of the poll down the per-partition path (dead letters, one-by-one retries).
        """
        decoded: list[tuple[TopicPartition, Any, Envelope]] = []
        try:
            for tp, records in batch.items():
                for record in records:
                    decoded.append((tp, record, self._decode(record)))
        except MalformedEventError:
            self._handle_partitions(consumer, batch)
            return
        size = self.config.transaction_batch
        for start in range(0, len(decoded), size):
            if self._stop.is_set():
                return
            chunk = decoded[start : start + size]
            if not self._flush_chunk(chunk):
                rest: dict[TopicPartition, list[Any]] = {}
                for tp, record, _ in decoded[start:]:
                    rest.setdefault(tp, []).append(record)
                self._handle_partitions(consumer, rest)
                return

    def _handle_partitions(
        self, consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]]
    ) -> None:
        for tp, records in batch.items():
            if self._stop.is_set():
                break
            self._handle_partition(consumer, tp, records)

    def _flush_chunk(self, chunk: list[tuple[TopicPartition, Any, Envelope]]) -> bool:
        """One transaction for `chunk`; False (nothing stored) when it failed."""
        started = time.perf_counter()
        try:
            handled_at = self._handle_batch([env for _, _, env in chunk])
        except Exception as exc:
            log.info("batch of %d failed (%s); handling per partition", len(chunk), exc)
            return False
        per_event_s = (time.perf_counter() - started) / len(chunk)
        last: dict[TopicPartition, int] = {}
        counts: dict[str, list[int]] = {}
        for i, (tp, record, _) in enumerate(chunk):
            last[tp] = record.offset
            handled_dup = counts.setdefault(tp.topic, [0, 0])
            handled_dup[0 if i in handled_at else 1] += 1
        for topic, (handled, duplicates) in counts.items():
            handled_c, duplicate_c, _, seconds_h = self._metrics(topic)
            for _ in range(handled):
                seconds_h.observe(per_event_s)
            handled_c.inc(handled)
            if duplicates:
                duplicate_c.inc(duplicates)
        for tp, offset in last.items():
            self._done(tp, offset)
        return True

    def _handle_partition(
        self, consumer: KafkaConsumer, tp: TopicPartition, records: list[Any]
    ) -> None:
        run: list[tuple[Any, Envelope]] = []
        for record in records:
            if self._stop.is_set():
                break
            try:
                envelope = self._decode(record)
            except MalformedEventError as exc:
                if not self._flush_run(consumer, tp, run):
                    return
                run = []
                if not self._dead_letter(consumer, tp, record, None, reason="malformed", error=exc):
                    return
                continue
            run.append((record, envelope))
            if len(run) >= self.config.transaction_batch:
                if not self._flush_run(consumer, tp, run):
                    return
                run = []
        self._flush_run(consumer, tp, run)

    def _flush_run(
        self, consumer: KafkaConsumer, tp: TopicPartition, run: list[tuple[Any, Envelope]]
    ) -> bool:
        """Handle a run of decoded records; False when the partition must stop for now."""
        if not run:
            return True
        if len(run) > 1:
            started = time.perf_counter()
            try:
                handled = len(self._handle_batch([env for _, env in run]))
            except Exception as exc:
                log.info("batch of %d failed (%s); handling one by one", len(run), exc)
            else:
                handled_c, duplicate_c, _, seconds_h = self._metrics(tp.topic)
                per_event_s = (time.perf_counter() - started) / len(run)
                for _ in range(handled):
                    seconds_h.observe(per_event_s)
                handled_c.inc(handled)
                duplicate_c.inc(len(run) - handled)
                self._done(tp, run[-1][0].offset)
                return True
        for record, envelope in run:
            if self._stop.is_set():
                return False
            try:
                outcome = self._handle_with_retries(envelope)
            except _StopRequestedError:
                return False
            if outcome is not None and not self._dead_letter(
                consumer, tp, record, envelope, reason="handler_failed", error=outcome
            ):
                return False
            self._done(tp, record.offset)
        return True

    def _handle_batch(self, envelopes: list[Envelope]) -> set[int]:
        """Handle `envelopes` in one transaction, in `order_batch` order; the positions (in
        arrival order) handled, the rest were duplicates. Raises when nothing was stored."""
        ordered = envelopes
        order: Sequence[int] | None = None
        committed = False
        try:
            order = self.order_batch(envelopes)
            if order is not None:
                if sorted(order) != list(range(len(envelopes))):
                    raise ValueError("order_batch must return a permutation of the positions")
                ordered = [envelopes[i] for i in order]
            self.on_batch_start(ordered)
            handled = self._store_batch(ordered)
            committed = True
        finally:
            try:
                self.on_batch_end(ordered, committed=committed)
            except Exception:
                log.exception("on_batch_end hook failed")
        if handled:
            self._notify_committed([ordered[i] for i in sorted(handled)])
        return handled if order is None else {order[i] for i in handled}

    def _store_batch(self, envelopes: list[Envelope]) -> set[int]:
        group = self.config.group_id
        handled: set[int] = set()
        with self._sessions() as session, session.begin():
            seen = dedupe.already_processed(session, group, (e.event_id for e in envelopes))
            rows: list[tuple[str, str, int, int]] = []
            for i, envelope in enumerate(envelopes):
                if envelope.event_id in seen:
                    continue
                seen.add(envelope.event_id)
                self._handler(envelope, session)
                handled.add(i)
                rows.append(
                    (envelope.event_id, envelope.topic, envelope.partition, envelope.offset)
                )
            dedupe.mark_processed(
                session, group, rows, outcome="handled", processed_at=self._clock.now()
            )
        return handled

    def _notify_committed(self, envelopes: list[Envelope]) -> None:
        try:
            self.on_committed(envelopes)
        except Exception:
            log.exception("on_committed hook failed")

    def _handle_once(self, envelope: Envelope) -> bool:
        """One attempt in one transaction; True if handled, False if a duplicate."""
        group = self.config.group_id
        with self._sessions() as session, session.begin():
            if dedupe.already_processed(session, group, [envelope.event_id]):
                return False
            self._handler(envelope, session)
            dedupe.mark_processed(
                session,
                group,
                [_row(envelope)],
                outcome="handled",
                processed_at=self._clock.now(),
            )
        self._notify_committed([envelope])
        return True

    def _is_recorded(self, event_id: str) -> bool:
        with self._sessions() as session:
            return bool(dedupe.already_processed(session, self.config.group_id, [event_id]))

    def _handle_with_retries(self, envelope: Envelope) -> BaseException | None:
        """Handle with bounded retries; None when done, else the last error (dead-letter it)."""
        handled_c, duplicate_c, retried_c, seconds_h = self._metrics(envelope.topic)
        last_error: BaseException | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            started = time.perf_counter()
            try:
                handled = self._handle_once(envelope)
            except IntegrityError as exc:
                # Another member (a zombie after a rebalance) committed this event first?
                if self._is_recorded(envelope.event_id):
                    duplicate_c.inc()
                    return None
                last_error = exc
            except Exception as exc:
                last_error = exc
            else:
                if handled:
                    seconds_h.observe(time.perf_counter() - started)
                    handled_c.inc()
                else:
                    duplicate_c.inc()
                return None
            log.warning(
                "handler failed for event %s (attempt %d/%d): %r",
                envelope.event_id,
                attempt,
                self.config.max_attempts,
                last_error,
            )
            if attempt < self.config.max_attempts:
                retried_c.inc()
                backoff_s = min(
                    self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1)
                )
                # Full jitter, so that many members do not retry in lock-step.
                if self._stop.wait(backoff_s * (0.5 + random.random() / 2)):
                    raise _StopRequestedError
        return last_error

    # ------------------------------------------------------------------ dead letters
    def _dead_letter(
        self,
        consumer: KafkaConsumer,
        tp: TopicPartition,
        record: Any,
        envelope: Envelope | None,
        *,
        reason: str,
        error: BaseException,
    ) -> bool:
        """Publish `record` to `<topic>.dlq`, wait for the ack; False (and seek back) on failure."""
        attempts = self.config.max_attempts if envelope is not None else 0
        target = dlq_topic(record.topic)
        headers = list(record.headers or [])
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_error", repr(error)[:MAX_ERROR_HEADER_CHARS].encode("utf-8", "replace")),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
            ("dlq_consumer_group", self.config.group_id.encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_time", self._clock.now().isoformat().encode()),
        ]
        try:
            producer = self._dlq()
            producer.send(target, value=record.value, key=record.key, headers=headers).get(
                timeout=30
            )
        except Exception as exc:
            # Never skip a record: go back to it and try again after the next poll.
            log.error(
                "dead-lettering %s[%d]@%d failed: %s", tp.topic, tp.partition, record.offset, exc
            )
            consumer.seek(tp, record.offset)
            self._stop.wait(self.config.backoff_max_s)
            return False
        EVENTS_DEAD_LETTERED.labels(record.topic, self.config.group_id, reason).inc()
        log.error(
            "sent %s[%d]@%d to %s (%s: %r)",
            tp.topic,
            tp.partition,
            record.offset,
            target,
            reason,
            error,
        )
        if envelope is not None:
            try:
                with self._sessions() as session, session.begin():
                    dedupe.mark_processed(
                        session,
                        self.config.group_id,
                        [_row(envelope)],
                        outcome="dead_lettered",
                        processed_at=self._clock.now(),
                    )
            except Exception as exc:  # best effort: a re-delivery would only dead-letter again
                log.warning("could not record dead-lettered event %s: %s", envelope.event_id, exc)
        self._done(tp, record.offset)
        return True

    def _dlq(self) -> KafkaProducer:
        if self._dlq_producer is None:
            self._dlq_producer = KafkaProducer(
                bootstrap_servers=self.config.bootstrap_servers,
                client_id=f"langerhans-{self.config.group_id}-dlq",
                acks="all",
                linger_ms=0,
            )
            self._own_dlq_producer = True
        return self._dlq_producer


def _install_pending_join_fix() -> None:
    original = ConsumerCoordinator.need_rejoin
    if getattr(original, "langerhans_pending_join", False):
        return

    def need_rejoin(self: Any) -> bool:
        return bool(original(self)) or getattr(self, "_join_task", None) is not None

    need_rejoin.langerhans_pending_join = True  # type: ignore[attr-defined]
    ConsumerCoordinator.need_rejoin = need_rejoin


_install_pending_join_fix()


def count_pending_join_as_rejoin(consumer: KafkaConsumer) -> bool:
    """True when a group join still in flight counts as "rejoin needed" for `consumer`.

    Works around a kafka-python 3.x coordinator bug that left members without partitions for
    good (`langerhans run` without a dosing decision, the rebalance test's idle member). The
    JoinGroup/SyncGroup round trip runs as a task on the client's IO thread; when `poll()`'s
    timeout ends first, the task goes on and the next `poll()` collects its result, but only
    while `need_rejoin()` is still true. A rejoin that is due because the leader's metadata
    changed (typically: the member joined before its topics' metadata arrived and assigned
    itself nothing) is detected by comparing two snapshots, and the leader's own in-flight
    assignment makes them equal again. `need_rejoin()` turns false, the finished join is never
    collected: no partitions, heartbeats stay off, the broker drops the member after
    `session_timeout_ms` and it idles for ever. Java's client counts a pending join as "rejoin
    needed" (`rejoinNeededOrPending`); this does the same, for every KafkaConsumer of the
    process (importing the backbone installs it: bare consumers with a group benefit too).
    Without the fix a member polling every 5 ms stayed unassigned 6 times out of 6
    (tests/runtime/test_kafka_group_join.py).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    need_rejoin = getattr(type(coordinator), "need_rejoin", None)
    return hasattr(coordinator, "_join_task") and bool(
        getattr(need_rejoin, "langerhans_pending_join", False)
    )


def join_pending(consumer: KafkaConsumer) -> bool:
    """True while this member has a group join in flight (kafka-python 3.x internals)."""
    coordinator = getattr(consumer, "_coordinator", None)
    return getattr(coordinator, "_join_task", None) is not None


def _row(envelope: Envelope) -> tuple[str, str, int, int]:
    return (envelope.event_id, envelope.topic, envelope.partition, envelope.offset)


def await_topic_metadata(servers: str, topics: list[str], timeout_s: float = 30.0) -> list[str]:
    """Wait until the broker reports partitions for `topics`; returns those still missing.

    A service started before its topics exist would otherwise join its group with nothing to
    assign and wait for the next metadata-triggered rebalance; waiting here first starts it
    with its partitions.
    """
    probe = KafkaConsumer(bootstrap_servers=servers)
    try:
        deadline = time.monotonic() + timeout_s
        missing = list(topics)
        while missing and time.monotonic() < deadline:
            missing = [t for t in missing if not probe.partitions_for_topic(t)]
            if missing:
                time.sleep(0.5)
        return missing
    finally:
        probe.close()
