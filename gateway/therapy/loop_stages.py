"""The loop's autonomy is enabled in stages (brief §5), as AndroidAPS's objectives do.

open loop → low-glucose suspend → closed loop with temp basals → closed loop with micro-boluses.
A person or caregiver may move down to any stage at any time, and back up to any stage the
person has already used; a stage never used before opens only one step above the highest one
used so far, and only after the person has spent the minimum time in that highest stage
(summed over every version of the settings, so a day back in open loop while ill does not
start the count again). The minimum times follow AndroidAPS's mandatory waits: open loop 7 days
(objective 4) plus 7 days understanding its suggestions (objective 5) before the loop acts;
low-glucose suspend 5 days (objective 6); closed loop with temp basals 1 day (objective 7) plus
7 days with autosens (objective 8) before micro-boluses (objective 9).

A clinician may set any stage (a supervised start, as commercial closed loops begin in
automatic mode after training); the audit row records who did it and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.errors import GuardrailViolation
from gateway.therapy.schemas import LoopMode

__all__ = ["LOOP_STAGES", "MIN_TIME_IN_STAGE", "ModeSpell", "check_loop_mode_change"]

LOOP_STAGES: Final[tuple[LoopMode, ...]] = (
    "open_loop",
    "low_glucose_suspend",
    "closed_loop_temp_basal",
    "closed_loop_smb",
)
MIN_TIME_IN_STAGE: Final[dict[LoopMode, timedelta]] = {
    "open_loop": timedelta(days=14),
    "low_glucose_suspend": timedelta(days=5),
    "closed_loop_temp_basal": timedelta(days=8),
}


@dataclass(frozen=True, slots=True)
class ModeSpell:
    """One settings version's loop mode and when it took effect."""

    loop_mode: str  # a LoopMode, as stored
    since: datetime


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _time_in(stage: str, history: Sequence[ModeSpell], now: datetime) -> timedelta:
    total = timedelta(0)
    for spell, following in zip(history, [*history[1:], None], strict=True):
        if spell.loop_mode == stage:
            until = now if following is None else _aware(following.since)
            total += max(timedelta(0), until - _aware(spell.since))
    return total


def check_loop_mode_change(
    history: Sequence[ModeSpell], requested: LoopMode, now: datetime, *, supervised: bool
) -> None:
    """Refuse (GuardrailViolation) a loop mode the person has not reached the stage for.

    `history` is every earlier version, oldest first; `supervised` is a clinician's change.
    """
    if supervised:
        return
    highest = max((LOOP_STAGES.index(s.loop_mode) for s in history), default=0)
    wanted = LOOP_STAGES.index(requested)
    if wanted <= highest:
        return
    current_stage = LOOP_STAGES[highest]
    if wanted > highest + 1:
        raise GuardrailViolation(
            f"loop_mode {requested} is more than one stage above {current_stage}, the highest "
            f"used so far; the next stage is {LOOP_STAGES[highest + 1]}",
            details={"highest_stage_used": current_stage, "next_stage": LOOP_STAGES[highest + 1]},
        )
    needed = MIN_TIME_IN_STAGE[current_stage]
    spent = _time_in(current_stage, history, now)
    if spent < needed:
        opens_at = now + (needed - spent)
        raise GuardrailViolation(
            f"loop_mode {requested} opens after {needed.days} days in {current_stage} "
            f"({spent.total_seconds() / 86400:.1f} days so far); a clinician can start it "
            "under supervision",
            details={
                "highest_stage_used": current_stage,
                "days_needed": needed.days,
                "days_spent": round(spent.total_seconds() / 86400, 2),
                "opens_at": opens_at.isoformat(),
            },
        )
