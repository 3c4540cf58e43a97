"""Durable outbox: order, acknowledgement, size policy, and a SIGKILL in the middle of writing."""

import os
import signal
import subprocess
import sys
import textwrap

from edge.outbox import Outbox, RecordKind


def test_enqueue_peek_ack_in_order(tmp_path):
    box = Outbox(tmp_path / "o.db")
    seqs = [box.enqueue(RecordKind.CGM_READING, f"r{i}".encode()) for i in range(10)]
    assert seqs == sorted(seqs)
    assert [r.payload for r in box.peek(3)] == [b"r0", b"r1", b"r2"]
    assert box.ack(seqs[4]) == 5
    assert [r.sequence for r in box.peek()] == seqs[5:]
    assert box.peek(after=seqs[8])[0].sequence == seqs[9]
    box.ack(seqs[-1])
    # sequence numbers are never reused, even with an empty table and after reopening
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert box.enqueue(RecordKind.CGM_READING, b"next") > seqs[-1]
    box.close()


def test_snapshots_are_trimmed_protected_records_never(tmp_path):
    box = Outbox(tmp_path / "o.db", max_snapshot_records=5, protected_warning_records=50)
    for i in range(100):
        box.enqueue(RecordKind.CGM_READING, f"cgm{i}".encode())
        box.enqueue(RecordKind.HEARTBEAT, f"hb{i}".encode())
        if i % 10 == 0:
            box.enqueue(RecordKind.PUMP_HISTORY, f"dose{i}".encode())
            box.enqueue(RecordKind.COMMAND_OUTCOME, f"out{i}".encode())
    records = box.peek(limit=10_000)
    kinds = [r.kind for r in records]
    assert kinds.count(RecordKind.CGM_READING) == 100
    assert kinds.count(RecordKind.PUMP_HISTORY) == 10
    assert kinds.count(RecordKind.COMMAND_OUTCOME) == 10
    assert [r.payload for r in records if r.kind is RecordKind.HEARTBEAT] == [
        f"hb{i}".encode() for i in range(95, 100)
    ]
    assert box.under_pressure
    box.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edge.outbox import Outbox, RecordKind
    box = Outbox(Path(sys.argv[1]))
    i = 0
    while True:
        seq = box.enqueue(RecordKind.CGM_READING, b"reading-%d" % i)
        # only reported once enqueue returned, i.e. once committed
        sys.stdout.write("%d %d\\n" % (seq, i))
        sys.stdout.flush()
        i += 1
    """
)


def test_sigkill_mid_write_loses_nothing_committed(tmp_path):
    path = tmp_path / "crash.db"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            cwd=os.getcwd(),
        )
        assert proc.stdout is not None
        committed = []
        for line in proc.stdout:
            seq, i = map(int, line.split())
            committed.append((seq, i))
            if len(committed) >= 200 + 50 * round_:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        box = Outbox(path)
        stored = {r.sequence: r.payload for r in box.peek(limit=100_000)}
        for seq, i in committed:
            assert stored[seq] == b"reading-%d" % i
        sequences = list(stored)
        assert sequences == sorted(sequences)
        # the cloud acknowledges what it got; the next writer continues after it
        box.ack(committed[-1][0])
        box.close()
