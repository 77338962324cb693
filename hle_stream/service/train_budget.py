"""How much of the stream the daemon trains on (``--train-budget``).

Every event is predicted, and every labelled event goes through the replay memory's insertion
rule (so a new class enters the memory at once and later steps replay it), but gradient steps,
the expensive part, are taken only at the rate the budget allows. This is the setting of
computationally budgeted continual learning: Ghunaim et al. (CVPR 2023, "Real-Time Evaluation
in Online Continual Learning") let the stream not wait for the model, so a learner twice as slow
as the stream trains on half of it while every sample is still predicted; Prabhu et al. (CVPR
2023, "Computationally Budgeted Continual Learning: What Does Matter?") find that under a fixed
compute per time step, training on the new data plus uniform samples of the memory is as good
as any costlier method. Both hold up here: the skipped events still reach the memory, and the
steps taken replay it.

- ``unlimited``: train on every labelled micro-batch (today's behaviour, bit for bit); a stream
  faster than the learner makes lag grow without bound.
- a number: at most that many gradient steps per second (a token bucket, one second of burst).
- ``auto`` (the default): keep the consumer lag bounded. The share of labelled micro-batches
  trained on follows the lag, measured in seconds at the daemon's processing pace (the time the
  backlog takes to drain): halved each second while it passes ``HIGH_LAG_S``, raised by
  ``INCREASE`` each second while it stays under ``LOW_LAG_S``. A learner that keeps up never
  skips, so ``auto`` then trains exactly as ``unlimited``.
"""

from __future__ import annotations

import math
import time
from typing import Callable

AUTO, UNLIMITED = "auto", "unlimited"
HIGH_LAG_S = 2.0  # above: train on less
LOW_LAG_S = 0.5  # below: train on more
ADJUST_EVERY_S = 1.0
DECREASE, INCREASE, MIN_SHARE = 0.5, 0.1, 0.01
RATE_HALF_LIFE_S = 5.0  # of the processing-pace estimate


def parse_budget(text: str) -> str:
    """``auto``, ``unlimited`` or a positive number of steps per second (returned as given)."""
    if text in (AUTO, UNLIMITED):
        return text
    try:
        steps = float(text)
    except ValueError:
        steps = math.nan
    if not (steps > 0 and math.isfinite(steps)):
        raise ValueError(f"--train-budget {text!r}: auto, unlimited or a positive number of steps per second")
    return text


class TrainBudget:
    """Decides, per micro-batch, whether its labelled events are trained on or only remembered."""

    def __init__(self, spec: str = AUTO, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = parse_budget(spec)
        self.clock = clock
        self.steps_per_s = None if spec in (AUTO, UNLIMITED) else float(spec)
        self.share = 1.0  # auto: the share of labelled micro-batches trained on
        self._credit = 0.0  # auto: accumulated share; a batch is trained when it reaches 1
        self._tokens = self.steps_per_s or 0.0  # fixed: steps available now
        self._refilled = clock()
        self._adjusted = self._refilled
        self.capacity: float | None = None  # events processed per second of processing (a moving estimate)

    @property
    def in_force(self) -> float:
        """What the budget allows now: the share trained on (auto, unlimited: 1.0), or steps/s."""
        return self.steps_per_s if self.steps_per_s is not None else self.share

    def should_train(self, lag: int | None) -> bool:
        """Called before each micro-batch with the consumer lag behind it (events; ``None``: unknown)."""
        now = self.clock()
        if self.spec == UNLIMITED:
            return True
        if self.steps_per_s is not None:
            self._tokens = min(self.steps_per_s, self._tokens + (now - self._refilled) * self.steps_per_s)
            self._refilled = now
            return self._tokens > 0
        if lag is not None and self.capacity and now - self._adjusted >= ADJUST_EVERY_S:
            self._adjusted = now
            lag_s = lag / self.capacity  # how long the backlog takes to drain at the current pace
            if lag_s > HIGH_LAG_S:
                self.share = max(MIN_SHARE, self.share * DECREASE)
            elif lag_s < LOW_LAG_S:
                self.share = min(1.0, self.share + INCREASE)
        self._credit += self.share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def record(self, events: int, seconds: float, steps: int) -> None:
        """After a micro-batch: how many events it held, how long it took, the gradient steps it
        took (a fixed budget pays for them). Idle polls are not counted: the pace is the
        processing speed, what a backlog drains at."""
        self._tokens -= steps
        if events <= 0 or seconds <= 0:
            return
        pace = events / seconds
        if self.capacity is None:
            self.capacity = pace
        else:
            weight = 1 - 0.5 ** (seconds / RATE_HALF_LIFE_S)
            self.capacity += weight * (pace - self.capacity)
