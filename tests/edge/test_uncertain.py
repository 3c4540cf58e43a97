"""Uncertain delivery: lost pump acks pause automatic dosing and are never re-sent unreconciled."""

import random
from datetime import timedelta

import pytest

from edge.drivers.base import PumpEventKind, PumpHistoryEvent
from edge.uncertain import DeliveryState, UncertainDeliveryTracker
from tests.edge._commands import MANUAL, T0, make_command


class FakePump:
    """Executes commands into a history; ground truth for the test."""

    def __init__(self) -> None:
        self.history: list[PumpHistoryEvent] = []
        self.received: list[str] = []

    def execute(self, command, at):
        self.received.append(command.command_id)
        action = command.WhichOneof("action")
        if action == "deliver_bolus":
            kind, amount = PumpEventKind.BOLUS_PROGRAMMED, command.deliver_bolus.insulin_u
        elif action == "set_temp_basal":
            kind, amount = PumpEventKind.TEMP_BASAL_STARTED, command.set_temp_basal.rate_u_per_h
        else:
            kind, amount = PumpEventKind.TEMP_BASAL_ENDED, 0.0
        # the pump's clock runs up to 60 s off the hub's
        self.history.append(
            PumpHistoryEvent(len(self.history), at + timedelta(seconds=30), kind, amount)
        )


def test_lost_acks_pause_dosing_and_are_never_resent(tmp_path):
    rng = random.Random(7)
    tracker = UncertainDeliveryTracker(tmp_path / "u.db")
    pump = FakePump()
    now = T0
    sent_to_pump_while_uncertain = 0
    uncertain_cycles = paused_cycles = 0
    lost = executed_but_unacked = 0
    truth: dict[str, bool] = {}
    sequence = 0
    for i in range(1000):
        sequence += 1
        if i % 3 == 0:
            cmd = make_command(
                sequence=sequence, issued_at=now, bolus_u=round(rng.uniform(0.1, 1), 2)
            )
        else:
            cmd = make_command(
                sequence=sequence, issued_at=now, rate_u_per_h=round(rng.uniform(0.1, 3), 2)
            )
        # pump history is read every 15 minutes (complete through the pump's clock)
        if i % 3 == 0:
            tracker.reconcile(pump.history, complete_through=now)
        pending = tracker.uncertain()
        if pending:
            uncertain_cycles += 1
            # a naive agent would retry the uncertain command: the tracker refuses it
            for p in pending:
                retry = make_command(sequence=sequence, issued_at=now, rate_u_per_h=1.0)
                retry.command_id = p.command_id
                with pytest.raises(ValueError, match="never re-sent"):
                    tracker.begin(retry, now)
            if tracker.blocking_reason(cmd) is not None:
                paused_cycles += 1
                now += timedelta(minutes=5)
                continue
            sent_to_pump_while_uncertain += 1
        tracker.begin(cmd, now)
        roll = rng.random()
        if roll < 0.05:  # lost on the way to the pump: not executed, no ack
            lost += 1
            truth[cmd.command_id] = False
            tracker.unconfirmed(cmd.command_id, "timeout")
        elif roll < 0.10:  # executed, but the ack was lost
            executed_but_unacked += 1
            pump.execute(cmd, now)
            truth[cmd.command_id] = True
            tracker.unconfirmed(cmd.command_id, "timeout")
        else:
            pump.execute(cmd, now)
            tracker.confirmed(cmd.command_id)
        now += timedelta(minutes=5)
    tracker.reconcile(pump.history, complete_through=now)
    assert lost + executed_but_unacked > 50  # ~10 % of the commands that went out
    assert len(pump.received) == len(set(pump.received))  # nothing reached the pump twice
    assert sent_to_pump_while_uncertain == 0
    assert paused_cycles == uncertain_cycles > 0
    for command_id, delivered in truth.items():
        expected = DeliveryState.DELIVERED if delivered else DeliveryState.ABSENT
        assert tracker.state(command_id) is expected
    assert not tracker.automatic_dosing_paused
    tracker.close()


def test_reducing_commands_and_manual_ones_still_pass(tmp_path):
    tracker = UncertainDeliveryTracker(tmp_path / "u.db")
    first = make_command(sequence=1, issued_at=T0, bolus_u=0.5)
    tracker.begin(first, T0)
    tracker.unconfirmed(first.command_id, "link dropped")
    assert tracker.automatic_dosing_paused
    zero_temp = make_command(sequence=2, issued_at=T0, rate_u_per_h=0.0)
    cancel = make_command(sequence=3, issued_at=T0, rate_u_per_h=None)
    high_temp = make_command(sequence=4, issued_at=T0, rate_u_per_h=2.0)
    manual = make_command(sequence=5, issued_at=T0, rate_u_per_h=1.0, origin=MANUAL)
    assert tracker.blocking_reason(zero_temp) is None
    assert tracker.blocking_reason(cancel) is None
    assert tracker.blocking_reason(manual) is None
    reason = tracker.blocking_reason(high_temp)
    assert reason is not None
    assert "paused" in reason
    tracker.close()


def test_reconciliation_needs_the_dose_within_a_tenth_of_a_unit(tmp_path):
    tracker = UncertainDeliveryTracker(tmp_path / "u.db")
    cmd = make_command(sequence=1, issued_at=T0, bolus_u=2.0)
    tracker.begin(cmd, T0)
    tracker.unconfirmed(cmd.command_id, "timeout")
    # history so far ends before the window closes: stays uncertain
    assert tracker.reconcile([], complete_through=T0 + timedelta(seconds=60)) == []
    other = PumpHistoryEvent(1, T0 + timedelta(seconds=10), PumpEventKind.BOLUS_PROGRAMMED, 1.5)
    # a bolus of another size: not this one, and not "absent" either
    assert tracker.reconcile([other], complete_through=T0 + timedelta(hours=1)) == []
    assert tracker.state(cmd.command_id) is DeliveryState.UNCERTAIN
    match = PumpHistoryEvent(2, T0 + timedelta(seconds=20), PumpEventKind.BOLUS_PROGRAMMED, 1.95)
    (res,) = tracker.reconcile([other, match], complete_through=T0 + timedelta(hours=1))
    assert res.state is DeliveryState.DELIVERED
    assert res.delivered_u == pytest.approx(1.95)
    tracker.close()


def test_restart_mid_send_makes_it_uncertain(tmp_path):
    tracker = UncertainDeliveryTracker(tmp_path / "u.db")
    cmd = make_command(sequence=1, issued_at=T0, bolus_u=1.0)
    tracker.begin(cmd, T0)
    tracker.close()  # the hub dies before the pump answered
    tracker = UncertainDeliveryTracker(tmp_path / "u.db")
    assert tracker.state(cmd.command_id) is DeliveryState.UNCERTAIN
    assert tracker.automatic_dosing_paused
    tracker.close()
