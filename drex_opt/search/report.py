"""A study's report: what was searched and what was found, as one result object.

:func:`build` reads the study and computes the top trials, the Pareto front and the
parameter importances; the pictures and ``report.md`` are drawn from the result by
:mod:`drex_opt.views.report`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import optuna
from optuna.trial import TrialState

from drex_opt.errors import UserError
from drex_opt.rules.objectives import BASELINE_ROLE, best_trial, rank_key, study_objectives, trial_means, versus_baseline
from drex_opt.search import storage as storage_mod
from drex_opt.search.importance import importances

TOP_N = 5


@dataclass
class TopTrial:
    """One completed trial as the report shows it (means where seeds were repeated)."""

    number: int
    baseline: bool
    values: dict  # the trial's own run
    means: dict  # repeated-seed means, else the trial's own values
    stdev: dict | None
    seeds: int
    params: dict
    behavioral_analysis: dict
    run_dir: str | None


@dataclass
class Report:
    """What ``drex-opt report`` wrote and found; the terminal view and ``--json`` render it."""

    study_name: str
    storage: str
    out_dir: str
    files: dict
    focus: str | None
    theory: str | None
    timesteps: int | None
    trials_planned: int | None
    states: dict
    completed: int
    top: list[TopTrial]
    importances: dict  # objective -> {param: importance}, or {} when not computed
    importance_note: str | None
    pareto: list[int] = field(default_factory=list)
    warm_start: str | None = None  # the checkpoint the trials continued; None: fresh weights
    warm_start_declined: str | None = None  # why the --from-run run's drone was not continued
    versus_baseline: dict | None = None  # the best trial against the baseline trial (the control)
    objectives: list = field(default_factory=list)  # what the study optimises, in its values' order
    objectives_note: str | None = None  # why that is not grip, delivery and end-to-end
    # The completed trials themselves, for the pictures; not part of --json.
    trials: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "trials"}


def top_trials(study: optuna.Study, trials: list, n: int = TOP_N) -> list[TopTrial]:
    """The ``n`` best completed trials by end-to-end, then delivery, then grip (means if repeated)."""
    names = study_objectives(study)
    ranked = sorted(trials, key=lambda t: (rank_key(trial_means(study, t), names), -t.number), reverse=True)
    out = []
    for t in ranked[:n]:
        rep = study.user_attrs.get(f"repeats:{t.number}")
        repeated = isinstance(rep, dict) and bool(rep.get("mean"))
        out.append(TopTrial(
            number=t.number, baseline=t.user_attrs.get("role") == BASELINE_ROLE,
            values=dict(zip(names, t.values)), means=dict(zip(names, trial_means(study, t))),
            stdev=dict(zip(names, rep["stdev"])) if repeated and rep.get("stdev") else None,
            seeds=len(rep.get("seeds") or []) if repeated else 1, params=dict(t.params),
            behavioral_analysis=t.user_attrs.get("behavioral_analysis") or {}, run_dir=t.user_attrs.get("run_dir"),
        ))
    return out


def build(storage: str | None = None, study_name: str | None = None, out: str | None = None,
          top_n: int = TOP_N) -> Report:
    """Read the study: its top trials, Pareto front and parameter importances.

    Args:
        out: where the pictures and ``report.md`` go (default ``studies/<study>/report``);
            recorded in the result, written by the view.

    Raises:
        UserError: see :func:`drex_opt.search.storage.load_existing_study`; a study
            without completed trials.
    """
    url = storage_mod.storage_url(storage)
    study, _ = storage_mod.load_existing_study(url, study_name)
    all_trials = study.get_trials(deepcopy=False)
    states = dict(Counter(t.state.name for t in all_trials))
    completed = [t for t in all_trials if t.state == TrialState.COMPLETE]
    if not completed:
        summary = ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())) or "no trials"
        raise UserError(f"study {study.study_name!r} has no completed trial yet ({summary}); nothing to report")
    pareto = sorted(t.number for t in study.best_trials)
    imps, note = importances(study, completed)
    if all(len(by_param) < 2 for by_param in imps.values()):
        imps = {}  # one parameter's importance is 1 by definition: nothing to rank or draw
    attrs = study.user_attrs
    best = best_trial(study)
    out_dir = str(out) if out is not None else f"studies/{study.study_name}/report"
    return Report(
        study_name=study.study_name, storage=storage_mod.redact(url), out_dir=out_dir, files={},
        focus=attrs.get("focus"), theory=attrs.get("theory"), timesteps=attrs.get("timesteps"),
        trials_planned=attrs.get("trials_planned"), states=states, completed=len(completed),
        top=top_trials(study, completed, top_n), importances=imps, importance_note=note, pareto=pareto,
        trials=completed, warm_start=attrs.get("warm_start"),
        warm_start_declined=attrs.get("warm_start_declined"), objectives=list(study_objectives(study)),
        objectives_note=attrs.get("objectives_note"),
        versus_baseline=None if best is None else versus_baseline(study, best),
    )
