"""A study's report: what was searched, what was found, as pictures and markdown on disk.

:func:`build` reads the study, computes the top trials and the parameter importances,
and writes the images and ``report.md`` (each file written to a temporary name, then
renamed). The drawing and the text live in :mod:`drex_opt.views_report`.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from drex_opt.errors import UserError

if TYPE_CHECKING:
    import optuna

TOP_N = 5
# fANOVA on fewer completed trials ranks noise; below this the report says so instead.
MIN_IMPORTANCE_TRIALS = 4
IMAGES = {"pareto": "pareto.png", "history": "history.png", "importance": "importance.png"}


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

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- reading
def open_existing_storage(url: str) -> "optuna.storages.BaseStorage":
    """Open a storage that must already exist (readers never create an empty file).

    Raises:
        UserError: a SQLite or journal file that does not exist, or any error of
            :func:`drex_opt.storage.open_storage` (unreachable server, missing driver).
    """
    from drex_opt import storage as storage_mod

    path = storage_mod._journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):].split("?", 1)[0]
        path = Path(db) if db and db != ":memory:" else None
    if path is not None and not path.is_file():
        raise UserError(f"no storage at {path} (run drex-opt study first, or pass --storage)")
    return storage_mod.open_storage(url)


def load_study(storage: str | None, study_name: str | None) -> tuple["optuna.Study", str]:
    """The study to report on, and the storage URL in force.

    ``study_name`` may be omitted when the storage holds exactly one study.

    Raises:
        UserError: unreachable storage, no study, several studies and no name, unknown name.
    """
    import optuna

    from drex_opt import storage as storage_mod

    url = storage_mod.storage_url(storage)
    opened = open_existing_storage(url)
    names = sorted(optuna.get_all_study_names(opened))
    where = storage_mod.redact(url)
    if study_name is None:
        if not names:
            raise UserError(f"storage {where} holds no study")
        if len(names) > 1:
            raise UserError(f"storage {where} holds {len(names)} studies; choose one with --study-name: "
                            + ", ".join(names))
        study_name = names[0]
    elif study_name not in names:
        known = ", ".join(names) if names else "none"
        raise UserError(f"no study {study_name!r} in {where}; studies: {known}")
    return optuna.load_study(study_name=study_name, storage=opened), url


def top_trials(study: "optuna.Study", trials: list, n: int = TOP_N) -> list[TopTrial]:
    """The ``n`` best completed trials by end-to-end, then delivery, then grip (means if repeated)."""
    from drex_opt.study import BASELINE_ROLE, OBJECTIVES, trial_means

    ranked = sorted(trials, key=lambda t: (tuple(trial_means(study, t)[i] for i in (2, 1, 0)), -t.number),
                    reverse=True)
    out = []
    for t in ranked[:n]:
        rep = study.user_attrs.get(f"repeats:{t.number}")
        repeated = isinstance(rep, dict) and bool(rep.get("mean"))
        out.append(TopTrial(
            number=t.number, baseline=t.user_attrs.get("role") == BASELINE_ROLE,
            values=dict(zip(OBJECTIVES, t.values)), means=dict(zip(OBJECTIVES, trial_means(study, t))),
            stdev=dict(zip(OBJECTIVES, rep["stdev"])) if repeated and rep.get("stdev") else None,
            seeds=len(rep.get("seeds") or []) if repeated else 1, params=dict(t.params),
            behavioral_analysis=t.user_attrs.get("behavioral_analysis") or {}, run_dir=t.user_attrs.get("run_dir"),
        ))
    return out


def importances(study: "optuna.Study", trials: list) -> tuple[dict, str | None]:
    """Parameter importance per objective, and a note when it could not be judged.

    fANOVA first; the random-forest impurity evaluator if fANOVA fails. Nothing is
    computed below :data:`MIN_IMPORTANCE_TRIALS` completed trials, with a single searched
    parameter (its importance is 1 by definition) or for an objective that never varied.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    from drex_opt.study import OBJECTIVES

    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return {}, (f"not enough trials for parameter importance ({len(trials)} completed, "
                    f"{MIN_IMPORTANCE_TRIALS} needed)")
    shared = set.intersection(*(set(t.params) for t in trials))
    varied = [p for p in sorted(shared) if len({repr(t.params[p]) for t in trials}) > 1]
    if len(varied) < 2:
        return {}, f"no parameter importance: only {len(varied)} searched parameter(s) varied across the trials"
    out: dict = {}
    flat = []
    for i, name in enumerate(OBJECTIVES):
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


# ---------------------------------------------------------------- writing
def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or a kill mid-write leaves the previous file (or none), never half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp: the file gets the usual permissions (umask), not 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def build(storage: str | None = None, study_name: str | None = None, out: Path | None = None,
          top_n: int = TOP_N) -> Report:
    """Read the study and write its images and ``report.md`` to ``out``.

    Default ``out``: ``studies/<study>/report/``. Nothing is written when the study has
    no completed trial.

    Raises:
        UserError: see :func:`load_study`; a study without completed trials; an
            unwritable output folder.
    """
    from optuna.trial import TrialState

    from drex_opt import views_report
    from drex_opt import storage as storage_mod

    study, url = load_study(storage, study_name)
    all_trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in all_trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    completed = [t for t in all_trials if t.state == TrialState.COMPLETE]
    if not completed:
        summary = ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())) or "no trials"
        raise UserError(f"study {study.study_name!r} has no completed trial yet ({summary}); nothing to report")
    try:
        pareto = sorted(t.number for t in study.best_trials)
    except Exception:  # noqa: BLE001 - defensive: best_trials needs completed trials
        pareto = []
    imps, note = importances(study, completed)
    attrs = study.user_attrs
    out_dir = Path(out) if out is not None else Path("studies") / study.study_name / "report"
    report = Report(
        study_name=study.study_name, storage=storage_mod.redact(url), out_dir=str(out_dir), files={},
        focus=attrs.get("focus"), theory=attrs.get("theory"), timesteps=attrs.get("timesteps"),
        trials_planned=attrs.get("trials_planned"), states=states, completed=len(completed),
        top=top_trials(study, completed, top_n), importances=imps, importance_note=note, pareto=pareto,
    )
    figures = {"pareto": views_report.pareto_figure(completed, set(pareto)),
               "history": views_report.history_figure(completed)}
    if imps:
        figures["importance"] = views_report.importance_figure(imps)
    try:
        for key, fig in figures.items():
            path = out_dir / IMAGES[key]
            write_atomic(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
            report.files[key] = str(path)
        md = out_dir / "report.md"
        text = views_report.markdown(report, {k: IMAGES[k] for k in figures})
        write_atomic(md, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        report.files["report"] = str(md)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return report
