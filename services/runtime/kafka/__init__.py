"""The Kafka event backbone: CloudEvents envelopes, the producer, the consumer runner.

    producer = EventProducer(servers, source="cgm-ingestion", clock=clock)
    runner = ConsumerRunner(RunnerConfig(group_id=..., topics=[...], bootstrap_servers=servers),
                            handler, session_factory, message_type=GlucoseReading)
    runner.run()   # until SIGTERM

Events caused by a state change go through `services.runtime.outbox`, not the producer.
"""

from services.runtime.kafka.consumer import ConsumerRunner, Handler, RunnerConfig
from services.runtime.kafka.envelope import (
    CONTENT_TYPE_PROTOBUF,
    Envelope,
    MalformedEventError,
    ProtoMessage,
    decode_headers,
    encode_headers,
    envelope_from_record,
    new_envelope,
)
from services.runtime.kafka.producer import EventProducer, supports_idempotence

__all__ = [
    "CONTENT_TYPE_PROTOBUF",
    "ConsumerRunner",
    "Envelope",
    "EventProducer",
    "Handler",
    "MalformedEventError",
    "ProtoMessage",
    "RunnerConfig",
    "decode_headers",
    "encode_headers",
    "envelope_from_record",
    "new_envelope",
    "supports_idempotence",
]
