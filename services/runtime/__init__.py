"""Shared runtime of every deployable: settings, clock, Kafka, gRPC, storage, logs, metrics."""
