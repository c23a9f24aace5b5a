"""Behavioural early stopping of a trial, judged from its live progress.

Optuna cannot prune multi-objective studies through ``trial.report``; drex-opt follows
the child's progress events instead and stops a trial (state PRUNED, reason recorded)
when its behaviour shows it cannot succeed. The rule, in order:

1. **Never approached a box.** Past ``no_approach_fraction`` of its budget, the share of
   episodes that came near a box (``environment/to_pickup``) has never exceeded 0.001,
   while a completed trial of the study had clearly approached (above ``min_approach``)
   at the same point of its budget: the drone flies away or crashes at once, and the
   budget was enough for others. (Early in a run only crashed episodes have finished, so
   an absolute threshold alone would stop every short trial.)
2. **Far behind the study.** Past ``trail_fraction`` of its budget, its grip success is
   below ``trail_ratio`` times the median grip success the study's completed trials had
   at the same point of their budgets — only where at least ``min_reference_trials``
   completed trials exist and that median is at least ``min_reference`` (a reference that
   is itself near zero says nothing).

The thresholds are deliberately loose: a pruned trial that would have been the best is
worse than a few wasted minutes. The benchmark ``python -m benchmarks.early_stopping`` runs the
pruned trials to the end to check that none would have been among the best.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

GRIP_KEY = "environment/perfect_grip"
APPROACH_KEY = "environment/to_pickup"

Curve = list[tuple[float, float, float]]  # (fraction of the budget, grip success, approach share)


@dataclass(frozen=True)
class EarlyStopRule:
    no_approach_fraction: float = 0.3
    min_approach: float = 0.05
    trail_fraction: float = 0.5
    trail_ratio: float = 0.25
    min_reference: float = 0.2
    min_reference_trials: int = 3

    def check(self, history: Sequence[dict], total_steps: int, references: Sequence[Curve]) -> str | None:
        """The reason to stop now, or None.

        Args:
            history: the trial's progress events so far (``agent_steps`` and ``environment/*``).
            total_steps: the trial's budget in agent steps.
            references: curves of the study's completed trials (see :func:`curve_of`).
        """
        if not history or total_steps <= 0:
            return None
        fraction = history[-1].get("agent_steps", 0) / total_steps
        approach = [h.get(APPROACH_KEY) for h in history if isinstance(h.get(APPROACH_KEY), (int, float))]
        if fraction >= self.no_approach_fraction and approach and max(approach) <= 0.001:
            others = [v for v in (value_at(c, fraction, 2) for c in references) if v is not None]
            if others and max(others) > self.min_approach:
                return (f"never approached a box in {fraction:.0%} of its budget (to_pickup never above 0.001; "
                        f"a completed trial reached {max(others):.1%} by then)")
        grip = history[-1].get(GRIP_KEY)
        if fraction < self.trail_fraction or not isinstance(grip, (int, float)):
            return None
        at_point = [v for v in (value_at(c, fraction, 1) for c in references) if v is not None]
        if len(at_point) < self.min_reference_trials:
            return None
        median = statistics.median(at_point)
        if median >= self.min_reference and grip < self.trail_ratio * median:
            return (f"grip success {grip:.1%} at {fraction:.0%} of its budget, below {self.trail_ratio:.0%} "
                    f"of the completed trials' median {median:.1%} at that point")
        return None


def curve_of(history: Sequence[dict], total_steps: int, points: int = 20) -> Curve:
    """A trial's (fraction, grip, approach) curve, at most ``points`` entries (kept in user_attrs)."""
    raw = [(h["agent_steps"] / total_steps, float(h[GRIP_KEY]), float(h.get(APPROACH_KEY) or 0.0))
           for h in history
           if isinstance(h.get(GRIP_KEY), (int, float)) and h.get("agent_steps") and total_steps > 0]
    if len(raw) > points:
        step = len(raw) / points
        raw = [raw[int(i * step)] for i in range(points - 1)] + [raw[-1]]
    return [(round(f, 4), round(g, 4), round(a, 4)) for f, g, a in raw]


def value_at(curve: Sequence[Sequence[float]], fraction: float, column: int = 1) -> float | None:
    """Column ``column`` (1 grip, 2 approach) of a curve at ``fraction`` of its budget:
    the last point at or before it, None before the first point."""
    value = None
    for point in curve:
        if point[0] > fraction + 1e-9:
            break
        value = point[column] if len(point) > column else None
    return value
