"""Which searched parameters mattered: parameter importance per objective.

One computation for the report and the export note: fANOVA first, the random-forest
impurity evaluator where fANOVA fails, nothing where the trials cannot support it.
"""

from __future__ import annotations

import math
import warnings

import optuna
from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator
from optuna.trial import TrialState

from drex_opt.rules.objectives import study_objectives

# fANOVA on fewer completed trials ranks noise; below this the result says so instead.
MIN_IMPORTANCE_TRIALS = 4


def importances(study: optuna.Study, trials: list | None = None) -> tuple[dict, str | None]:
    """Parameter importance per objective, and a note when it could not be judged.

    fANOVA first; the random-forest impurity evaluator if fANOVA fails. Nothing is
    computed below :data:`MIN_IMPORTANCE_TRIALS` completed trials, for an objective that
    never varied, or when no searched parameter varied. A single varied parameter gets
    importance 1 (by definition) for each objective that varied, with a note saying so:
    true, but no ranking, so the report draws nothing for it.

    Args:
        trials: the completed trials to judge (default: all of the study's).

    Returns:
        ``({objective: {param: importance}}, note)``; the note says why something is missing.
    """
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return {}, (f"not enough trials for parameter importance ({len(trials)} completed, "
                    f"{MIN_IMPORTANCE_TRIALS} needed)")
    shared = set.intersection(*(set(t.params) for t in trials))
    varied = [p for p in sorted(shared) if len({repr(t.params[p]) for t in trials}) > 1]
    single = f"no parameter importance: only {len(varied)} searched parameter(s) varied across the trials"
    if not varied:
        return {}, single
    names = study_objectives(study)
    if len(varied) == 1:
        moved = [name for i, name in enumerate(names) if len({t.values[i] for t in trials}) > 1]
        return {name: {varied[0]: 1.0} for name in moved}, single
    out: dict = {}
    flat = []
    for i, name in enumerate(names):
        if len({t.values[i] for t in trials}) < 2:
            flat.append(name)
            continue

        def target(t, i=i) -> float:
            return t.values[i]

        for evaluator in (FanovaImportanceEvaluator(seed=0), MeanDecreaseImpurityImportanceEvaluator(seed=0)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied,
                                                                     target=target)
            except Exception:  # noqa: BLE001 - try the next evaluator
                continue
            if result and all(math.isfinite(v) for v in result.values()):
                out[name] = {k: float(v) for k, v in result.items()}
                break
    note = None
    if flat:
        note = "no parameter importance for " + ", ".join(flat) + " (the same value in every trial)"
    if not out:
        note = note or "parameter importance could not be computed"
    return out, note
