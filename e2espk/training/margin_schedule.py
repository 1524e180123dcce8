"""Margin warm-up of the AM/AAM-softmax head: a pure ``margin_at(step)``.

Training with the full angular margin from the first step makes the classification problem
hard before the embeddings separate anything; recipes (WeSpeaker, ECAPA-TDNN) hold the margin
at 0 for a few epochs and then raise it to its final value. The margin is a function of the
optimizer step alone, so a resumed run (which restores the step) continues the same schedule.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MarginSchedule:
    """``start`` for ``hold_steps`` steps, then linear to ``end`` over ``ramp_steps`` steps.

    With ``hold_steps == ramp_steps == 0`` the margin is ``end`` from the first step.
    """

    end: float
    start: float = 0.0
    hold_steps: int = 0
    ramp_steps: int = 0

    @classmethod
    def from_epochs(
        cls, end: float, start: float, hold_epochs: float, ramp_epochs: float, steps_per_epoch: int
    ) -> MarginSchedule:
        """A schedule given in (possibly fractional) epochs of ``steps_per_epoch`` steps."""
        return cls(
            end,
            start,
            round(hold_epochs * steps_per_epoch),
            round(ramp_epochs * steps_per_epoch),
        )

    def margin_at(self, step: int) -> float:
        """The margin to train step ``step`` (0-based) with."""
        if self.hold_steps == 0 and self.ramp_steps == 0:
            return self.end
        if step < self.hold_steps:
            return self.start
        if self.ramp_steps == 0:
            return self.end
        progress = min((step - self.hold_steps) / self.ramp_steps, 1.0)
        return self.start + (self.end - self.start) * progress
