"""The load factor the agent multiplies its weight by: full up to the target load, less beyond it.

factor(load) = 100 % up to `targetPercent`, then falling linearly to `minPercent` at saturation (100 %
load), never lower. The load it is applied to is the load the pod would carry at full weight: the measured
load divided by the factor in force (smoothed like the load, so both lag HAProxy alike). The weight moves
the load itself (a pod told 40 % gets about 40 % of its share): judged on the load it measures under a
lowered weight, a starved pod would look fine again and swing back to full weight, again and again.

The load of each figure is smoothed (an exponential average; the sidecar gives it a time constant of half an
agent interval: a step in load is 86 % felt after one HAProxy poll), and the factor HAProxy is told moves
only by `stepPercent` points or more, or onto a bound (full weight, `minPercent`), so a steady load does not
give HAProxy a new weight at every poll. A figure missing from an evaluation leaves
its smoothed value where it was; with no figure at all the factor stays as it is. Load alone never makes
the weight 0: taking a pod out is what `down` and `drain` are for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from candor_sidecar.config import LoadWeightConfig
from candor_sidecar.load import Figure, LoadReading

FULL = 100


@dataclass(frozen=True)
class LoadDecision:
    """What the load says about the weight, after one evaluation."""

    factor: int  # percent the ramp's weight is multiplied by, from minPercent to 100
    figure: str | None  # the figure holding the factor below 100 ("cpu", "occupancy"), None at full weight
    reason: str  # for the agent's `#`: "cpu 88% > 70%" (the load at full weight), "occupancy saturated"
    detail: str = ""  # what the figure is made of: "utilisation: 0.88 of 1 cores (limit) used"
    loads: dict[str, float] = field(default_factory=dict)  # smoothed load per figure as measured, percent
    changes: int = 0  # times the factor moved since the sidecar started (how often HAProxy got a new weight)


FULL_WEIGHT = LoadDecision(FULL, None, "")


def load_factor(load: float, target: float, minimum: float) -> float:
    """The unrounded factor in percent for a load (all in percent)."""
    if load <= target:
        return float(FULL)
    if load >= 100:
        return minimum
    return FULL - (FULL - minimum) * (load - target) / (100 - target)


class LoadWeight:
    """Smoothed, stepped load factor; `update` once per evaluation with the time it was taken at."""

    def __init__(self, config: LoadWeightConfig, time_constant: float) -> None:
        self.config = config
        self.time_constant = max(time_constant, 0.1)
        self._smoothed: dict[str, float] = {}
        self._details: dict[str, Figure] = {}
        self._at: dict[str, float] = {}
        self._factor_in_force = float(FULL)  # the factor, smoothed as the load is
        self._factor_at: float | None = None
        self.decision = FULL_WEIGHT

    def _smooth(self, name: str, figure: Figure, now: float) -> None:
        previous = self._smoothed.get(name)
        if previous is None:
            self._smoothed[name] = figure.percent
        else:
            alpha = 1.0 - math.exp(-max(now - self._at[name], 0.0) / self.time_constant)
            self._smoothed[name] = previous + alpha * (figure.percent - previous)
        self._details[name] = figure
        self._at[name] = now

    def update(self, reading: LoadReading, now: float) -> LoadDecision:
        config = self.config
        for name in config.figures:
            figure = reading.get(name)
            if figure is not None and math.isfinite(figure.percent):
                self._smooth(name, figure, now)
        if self._factor_at is not None:
            alpha = 1.0 - math.exp(-max(now - self._factor_at, 0.0) / self.time_constant)
            self._factor_in_force += alpha * (self.decision.factor - self._factor_in_force)
        self._factor_at = now
        if not self._smoothed:
            return self.decision
        name, measured = max(self._smoothed.items(), key=lambda item: item[1])
        load = measured * FULL / self._factor_in_force  # at full weight
        wanted = load_factor(load, config.target_percent, config.min_percent)
        current = self.decision.factor
        target = round(wanted)
        minimum = math.ceil(config.min_percent)
        at_bound = target >= FULL or target <= minimum
        if target != current and (abs(target - current) >= config.step_percent or at_bound):
            current = max(minimum, min(FULL, target), 1)
        changes = self.decision.changes + (current != self.decision.factor)
        reason = detail = ""
        holding = None
        if current < FULL:
            holding = name
            figure = self._details[name]
            # At full weight the pod would be saturated, or overloaded by an estimated multiple nobody needs.
            reason = f"{name} {load:.0f}% > {config.target_percent:g}%" if load < 100 else f"{name} saturated"
            detail = (f"the load at full weight: {measured:.0f}% measured at x{self._factor_in_force:.0f}%; "
                      f"{figure.source}: {figure.detail}")
        self.decision = LoadDecision(current, holding, reason, detail, dict(self._smoothed), changes)
        return self.decision
