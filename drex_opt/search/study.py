"""Running a study: worker threads take trials until the budget, the deadline or Ctrl-C.

A study is planned (:mod:`drex_opt.search.planning`), then run by ``jobs`` worker threads
in this process, each trial a child training process (:mod:`drex_opt.search.trial`).
Many such processes, on one machine or many, can share one study through the storage.
Afterwards the top Pareto trials are re-trained with new seeds when the plan asks for it.
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.trial import TrialState

from drex_opt import __version__
from drex_opt.errors import UserError
from drex_opt.rules import behavior, config, safety
from drex_opt.rules.objectives import BASELINE_ROLE, best_trial, rank_key, study_objectives, trial_means, versus_baseline
from drex_opt.run import runner
from drex_opt.run.forkserver import ForkLauncher
from drex_opt.search import dashboard
from drex_opt.search import storage as storage_mod
from drex_opt.search.monitor import StudyMonitor
from drex_opt.search.planning import MAX_REPEAT_CANDIDATES, StudyPlan, baseline_label
from drex_opt.search.trial import TrialFailure, TrialRunner, baseline_params



def open_study(plan: StudyPlan):
    """Create the study (first worker: metric names, attributes, baseline trial 0, the
    dashboard note) or load it."""
    study, created = _create_or_load(plan)
    if created:
        dashboard.record_study(study, plan)
    return study


def _create_or_load(plan: StudyPlan):
    """(the study, whether this call created it): :func:`open_study` without the note."""
    if plan.storage is None:
        plan.storage = storage_mod.open_storage(plan.storage_url)
    storage = plan.storage
    sampler = plan.make_sampler()
    directions = ["maximize"] * len(plan.objectives)
    try:
        study = optuna.create_study(study_name=plan.study_name, storage=storage, sampler=sampler,
                                    directions=directions)
        created = True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler)
        created = False
    if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE] * len(plan.objectives) \
            or (not created and study_objectives(study) != tuple(plan.objectives)):
        raise UserError(f"study {plan.study_name!r} exists with other objectives; choose another --study-name")
    warm_start = None if plan.warm_start is None else str(plan.warm_start)
    if not created and study.user_attrs.get("warm_start") != warm_start:
        # Trials that continue one drone are not comparable with trials of another or of none.
        had = study.user_attrs.get("warm_start") or "fresh weights"
        raise UserError(f"study {plan.study_name!r} exists with trials starting from {had}, not "
                        f"{warm_start or 'fresh weights'}; choose another --study-name")
    if created:
        with warnings.catch_warnings():  # metric names are marked experimental; relied on knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(plan.objectives))
        for key, value in {
            "drex_opt": __version__, "focus": plan.focus, "space_focus": plan.space_focus, "sampler": plan.sampler,
            "theory": plan.space.description, "baseline": plan.baseline_name,
            "baseline_path": str(config.baseline_path(plan.baseline_name).resolve()),
            "from_run": None if plan.from_run is None else str(plan.from_run),
            "analysis": {"severity": plan.severity, "next_focus": plan.focus, "insights": plan.insights}
            if plan.from_run is not None else None,
            "baseline_label": baseline_label(plan.baseline_name, plan.baseline)[0], "env": plan.env,
            "timesteps": plan.timesteps, "trials_planned": plan.trials, "severity": plan.severity,
            "command": " ".join(plan.command), "objectives": list(plan.objectives),
            "objectives_note": plan.objectives_note,
            # Trials continue this drone (None: fresh weights); trial 0 continues it unchanged.
            "warm_start": warm_start,
            "warm_start_agent_steps": plan.warm_start_steps,
            # Why the run's drone was not continued (its trials start fresh instead).
            "warm_start_declined": plan.warm_start_declined,
            **analysis_attrs(plan),
        }.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(baseline_params(plan), user_attrs={"role": BASELINE_ROLE})
    return study, created


def requeue_control(study, plan: StudyPlan) -> bool:
    """Queue the baseline trial again when the study's was lost (interrupted, crashed or timed
    out, none completed, runs or waits): without it no trial can say it beat the control.
    True when queued."""
    controls = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("role") == BASELINE_ROLE]
    alive = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    if not controls or any(t.state in alive for t in controls):
        return False  # a study made elsewhere never had one: nothing was lost
    study.enqueue_trial(baseline_params(plan), user_attrs={"role": BASELINE_ROLE}, skip_if_exists=False)
    return True


def _note_meanwhile(study, plan: StudyPlan) -> threading.Thread:
    """Write the study's dashboard note beside the first trial: optuna-dashboard's import
    (~1 s, it pulls in scikit-learn) then delays no training. Join before finishing."""
    thread = threading.Thread(target=dashboard.record_study, args=(study, plan), name="drex-study-note",
                              daemon=True)
    thread.start()
    return thread


def _compact(analysis: dict) -> dict:
    return {"severity": analysis.get("severity"), "next_focus": analysis.get("next_focus"),
            "insights": behavior.insights_of(analysis)}


def analysis_attrs(plan: StudyPlan) -> dict:
    """Where a ``--from-run`` study's focus came from: ``analysis_source`` (stored or rules),
    the other reading when it differs (``rules_analysis`` or ``stored_analysis``) with the
    ``analysis_disagreement`` lines, and ``analysis_note`` when a stored one was unusable."""
    reading = plan.reading
    if reading is None:
        return {"analysis_source": None}
    attrs: dict = {"analysis_source": reading.source}
    if reading.note:
        attrs["analysis_note"] = reading.note
    if reading.other is not None:
        key = "rules_analysis" if reading.source == behavior.STORED else "stored_analysis"
        attrs[key] = _compact(reading.other)
        attrs["analysis_disagreement"] = list(reading.disagreement)
    return attrs


@dataclass
class StudyResult:
    study_name: str
    storage: str
    focus: str
    space_focus: str
    severity: str | None
    trials_run: int
    states: dict
    pareto: list
    best: dict | None
    repeats: dict
    interrupted: bool
    stale_failed: list
    analysis_source: str | None = None  # --from-run: stored or rules; None with --focus
    warm_start: str | None = None  # the checkpoint the trials continued; None: fresh weights
    warm_start_declined: str | None = None  # why the --from-run run's drone was not continued
    versus_baseline: dict | None = None  # the best trial against the baseline trial (the control)
    objectives: list = field(default_factory=list)  # what the study optimises (its env's measures)
    objectives_note: str | None = None  # why that is not grip, delivery and end-to-end

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run(plan: StudyPlan, monitor: StudyMonitor | None = None) -> StudyResult:
    """Run ``plan.trials`` new trials (``plan.jobs`` at a time), then the seed repeats.

    Ctrl-C (or SIGTERM) stops the children, fails the running trials and returns with
    ``interrupted`` set; the study can be resumed by running the same command again.
    """
    launch: runner.Launcher = runner.cold_launch
    if plan.forked:
        # Trials fork from a warm server; it imports torch and PufferLib while the study opens.
        launch = ForkLauncher(plan.threads_per_trial())
        launch.warm_up()
    study, created = _create_or_load(plan)
    noting = _note_meanwhile(study, plan) if created else None
    stale = storage_mod.fail_stale_trials(study, plan.storage)
    if not created:
        requeue_control(study, plan)
    cancel = threading.Event()
    pool = _TrialPool(study, plan, TrialRunner(plan, monitor, cancel, launch), monitor, cancel)
    interrupted = _run_workers(pool.work, plan.jobs, cancel)
    repeats = {}
    if not interrupted and plan.repeats > 0:
        if monitor:
            monitor.phase = "repeats"
        repeats = run_repeats(study, plan, cancel, monitor, launch)
        interrupted = cancel.is_set()
    if noting is not None:
        noting.join()
    return summarize(study, plan, pool.taken, repeats, interrupted, stale)


class _TrialPool:
    """What the worker threads share: the trial budget, the deadline and the ask lock."""

    def __init__(self, study: optuna.Study, plan: StudyPlan, objective: TrialRunner,
                 monitor: StudyMonitor | None, cancel: threading.Event) -> None:
        self.study, self.plan, self.objective, self.monitor, self.cancel = study, plan, objective, monitor, cancel
        self.deadline = time.time() + plan.timeout if plan.timeout else None
        self.taken = 0
        self.budget_lock = threading.Lock()
        # Held from before a worker asks for a trial until its objective starts: SQLite ignores
        # row locks, so two threads could otherwise both pop the same enqueued (waiting) trial.
        self.ask_lock = threading.Lock()
        self.holder = threading.local()

    def take(self) -> bool:
        """One more trial, unless the budget is spent, the deadline passed or the study stops."""
        with self.budget_lock:
            if self.taken >= self.plan.trials or self.cancel.is_set() or \
                    (self.deadline and time.time() >= self.deadline):
                return False
            self.taken += 1
            return True

    def _release(self) -> None:
        if getattr(self.holder, "locked", False):
            self.holder.locked = False
            self.ask_lock.release()

    def _objective(self, trial):
        self._release()
        return self.objective(trial)

    def _finished(self, study, trial) -> None:
        if self.monitor:
            reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("prune_reason")
            self.monitor.finished(trial.number, trial.state.name, trial.values, reason)

    def work(self) -> None:
        """A worker thread: trials one at a time until :meth:`take` says no."""
        while self.take():
            self.ask_lock.acquire()
            self.holder.locked = True
            try:
                self.study.optimize(self._objective, n_trials=1, catch=(TrialFailure,), callbacks=[self._finished],
                                    gc_after_trial=False, show_progress_bar=False)
            except KeyboardInterrupt:
                self.cancel.set()
                return
            finally:
                self._release()


def _run_workers(target: Callable[[], None], jobs: int, cancel: threading.Event) -> bool:
    """Run ``jobs`` worker threads; Ctrl-C or SIGTERM sets ``cancel``. True if interrupted.

    The wait is a sleep loop on per-worker events rather than ``Thread.join``: on
    Python < 3.13 a join interrupted by Ctrl-C can wrongly report the thread finished,
    and the study would exit while a trial is still being recorded.
    """
    done = [threading.Event() for _ in range(jobs)]

    def wrap(event: threading.Event) -> None:
        try:
            target()
        finally:
            event.set()

    threads = [threading.Thread(target=wrap, args=(e,), name=f"drex-worker-{i}", daemon=True)
               for i, e in enumerate(done)]
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    try:
        for t in threads:
            t.start()
        while not all(e.is_set() for e in done):
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                cancel.set()  # workers stop their children, record their trials, then finish
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return cancel.is_set()


def run_repeats(study, plan: StudyPlan, cancel: threading.Event, monitor: StudyMonitor | None,
                launch: runner.Launcher = runner.cold_launch) -> dict:
    """Re-train the top Pareto trials with ``plan.repeats`` new seeds; record mean and spread.

    Stored as study user attribute ``repeats:<trial number>`` (a finished trial cannot be
    changed): seeds, values per seed (the trial's own run first), mean and stdev per
    objective. Trials that already have repeats are skipped.
    """
    names = study_objectives(study)
    front = sorted(study.best_trials, key=lambda t: rank_key(t.values, names), reverse=True)
    todo = [t for t in front[:MAX_REPEAT_CANDIDATES] if f"repeats:{t.number}" not in study.user_attrs]
    jobs = [(t, k) for t in todo for k in range(1, plan.repeats + 1)]
    results: dict[int, list] = {t.number: [] for t in todo}

    def one(item):
        trial, k = item
        if cancel.is_set():
            return trial.number, k, None
        overrides = trial.user_attrs.get("overrides") or {}
        seed = (plan.seed + 7919 * k + trial.number) % 2_147_483_647
        cfg = safety.merge(plan.baseline, safety.merge(overrides, {"train": {"seed": seed}}))
        run_dir = plan.studies_dir / plan.study_name / f"trial-{trial.number}-seed-{seed}"
        res = runner.run_training(cfg, run_dir, plan.env, timeout=plan.trial_timeout, load_model=plan.warm_start,
                                  threads=plan.threads_per_trial(), cancel=cancel, launch=launch)
        s = res.summary
        values = [s.get(name) for name in names]
        ok = s["status"] == "completed" and all(isinstance(v, (int, float)) for v in values)
        if monitor:
            monitor.finished(trial.number, "COMPLETE" if ok else "FAIL", values if ok else None,
                             f"repeat seed {seed}")
        return trial.number, seed, values if ok else None

    with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
        for number, seed, values in pool.map(one, jobs):
            if values is not None:
                results[number].append((seed, values))
    out = {}
    for trial in todo:
        runs = [(plan.seed, list(trial.values))] + results[trial.number]
        if len(runs) < 2:
            continue
        columns = list(zip(*(v for _, v in runs)))
        record = {"seeds": [s for s, _ in runs], "values": [v for _, v in runs],
                  "mean": [statistics.fmean(c) for c in columns], "stdev": [statistics.stdev(c) for c in columns]}
        study.set_user_attr(f"repeats:{trial.number}", record)
        out[trial.number] = record
    return out


def summarize(study, plan: StudyPlan, trials_run: int, repeats: dict, interrupted: bool, stale: list) -> StudyResult:
    states = dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))
    front = study.best_trials
    names = study_objectives(study)
    pareto = [{"number": t.number, "values": dict(zip(names, t.values)),
               "means": dict(zip(names, trial_means(study, t))), "params": t.params,
               "baseline": t.user_attrs.get("role") == BASELINE_ROLE} for t in front]
    best = best_trial(study)
    return StudyResult(
        study_name=plan.study_name, storage=storage_mod.redact(plan.storage_url), focus=plan.focus,
        space_focus=plan.space_focus, severity=plan.severity, trials_run=trials_run, states=states,
        pareto=sorted(pareto, key=lambda p: p["number"]),
        best=None if best is None else {"number": best.number, "values": dict(zip(names, trial_means(study, best))),
                                        "params": best.params},
        repeats={str(k): v for k, v in repeats.items()}, interrupted=interrupted, stale_failed=stale,
        analysis_source=None if plan.reading is None else plan.reading.source,
        warm_start=None if plan.warm_start is None else str(plan.warm_start),
        warm_start_declined=plan.warm_start_declined,
        versus_baseline=None if best is None else versus_baseline(study, best),
        objectives=list(names), objectives_note=study.user_attrs.get("objectives_note"),
    )
