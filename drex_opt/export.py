"""Export a study's winner as the autopilot's next proposal, and say why in the lab notes.

The pick comes from the Pareto front (repeated-seed means where the study has them).
The proposal holds only the brief's keys, as overrides relative to the baseline, with
the derived batch sizes, validated, and is written atomically: an interrupted export
leaves the previous ``next_config.json`` as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from drex_opt.errors import UserError

PICKS = ("e2e", "delivery", "grip", "balanced")
DEFAULT_OUT = Path("autopilot/proposals/next_config.json")
# The trial's budget and seed belong to the study's experiment; the next run's length
# comes from the autopilot mode (its baseline) unless the user sets it in the proposal.
STUDY_ONLY_KEYS = (("train", "total_timesteps"), ("train", "seed"))
_ORDER = {"e2e": (2, 1, 0), "delivery": (1, 2, 0), "grip": (0, 1, 2)}
_LABEL = ("grip", "delivery", "end-to-end")


@dataclass
class ExportResult:
    study_name: str
    trial: int
    pick: str
    explanation: str
    values: dict
    overrides: dict
    out: str
    written: bool
    notes: str | None
    info: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "info"}


def load_study(study_name: str | None, storage_url: str):
    """The study by name; without a name, the storage's only study."""
    import optuna

    from drex_opt import storage as storage_mod

    storage = storage_mod.open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise UserError(f"give --study-name; studies in {storage_mod.redact(storage_url)}: {listing}")
        study_name = names[0]
    if study_name not in names:
        raise UserError(f"no study {study_name!r} in {storage_mod.redact(storage_url)}; "
                        f"studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage)


def pick_trial(study, pick: str):
    """The Pareto trial for ``pick`` and a one-line explanation."""
    from drex_opt.study import trial_means

    if pick not in PICKS:
        raise UserError(f"unknown --pick {pick!r}; choose one of {', '.join(PICKS)}")
    try:
        front = study.best_trials
    except Exception:  # noqa: BLE001 - optuna raises when no trial completed
        front = []
    if not front:
        raise UserError(f"study {study.study_name!r} has no completed trial to export")
    means = {t.number: trial_means(study, t) for t in front}
    if pick == "balanced":
        ideal = [max(m[i] for m in means.values()) for i in range(3)]
        chosen = min(front, key=lambda t: (math.dist(means[t.number], ideal), t.number))
        why = (f"closest on the Pareto front ({len(front)} trials) to the ideal point "
               f"(grip {ideal[0]:.1%}, delivery {ideal[1]:.1%}, end-to-end {ideal[2]:.1%})")
    else:
        order = _ORDER[pick]
        chosen = max(front, key=lambda t: (tuple(means[t.number][i] for i in order), -t.number))
        why = (f"best {_LABEL[order[0]]}, then {_LABEL[order[1]]}, then {_LABEL[order[2]]} "
               f"on the Pareto front ({len(front)} trials)")
    m = means[chosen.number]
    rep = study.user_attrs.get(f"repeats:{chosen.number}")
    spread = ""
    if isinstance(rep, dict) and rep.get("stdev"):
        spread = f", mean of {len(rep['seeds'])} seeds (e2e stdev {rep['stdev'][2]:.1%})"
    explanation = (f"trial {chosen.number}: grip {m[0]:.1%}, delivery {m[1]:.1%}, end-to-end {m[2]:.1%}{spread} "
                   f"- {why}")
    return chosen, explanation


def proposal_for(trial, study_baseline: dict, target_baseline: dict) -> dict:
    """The trial's configuration as overrides relative to ``target_baseline``.

    Only the brief's keys; the study's per-trial budget and seed are left out; the derived
    batch sizes are always included. Raises UserError if the result does not validate.
    """
    from drex_opt import config, safety

    used = trial.user_attrs.get("overrides")
    if not isinstance(used, dict):
        raise UserError(f"trial {trial.number} records no configuration (overrides); was it run by drex-opt?")
    effective = config.merge(study_baseline, used)
    for section, key in STUDY_ONLY_KEYS:
        effective[section][key] = target_baseline[section][key]
    relative = safety.overrides_relative(effective, target_baseline)
    sizes = config.derive_batch_sizes(config.merge(target_baseline, relative))
    relative.setdefault("train", {}).update(sizes)
    problems = safety.validate(relative, target_baseline)
    if problems:
        raise UserError("the exported proposal would not validate: " + "; ".join(map(str, problems)))
    return relative


def _importances(study, objective: int = 2) -> list[tuple[str, float]]:
    """Top parameters for one objective (fANOVA: direction-free); empty when the completed
    trials are too few or all scored the same (importances would be noise)."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 3 or len({round(t.values[objective], 6) for t in done}) < 2:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t: t.values[objective])
    except Exception:  # noqa: BLE001 - one param, dynamic spaces...
        return []
    return [(name.split(".", 1)[-1], float(v)) for name, v in list(ranked.items())[:3] if math.isfinite(v)]


def _baseline_trial(study):
    from optuna.trial import TrialState

    from drex_opt.study import BASELINE_ROLE

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("role") == BASELINE_ROLE:
            return t
    return None


def export(study_name: str | None, storage_url: str, pick: str = "e2e", out: Path = DEFAULT_OUT,
           dry_run: bool = False, baseline: str | None = None, notes: Path | None = None,
           next_step: str | None = None) -> ExportResult:
    """Pick, convert, validate and (unless ``dry_run``) write the proposal and a notes entry.

    Args:
        baseline: the baseline the proposal is relative to (default: the study's).
        notes: notebook to append to (default: the study's source run's ``notes.txt``
            when it was started ``--from-run``, else ``notes.txt`` next to ``out``'s
            autopilot folder).
    """
    from drex_opt import config, notes as notes_mod
    from drex_opt.jsonio import write_json_atomic
    from drex_opt.study import OBJECTIVES, trial_means

    study = load_study(study_name, storage_url)
    chosen, explanation = pick_trial(study, pick)
    attrs = study.user_attrs
    path = attrs.get("baseline_path")
    study_baseline = config.load_baseline(path if path and Path(path).is_file() else attrs.get("baseline") or "quick")
    target = config.load_baseline(baseline) if baseline else study_baseline
    proposal = proposal_for(chosen, study_baseline, target)

    means = trial_means(study, chosen)
    base_trial = _baseline_trial(study)
    versus = None
    if base_trial is not None and base_trial.number != chosen.number:
        b = trial_means(study, base_trial)
        versus = (f"trial {base_trial.number} had grip {b[0]:.1%}, delivery {b[1]:.1%}, end-to-end {b[2]:.1%}; "
                  f"the winner is {100 * (means[2] - b[2]):+.1f} pts end-to-end, {100 * (means[1] - b[1]):+.1f} pts "
                  f"delivery, {100 * (means[0] - b[0]):+.1f} pts grip")
    elif base_trial is not None:
        versus = "the baseline itself is the best trial: no change beats it at this budget"
    changes = []
    for name, value in chosen.params.items():
        section, key = name.split(".")
        before = study_baseline.get(section, {}).get(key)
        if before != value:
            changes.append(f"{key} {before} -> {value:.4g}" if isinstance(value, float) else f"{key} {before} -> {value}")
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    default_next = (f"train the next run with {out} (drex-opt autopilot); if end-to-end stays low, run "
                    f"drex-opt study --from-run on that run to follow its new focus")
    info = {
        "importance_target": "end-to-end",
        "study_name": study.study_name, "out": str(out), "focus": attrs.get("focus"),
        "theory": attrs.get("theory"), "analysis": attrs.get("analysis"),
        "trials": len(study.trials), "timesteps": attrs.get("timesteps") or 0,
        "baseline": attrs.get("baseline_label") or attrs.get("baseline"), "states": states,
        "explanation": explanation, "versus_baseline": versus, "importances": _importances(study),
        "changes": changes, "next_step": next_step or default_next,
    }
    notes_path = None
    if not dry_run:
        write_json_atomic(out, proposal)
        notes_path = Path(notes) if notes else default_notes_path(attrs, Path(out))
        notes_mod.append_entry(notes_path, notes_mod.study_entry(info))
    return ExportResult(
        study_name=study.study_name, trial=chosen.number, pick=pick, explanation=explanation,
        values=dict(zip(OBJECTIVES, means)), overrides=proposal, out=str(out), written=not dry_run,
        notes=None if notes_path is None else str(notes_path), info=info,
    )


def default_notes_path(study_attrs: dict, out: Path) -> Path:
    """The source run's ``notes.txt`` (studies started ``--from-run``), else the
    autopilot folder's ``notes.txt`` (the folder holding ``proposals/``)."""
    run = study_attrs.get("from_run")
    if run and Path(run).exists():
        return (Path(run) if Path(run).is_dir() else Path(run).parent) / "notes.txt"
    folder = out.parent.parent if out.parent.name == "proposals" else out.parent
    return folder / "notes.txt"
