"""Garbage-collector settings for a long-running service process.

CPython's cyclic collector walks every tracked object of the generations it collects. A
service's heap is mostly what start-up created (modules, SQLAlchemy, protobuf, gRPC, Kafka
clients), and a full (generation 2) collection walked all of it: in the cgm-ingestion and
alerts consumers a fifth of the CPU per reading went to the collector, with single pauses of
100-340 ms (gc.callbacks in a replay of 15,000 readings), each a stall of every reading in
flight. `settle_heap()` is called once, after the imports: it moves what exists into the
permanent generation (`gc.freeze`, never collected, never walked) and lets more young
objects accumulate between collections. Reference counting still frees everything that is
not in a cycle at once; cycles are still collected, only less often.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

# Allocations (minus deallocations) between young-generation collections (CPython: 700).
# A poll batch of 2,000 records keeps ~20,000 objects alive until its commit (envelopes,
# readings, outbox rows): at 10,000 every batch paid one or two young collections walking
# them, 7 µs per reading in cgm-ingestion's replay harness (26 collections in 34,118
# records, 180-250 ms); at 50,000 the same replay ran one (15-21 ms), 85-88 -> 78-79 µs
# per record. Cycles still go, only later.
YOUNG_THRESHOLD = 50_000


def settle_heap(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Freeze the start-up heap and collect young objects less often (call once, early)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
