"""The study's vocabulary: the objectives, how they rank, and how they are shown.

Every module that names, orders or prints the objectives takes them from here, so "best"
means the same thing in a study, its report, its export and the autopilot's best run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: The drone task's maximised objectives, in the order Optuna stores a trial's values when
#: the env logs all three (every built-in env does).
OBJECTIVES = ("grip_success", "delivery_success", "end_to_end_success")
#: The env's own score (``environment/score``, what PufferLib's sweeps maximise by default):
#: the objective of a study on an env that logs none of :data:`OBJECTIVES`.
SCORE = "score"
#: Every objective a study can have. A study optimises the ones its env logs, in this order
#: (its ``objectives`` attribute names them; :func:`study_objectives`).
VOCABULARY = (*OBJECTIVES, SCORE)
#: Short human names.
LABEL = {"grip_success": "grip", "delivery_success": "delivery", "end_to_end_success": "end-to-end", SCORE: "score"}
#: Short human names of :data:`OBJECTIVES`, same order.
LABELS = tuple(LABEL[name] for name in OBJECTIVES)
#: ``user_attrs["role"]`` of a study's reference trial (the baseline configuration).
BASELINE_ROLE = "baseline"

#: Which objective decides first, then second, ... (names; a study uses those it has).
#: The default is the owner's: end-to-end success, then delivery, then grip.
RANKINGS: dict[str, tuple[str, ...]] = {
    "e2e": ("end_to_end_success", "delivery_success", "grip_success", SCORE),
    "delivery": ("delivery_success", "end_to_end_success", "grip_success", SCORE),
    "grip": ("grip_success", "delivery_success", "end_to_end_success", SCORE),
}
DEFAULT_RANKING = RANKINGS["e2e"]


def measured(names) -> tuple[str, ...]:
    """``names`` as a study's objectives: those of :data:`VOCABULARY`, in its order."""
    chosen = set(names)
    return tuple(name for name in VOCABULARY if name in chosen)


def study_objectives(study) -> tuple[str, ...]:
    """The objectives a study optimises, in the order of its trials' values.

    Its ``objectives`` attribute; a study written before objectives could differ has all three.
    """
    names = study.user_attrs.get("objectives")
    if isinstance(names, list) and names and all(n in VOCABULARY for n in names) \
            and len(names) == len(study.directions):
        return tuple(names)
    return OBJECTIVES


def ranked(names, ranking: tuple[str, ...] = DEFAULT_RANKING) -> tuple[str, ...]:
    """``names`` in the order ``ranking`` decides them."""
    return tuple(name for name in ranking if name in names)


def rank_key(values, names=OBJECTIVES, ranking: tuple[str, ...] = DEFAULT_RANKING) -> tuple[float, ...]:
    """Sort key (higher is better) of objective ``values`` (in ``names`` order) under ``ranking``."""
    position = {name: i for i, name in enumerate(names)}
    return tuple(values[position[name]] for name in ranked(names, ranking))


def _measured(summary: Mapping[str, Any], key: str, missing: float | None) -> float | None:
    """A summary's finite number ``key``, else ``missing``."""
    v = summary.get(key)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else missing


def run_rank(summary: Mapping[str, Any]) -> tuple[float, ...]:
    """Best-run order of a run summary: the default ranking, then mean reward; missing is worst."""
    return tuple(_measured(summary, k, -math.inf) for k in (*DEFAULT_RANKING, "mean_reward"))


#: How far (a success rate) one run must trail another before the loop calls it worse:
#: PPO's final-window success wanders a few points from run to run of one drone, so a
#: smaller gap is noise and the newer drone, trained longer, is kept.
CLEARLY_WORSE = 0.05


def clearly_behind(summary: Mapping[str, Any], other: Mapping[str, Any], margin: float = CLEARLY_WORSE) -> bool:
    """Whether run ``summary`` trails run ``other`` beyond noise: the first objective of the
    default ranking on which they differ by more than ``margin`` favours ``other``. A
    missing or non-finite objective in ``summary`` counts as 0; in ``other`` it decides nothing."""
    for key in ranked(OBJECTIVES):  # end-to-end, then delivery, then grip
        mine, theirs = _measured(summary, key, 0.0), _measured(other, key, None)
        if theirs is None:
            continue
        if theirs - mine > margin:
            return True
        if mine - theirs > margin:
            return False
    return False


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


def show(name: str, value: Any, missing: str = "-") -> str:
    """An objective's value as people read it: a percentage, or the env's score as a number."""
    if name != SCORE:
        return pct(value, missing)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return missing
    return f"{value:.3g}"


def best_trial(study, ranking: tuple[str, ...] = DEFAULT_RANKING):
    """The Pareto trial ranked first by ``ranking`` (means where repeated); None before any completes."""
    front = study.best_trials
    if not front:
        return None
    names = study_objectives(study)
    return max(front, key=lambda t: rank_key(trial_means(study, t), names, ranking))


def from_summary(summary: Mapping[str, Any], names=OBJECTIVES) -> tuple[float, ...]:
    """A completed run's objectives ``names`` from its ``summary.json``, in that order.

    Raises:
        ValueError: ``"missing metrics: <names>"`` for each objective absent or not a finite number.
    """
    missing = [name for name in names if isinstance(summary.get(name), bool)
               or not isinstance(summary.get(name), (int, float)) or not math.isfinite(summary[name])]
    if missing:
        raise ValueError(f"missing metrics: {', '.join(missing)}")
    return tuple(float(summary[name]) for name in names)


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
    names = study_objectives(study)
    mine, theirs = trial_means(study, trial), trial_means(study, base)
    return {
        "baseline_trial": base.number, "trial": trial.number,
        "baseline": dict(zip(names, theirs)), "values": dict(zip(names, mine)),
        "gain": {name: m - b for name, m, b in zip(names, mine, theirs)},
        "beat": trial.number != base.number and rank_key(mine, names) > rank_key(theirs, names),
    }


def describe_versus(versus: Mapping[str, Any] | None, warm: bool = False) -> str | None:
    """One sentence for :func:`versus_baseline`'s result; ``warm``: the study's trials
    continued a drone, so its baseline trial is that drone continued unchanged."""
    if versus is None:
        return None
    control = "continuing the drone unchanged" if warm else "the baseline trial"
    b, gain = versus["baseline"], versus["gain"]
    names = [n for n in VOCABULARY if n in b]
    head = f"{control} (trial {versus['baseline_trial']}) had " + ", ".join(f"{LABEL[n]} {show(n, b[n])}" for n in names)
    if versus["trial"] == versus["baseline_trial"]:
        return f"{head}; it is the best trial itself: no change beat it at this budget"
    verdict = "beats it" if versus["beat"] else "does not beat it"
    moves = [f"{100 * gain[n]:+.1f} pts {LABEL[n]}" if n != SCORE else f"{gain[n]:+.3g} score"
             for n in ranked(names)]
    return f"{head}; the winner {verdict}: " + ", ".join(moves)
