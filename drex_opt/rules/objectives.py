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


def baseline_trial(study):
    """The study's completed reference trial (role :data:`BASELINE_ROLE`), or None."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("role") == BASELINE_ROLE and t.state.name == "COMPLETE":
            return t
    return None


def versus_baseline(study, trial) -> dict | None:
    """How ``trial`` compares with the study's baseline trial (None without one).

    In a warm study the baseline trial is "continue the drone unchanged", the control every
    other trial must beat. ``gain`` is trial minus baseline per objective (means where
    repeated); ``beat`` says whether the trial ranks above it (the default ranking).
    """
    base = baseline_trial(study)
    if base is None:
        return None
    mine, theirs = trial_means(study, trial), trial_means(study, base)
    return {
        "baseline_trial": base.number, "trial": trial.number,
        "baseline": dict(zip(OBJECTIVES, theirs)), "values": dict(zip(OBJECTIVES, mine)),
        "gain": {name: m - b for name, m, b in zip(OBJECTIVES, mine, theirs)},
        "beat": trial.number != base.number and rank_key(mine) > rank_key(theirs),
    }


def describe_versus(versus: Mapping[str, Any] | None, warm: bool = False) -> str | None:
    """One sentence for :func:`versus_baseline`'s result; ``warm``: the study's trials
    continued a drone, so its baseline trial is that drone continued unchanged."""
    if versus is None:
        return None
    control = "continuing the drone unchanged" if warm else "the baseline trial"
    b, gain = versus["baseline"], versus["gain"]
    head = (f"{control} (trial {versus['baseline_trial']}) had grip {pct(b[OBJECTIVES[0]])}, delivery "
            f"{pct(b[OBJECTIVES[1]])}, end-to-end {pct(b[OBJECTIVES[2]])}")
    if versus["trial"] == versus["baseline_trial"]:
        return f"{head}; it is the best trial itself: no change beat it at this budget"
    verdict = "beats it" if versus["beat"] else "does not beat it"
    return (f"{head}; the winner {verdict}: {100 * gain[OBJECTIVES[2]]:+.1f} pts end-to-end, "
            f"{100 * gain[OBJECTIVES[1]]:+.1f} pts delivery, {100 * gain[OBJECTIVES[0]]:+.1f} pts grip")
