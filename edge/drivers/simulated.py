"""The simulated pump and CGM (sim/drivers.py) behind the edge driver interface.

Fault injection for tests and demos: `ack_loss_rate` makes a share of pump commands reach the
pump (they take effect and appear in its history) while the confirmation never comes back
(`DeliveryUnconfirmedError`) — the dangerous case the uncertain-delivery tracker exists for.
`pump_clock_skew_s` shifts the pump's clock; `link_up` switches the Bluetooth link off.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Literal

from edge.drivers.base import (
    BolusShape,
    CgmReading,
    CommandAck,
    DeliveryUnconfirmedError,
    GlucoseFlag,
    PumpEventKind,
    PumpHistoryEvent,
    PumpRefusedError,
    PumpStatusSnapshot,
)
from sim.drivers import SimulatedCgmDriver, SimulatedPerson, SimulatedPumpDriver
from sim.pump import PumpError

__all__ = ["LinkDownError", "SimCgm", "SimPump"]

_KINDS = {
    "bolus": PumpEventKind.BOLUS_PROGRAMMED,
    "bolus_delivered": PumpEventKind.BOLUS_DELIVERED,
    "temp_basal": PumpEventKind.TEMP_BASAL_STARTED,
    "temp_basal_end": PumpEventKind.TEMP_BASAL_ENDED,
    "suspend": PumpEventKind.SUSPENDED,
    "resume": PumpEventKind.RESUMED,
    "basal": PumpEventKind.BASAL_DELIVERED,
    "alarm": PumpEventKind.ALARM,
}
_EPOCH = datetime.fromtimestamp(0).astimezone()


class LinkDownError(ConnectionError):
    """The Bluetooth link to the device is down."""


class SimPump:
    """`PumpDriver` over one simulated person's pump."""

    def __init__(
        self,
        person: SimulatedPerson,
        *,
        serial: str,
        ack_loss_rate: float = 0.0,
        seed: int = 0,
        pump_clock_skew_s: float = 0.0,
    ) -> None:
        if not 0.0 <= ack_loss_rate <= 1.0:
            raise ValueError("ack_loss_rate must be within 0–1")
        self._person = person
        self._driver = SimulatedPumpDriver(person)
        self.serial = serial
        self.model = "Langerhans simulated pump"
        self.ack_loss_rate = ack_loss_rate
        self.pump_clock_skew_s = pump_clock_skew_s
        self.link_up = True
        self.acks_lost = 0
        self._rng = random.Random(seed)
        # The simulator stamps pump records at the start of its 5-minute step; a real pump
        # stamps a command's record when it acts. Reconciling a lost answer against history
        # needs the latter (a record minutes early falls outside the matching window and would
        # read as "not delivered"), so records made by commands keep the clock time they ran.
        self._acted_at: dict[int, datetime] = {}

    @property
    def person(self) -> SimulatedPerson:
        return self._person

    def _pump_now(self) -> datetime:
        return self._person.clock.now() + timedelta(seconds=self.pump_clock_skew_s)

    def _check_link(self) -> None:
        if not self.link_up:
            raise LinkDownError("pump link down")

    async def status(self) -> PumpStatusSnapshot:
        self._check_link()
        s = self._driver.status()
        return PumpStatusSnapshot(
            pump_time=self._pump_now(),
            reservoir_u=s.reservoir_u,
            battery_pct=s.battery_pct,
            suspended=s.suspended or s.fault is not None,
            scheduled_basal_u_per_h=s.scheduled_basal_u_per_h,
            temp_basal_u_per_h=s.temp_basal_u_per_h,
            temp_basal_remaining_min=s.temp_basal_remaining_min,
            bolus_in_progress=s.bolus_remaining_u > 0,
            last_history_sequence=len(self._person.pump.history) - 1,
        )

    async def history_since(self, after_sequence: int) -> list[PumpHistoryEvent]:
        self._check_link()
        self._person.sync()
        skew = timedelta(seconds=self.pump_clock_skew_s)
        out = []
        history = self._person.pump.history
        for i in range(max(0, after_sequence + 1), len(history)):
            e = history[i]
            kind = _KINDS.get(e.kind, PumpEventKind.OTHER)
            duration = (
                int(e.detail)
                if kind is PumpEventKind.TEMP_BASAL_STARTED and e.detail.isdigit()
                else 0
            )
            out.append(
                PumpHistoryEvent(
                    sequence=i,
                    timestamp=self._acted_at.get(i, self._person.timestamp(e.t_min)) + skew,
                    kind=kind,
                    amount_u=e.amount_u,
                    duration_min=duration,
                    reference=f"{self.serial}-{i}"
                    if kind is PumpEventKind.BOLUS_PROGRAMMED
                    else "",
                    detail=e.detail,
                )
            )
        return out

    def _stamp(self, before: int) -> None:
        now = self._person.clock.now()
        for i in range(before, len(self._person.pump.history)):
            self._acted_at[i] = now

    def _finish(self, accepted_u: float | None = None, reference: str = "") -> CommandAck:
        # the pump has acted; whether the hub hears about it is the injected fault
        if self.ack_loss_rate and self._rng.random() < self.ack_loss_rate:
            self.acks_lost += 1
            raise DeliveryUnconfirmedError("no confirmation from the pump (injected)")
        return CommandAck(pump_time=self._pump_now(), accepted_u=accepted_u, reference=reference)

    async def set_temp_basal(self, rate_u_per_h: float, duration_min: int) -> CommandAck:
        self._check_link()
        self._person.sync()  # records the simulation adds up to now keep their own times
        before = len(self._person.pump.history)
        try:
            self._driver.set_temp_basal(rate_u_per_h, duration_min)
        except PumpError as exc:
            raise PumpRefusedError(str(exc)) from exc
        self._stamp(before)
        return self._finish()

    async def cancel_temp_basal(self) -> CommandAck:
        self._check_link()
        self._person.sync()  # records the simulation adds up to now keep their own times
        before = len(self._person.pump.history)
        try:
            self._driver.cancel_temp_basal()
        except PumpError as exc:
            raise PumpRefusedError(str(exc)) from exc
        self._stamp(before)
        return self._finish()

    async def bolus(self, shape: BolusShape) -> CommandAck:
        self._check_link()
        kind: Literal["standard", "extended", "dual"] = (
            "standard"
            if shape.immediate_pct >= 100
            else "extended"
            if shape.immediate_pct <= 0
            else "dual"
        )
        self._person.sync()  # records the simulation adds up to now keep their own times
        before = len(self._person.pump.history)
        try:
            accepted = self._driver.deliver_bolus(
                shape.insulin_u,
                kind,
                extended_min=shape.extended_duration_min,
                immediate_fraction=shape.immediate_pct / 100.0,
            )
        except PumpError as exc:
            raise PumpRefusedError(str(exc)) from exc
        self._stamp(before)
        index = len(self._person.pump.history) - 1
        return self._finish(accepted, f"{self.serial}-{index}")

    async def suspend(self) -> CommandAck:
        self._check_link()
        self._person.sync()  # records the simulation adds up to now keep their own times
        before = len(self._person.pump.history)
        try:
            self._driver.suspend()
        except PumpError as exc:
            raise PumpRefusedError(str(exc)) from exc
        self._stamp(before)
        return self._finish()

    async def resume(self) -> CommandAck:
        self._check_link()
        self._person.sync()  # records the simulation adds up to now keep their own times
        before = len(self._person.pump.history)
        try:
            self._driver.resume()
        except PumpError as exc:
            raise PumpRefusedError(str(exc)) from exc
        self._stamp(before)
        return self._finish()


class SimCgm:
    """`CgmDriver` over one simulated person's sensor."""

    def __init__(self, person: SimulatedPerson, *, sensor_id: str) -> None:
        self._driver = SimulatedCgmDriver(person)
        self._person = person
        self.sensor_id = sensor_id
        self.model = "Langerhans simulated CGM"
        self.link_up = True

    async def readings_since(self, after_sequence: int) -> list[CgmReading]:
        if not self.link_up:
            raise LinkDownError("CGM link down")
        self._person.sync()
        out = []
        for r in self._person.readings:
            if r.sequence <= after_sequence:
                continue
            flag = (
                GlucoseFlag.LOW
                if r.flag == "LOW"
                else GlucoseFlag.HIGH
                if r.flag == "HIGH"
                else None
            )
            out.append(
                CgmReading(
                    sensor_id=self.sensor_id,
                    sequence=r.sequence,
                    timestamp=r.timestamp,
                    glucose_mg_dl=float(r.glucose_mg_dl),
                    flag=flag,
                )
            )
        return out
