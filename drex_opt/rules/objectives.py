"""The study's vocabulary: the three objectives, how they rank, and how they are shown.

Every module that names, orders or prints the objectives takes them from here, so "best"
means the same thing in a study, its report, its export and the autopilot's best run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: The maximised objectives, in the order Optuna stores a trial's values.
OBJECTIVES = ("grip_success", "delivery_success", "end_to_end_success")
#: Short human names of :data:`OBJECTIVES`, same order.
LABELS = ("grip", "delivery", "end-to-end")
#: ``user_attrs["role"]`` of a study's reference trial (the baseline configuration).
BASELINE_ROLE = "baseline"

#: Which objective decides first, then second, then third (indices into OBJECTIVES).
#: The default is the owner's: end-to-end success, then delivery, then grip.
RANKINGS: dict[str, tuple[int, int, int]] = {
    "e2e": (2, 1, 0),
    "delivery": (1, 2, 0),
    "grip": (0, 1, 2),
}
DEFAULT_RANKING = RANKINGS["e2e"]


def rank_key(values, order: tuple[int, ...] = DEFAULT_RANKING) -> tuple[float, ...]:
    """Sort key (higher is better) of objective ``values`` under ``order``."""
    return tuple(values[i] for i in order)


def run_rank(summary: Mapping[str, Any]) -> tuple[float, ...]:
    """Best-run order of a run summary: the default ranking, then mean reward; missing is worst."""
    def value(key: str) -> float:
        v = summary.get(key)
        return v if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf

    return tuple(value(k) for k in (*rank_key(OBJECTIVES), "mean_reward"))


def trial_means(study, trial) -> tuple[float, float, float]:
    """A trial's objectives: the repeated-seed means where the study has them.

    Repeats are stored as study attribute ``repeats:<trial number>`` (a finished trial
    cannot be changed); without them the trial's own values are returned.
    """
    rep = study.user_attrs.get(f"repeats:{trial.number}")
    if isinstance(rep, dict) and rep.get("mean"):
        return tuple(rep["mean"])  # type: ignore[return-value]
    return tuple(trial.values)  # type: ignore[return-value]


def pct(value: Any, missing: str = "-") -> str:
    """A fraction as a percentage with one decimal (``0.375`` → ``"37.5%"``); ``missing`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return missing
    return f"{value:.1%}"


def best_trial(study, order: tuple[int, ...] = DEFAULT_RANKING):
    """The Pareto trial ranked first by ``order`` (means where repeated); None before any completes."""
    front = study.best_trials
    if not front:
        return None
    return max(front, key=lambda t: rank_key(trial_means(study, t), order))


def from_summary(summary: Mapping[str, Any]) -> tuple[float, float, float]:
    """A completed run's objectives from its ``summary.json``, in :data:`OBJECTIVES` order.

    Raises:
        ValueError: ``"missing metrics: <names>"`` for each objective absent or not a finite number.
    """
    missing = [name for name in OBJECTIVES if isinstance(summary.get(name), bool)
               or not isinstance(summary.get(name), (int, float)) or not math.isfinite(summary[name])]
    if missing:
        raise ValueError(f"missing metrics: {', '.join(missing)}")
    return tuple(float(summary[name]) for name in OBJECTIVES)  # type: ignore[return-value]
