"""Reuse the real-broker fixtures of the runtime tests."""

from tests.runtime.conftest import kafka_bootstrap, make_topic

__all__ = ["kafka_bootstrap", "make_topic"]
