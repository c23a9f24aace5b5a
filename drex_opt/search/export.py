"""Export a study's winner as the autopilot's next proposal, and say why in the lab notes.

The pick comes from the Pareto front (repeated-seed means where the study has them).
The proposal holds only the brief's keys, as overrides relative to the baseline, with
the derived batch sizes, validated, and is written atomically: an interrupted export
leaves the previous ``next_config.json`` as it was.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from drex_opt import notes as notes_mod
from drex_opt.errors import UserError
from drex_opt.jsonio import write_atomic, write_json_atomic
from drex_opt.rules import config, safety
from drex_opt.rules.objectives import LABEL, RANKINGS, describe_versus, rank_key, ranked, show, study_objectives, trial_means, versus_baseline
from drex_opt.search import storage as storage_mod
from drex_opt.search.importance import importances

PICKS = (*RANKINGS, "balanced")
DEFAULT_OUT = Path("autopilot/proposals/next_config.json")
# The trial's budget and seed belong to the study's experiment; the next run's length
# comes from the autopilot mode (its baseline) unless the user sets it in the proposal.
STUDY_ONLY_KEYS = (("train", "total_timesteps"), ("train", "seed"))
# How many of the most important parameters the lab note names.
NOTE_IMPORTANCES = 3


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
    why: str | None = None  # the proposal's notes sidecar, when written
    resume_from: str | None = None  # warm studies: the winner's checkpoint the next run continues
    versus_baseline: dict | None = None  # the winner against the baseline trial (the control)
    info: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "info"}


def pick_trial(study, pick: str):
    """The Pareto trial for ``pick`` and a one-line explanation."""
    if pick not in PICKS:
        raise UserError(f"unknown --pick {pick!r}; choose one of {', '.join(PICKS)}")
    front = study.best_trials
    if not front:
        raise UserError(f"study {study.study_name!r} has no completed trial to export")
    names = study_objectives(study)
    means = {t.number: trial_means(study, t) for t in front}
    if pick == "balanced":
        ideal = [max(m[i] for m in means.values()) for i in range(len(names))]
        chosen = min(front, key=lambda t: (math.dist(means[t.number], ideal), t.number))
        why = (f"closest on the Pareto front ({len(front)} trials) to the ideal point ("
               + ", ".join(f"{LABEL[n]} {show(n, v)}" for n, v in zip(names, ideal)) + ")")
    else:
        order = ranked(names, RANKINGS[pick])
        chosen = max(front, key=lambda t: (rank_key(means[t.number], names, order), -t.number))
        why = (f"best {', then '.join(LABEL[n] for n in order)} on the Pareto front ({len(front)} trials)")
    m = dict(zip(names, means[chosen.number]))
    rep = study.user_attrs.get(f"repeats:{chosen.number}")
    spread = ""
    if isinstance(rep, dict) and rep.get("stdev"):
        lead = ranked(names)[0]
        spread = (f", mean of {len(rep['seeds'])} seeds ({LABEL[lead]} stdev "
                  f"{show(lead, rep['stdev'][names.index(lead)])})")
    explanation = (f"trial {chosen.number}: " + ", ".join(f"{LABEL[n]} {show(n, m[n])}" for n in names)
                   + f"{spread} - {why}")
    return chosen, explanation


def proposal_for(trial, study_baseline: dict, target_baseline: dict, resume: dict | None = None) -> dict:
    """The trial's configuration as overrides relative to ``target_baseline``.

    Only the brief's keys; the study's per-trial budget and seed are left out; the derived
    batch sizes are always included; ``resume`` (:func:`resume_fields`) says which drone the
    next run continues. Raises UserError if the result does not validate.
    """
    used = trial.user_attrs.get("overrides")
    if not isinstance(used, dict):
        raise UserError(f"trial {trial.number} records no configuration (overrides); was it run by drex-opt?")
    effective = safety.merge(study_baseline, used)
    for section, key in STUDY_ONLY_KEYS:
        effective[section][key] = target_baseline[section][key]
    # Which drone the next run starts from is decided by the study's kind (resume_fields),
    # never inherited from the run the study started from.
    effective["autopilot"] = dict(target_baseline["autopilot"])
    relative = safety.overrides_relative(effective, target_baseline)
    sizes = safety.derive_batch_sizes(safety.merge(target_baseline, relative))
    relative.setdefault("train", {}).update(sizes)
    relative = safety.merge(relative, resume or {})
    problems = safety.validate(relative, target_baseline)
    if problems:
        raise UserError("the exported proposal would not validate: " + "; ".join(map(str, problems)))
    return relative


def _top_importances(study) -> list[tuple[str, float]]:
    """The parameters that mattered most for end-to-end success (none when not computed)."""
    found = importances(study)[0].get(ranked(study_objectives(study))[0], {})
    top = sorted(found.items(), key=lambda kv: kv[1], reverse=True)[:NOTE_IMPORTANCES]
    return [(name.split(".", 1)[-1], value) for name, value in top]


def resume_fields(study, chosen) -> dict:
    """``autopilot.resume_*`` keys that make the next run continue the winner's drone.

    For a warm study: its trials continued the run's drone, so the winner's checkpoint is
    the best drone there is. So it is for a study that passed over its run's drone because
    that drone had unlearned (``warm_start_declined``): continuing it is worse than any
    fresh start. Any other scratch study's checkpoints have seen fewer steps than the run
    they were meant to improve: the next run then starts as its baseline says.

    Raises:
        UserError: the winner's checkpoint is gone (its trial folder was removed).
    """
    attrs = study.user_attrs
    if not attrs.get("warm_start") and not attrs.get("warm_start_declined"):
        return {}
    kind = "a warm study" if attrs.get("warm_start") else "a study that passed over its run's drone"
    path = chosen.user_attrs.get("checkpoint")
    if not path or not Path(path).is_file():
        raise UserError(f"trial {chosen.number} is the winner of {kind} but its checkpoint "
                        f"{path or '(none recorded)'} does not exist")
    return {"autopilot": {"resume_mode": "continue", "resume_from": str(Path(path).resolve())}}


def _changes(chosen, study_baseline: dict) -> list[str]:
    """``key before -> after`` for each searched value that differs from the baseline."""
    changes = []
    for name, value in chosen.params.items():
        section, key = name.split(".")
        before = study_baseline.get(section, {}).get(key)
        if before != value:
            changes.append(f"{key} {before} -> {value:.4g}" if isinstance(value, float) else f"{key} {before} -> {value}")
    return changes


def export(study_name: str | None, storage_url: str, pick: str = "e2e", out: Path = DEFAULT_OUT,
           dry_run: bool = False, baseline: str | None = None, notes: Path | None = None,
           next_step: str | None = None) -> ExportResult:
    """Pick, convert, validate and (unless ``dry_run``) write the proposal, its notes sidecar
    (``next_config.notes.md``: the theory, quoted by the run that uses it) and a notes entry.

    Args:
        baseline: the baseline the proposal is relative to (default: the study's).
        notes: notebook to append to (default: the study's source run's ``notes.txt``
            when it was started ``--from-run``, else ``notes.txt`` next to ``out``'s
            autopilot folder).
    """
    study, _ = storage_mod.load_existing_study(storage_url, study_name)
    chosen, explanation = pick_trial(study, pick)
    attrs = study.user_attrs
    path = attrs.get("baseline_path")
    study_baseline = config.load_baseline(path if path and Path(path).is_file() else attrs.get("baseline") or "quick")
    target = config.load_baseline(baseline) if baseline else study_baseline
    resume = resume_fields(study, chosen)
    proposal = proposal_for(chosen, study_baseline, target, resume)
    means = trial_means(study, chosen)
    versus = versus_baseline(study, chosen)
    warm = bool(attrs.get("warm_start"))
    states = dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))
    lead = LABEL[ranked(study_objectives(study))[0]]
    default_next = (f"train the next run with {out} (drex-opt autopilot); if {lead} stays low, run "
                    f"drex-opt study --from-run on that run to follow its new focus")
    info = {
        "importance_target": lead,
        "objectives_note": attrs.get("objectives_note"),
        "study_name": study.study_name, "out": str(out), "focus": attrs.get("focus"),
        "theory": attrs.get("theory"), "analysis": attrs.get("analysis"),
        "trials": len(study.trials), "timesteps": attrs.get("timesteps") or 0,
        "baseline": attrs.get("baseline_label") or attrs.get("baseline"), "states": states,
        "explanation": explanation,
        "versus_baseline": describe_versus(versus, warm),
        "warm_start": attrs.get("warm_start"), "warm_start_agent_steps": attrs.get("warm_start_agent_steps"),
        "warm_start_declined": attrs.get("warm_start_declined"),
        "resume_from": (resume.get("autopilot") or {}).get("resume_from"),
        "drone_agent_steps": chosen.user_attrs.get("drone_agent_steps"),
        "importances": _top_importances(study), "changes": _changes(chosen, study_baseline),
        "next_step": next_step or default_next,
    }
    notes_path = None
    if not dry_run:
        entry = notes_mod.study_entry(info)
        write_json_atomic(out, proposal)
        # The theory travels with the proposal, so the run that uses it can say why.
        write_atomic(notes_mod.sidecar_path(out), entry)
        notes_path = Path(notes) if notes else default_notes_path(attrs, Path(out))
        notes_mod.append_entry(notes_path, entry)
    return ExportResult(
        study_name=study.study_name, trial=chosen.number, pick=pick, explanation=explanation,
        values=dict(zip(study_objectives(study), means)), overrides=proposal, out=str(out), written=not dry_run,
        notes=None if notes_path is None else str(notes_path),
        why=None if dry_run else str(notes_mod.sidecar_path(out)), info=info,
        resume_from=info["resume_from"], versus_baseline=versus,
    )


def default_notes_path(study_attrs: dict, out: Path) -> Path:
    """The source run's ``notes.txt`` (studies started ``--from-run``), else the
    autopilot folder's ``notes.txt`` (the folder holding ``proposals/``)."""
    run = study_attrs.get("from_run")
    if run and Path(run).exists():
        return (Path(run) if Path(run).is_dir() else Path(run).parent) / "notes.txt"
    folder = out.parent.parent if out.parent.name == "proposals" else out.parent
    return folder / "notes.txt"
