"""The Optuna study: a behavioural focus searched with multi-objective TPE, one real
PufferLib training run per trial.

A study is planned (everything validated, nothing run) and then run by one or more
worker threads in this process, each trial being a child training process. Many such
processes, on one machine or many, can share one study through the storage.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from drex_opt import __version__
from drex_opt.errors import UserError

OBJECTIVES = ("grip_success", "delivery_success", "end_to_end_success")
BASELINE_ROLE = "baseline"
MAX_REPEAT_CANDIDATES = 3
# Per-trial kill switch when none is given: generous start-up plus a floor of 5k steps/s.
TRIAL_TIMEOUT_BASE_S = 120.0
TRIAL_TIMEOUT_MIN_SPS = 5_000.0
QUICK_MAX_TIMESTEPS = 5_000_000  # a baseline file at or below this uses the quick budgets


class TrialFailure(Exception):
    """A trial that produced no trustworthy objectives (crash, NaN, timeout, no metrics)."""


@dataclass
class StudySettings:
    """What the user asked for (command-line options); :func:`plan` checks it."""

    focus: str | None = None
    from_run: Path | None = None
    baseline: str = "quick"
    env: str = "drone_pp"
    storage: str | None = None
    study_name: str | None = None
    trials: int | None = None
    timeout: float | None = None
    timesteps: int | None = None
    seed: int | None = None
    jobs: int = 1
    repeats: int | None = None
    trial_timeout: float | None = None
    early_stopping: bool = True
    studies_dir: Path = Path("studies")
    command: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class StudyPlan:
    """A validated study, ready to run."""

    focus: str
    severity: str | None
    insights: list[str]
    from_run: Path | None
    space: object  # spaces.SearchSpace
    space_focus: str  # the focus whose parameters are searched (differs for "continue")
    baseline_name: str
    baseline: dict
    study_name: str
    storage_url: str
    env: str
    timesteps: int
    trials: int
    startup_trials: int
    repeats: int
    seed: int
    jobs: int
    timeout: float | None
    trial_timeout: float
    early_stopping: bool
    studies_dir: Path
    command: list[str]
    storage: object = None  # the opened Optuna storage (opened while planning, to fail early)

    def threads_per_trial(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.jobs)


# ---------------------------------------------------------------- planning
def _baseline_label(baseline: str, cfg: dict) -> tuple[str, str]:
    """(label for the study name, budget name quick|full)."""
    if baseline in ("quick", "full"):
        return baseline, baseline
    budget = "quick" if cfg["train"]["total_timesteps"] <= QUICK_MAX_TIMESTEPS else "full"
    path = Path(baseline)
    # A run folder's config.json is named after its run (as the autopilot's studies use it).
    return (f"run-{path.parent.name}" if path.name == "config.json" else path.stem), budget


def plan(settings: StudySettings) -> StudyPlan:
    """Resolve focus, space, budget, storage and name; validate everything, run nothing.

    Raises:
        UserError: any bad option, file or storage.
    """
    from drex_opt import behavior, config, metrics, runner, spaces
    from drex_opt import storage as storage_mod

    if (settings.focus is None) == (settings.from_run is None):
        raise UserError("give exactly one of --focus FOCUS or --from-run DIR")
    severity, insights = None, []
    focus = settings.focus
    if settings.from_run is not None:
        run = metrics.read_run(settings.from_run)
        analysis = behavior.analyze(run.inputs)
        focus, severity, insights = analysis["next_focus"], analysis["severity"], analysis["insights"]
    if focus not in spaces.FOCI:
        raise UserError(f"unknown focus {focus!r}; valid foci: {', '.join(spaces.FOCI)}")
    for name, value, low in (("--trials", settings.trials, 1), ("--timesteps", settings.timesteps, 1000),
                             ("--jobs", settings.jobs, 1), ("--repeats", settings.repeats, 0)):
        if value is not None and value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    for name, value in (("--timeout", settings.timeout), ("--trial-timeout", settings.trial_timeout)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive number of seconds, got {value}")
    if settings.timesteps is not None and settings.timesteps > 1_000_000_000:
        raise UserError(f"--timesteps {settings.timesteps} is above the maximum 1000000000")
    runner.check_env_name(settings.env)
    baseline = config.load_baseline(settings.baseline)
    label, budget_name = _baseline_label(settings.baseline, baseline)
    url = storage_mod.storage_url(settings.storage)
    storage = storage_mod.open_storage(url)
    study_name = settings.study_name or default_study_name(focus, label, settings.env)

    space = spaces.load(focus)
    space_focus = focus
    if space.inherit:
        space, space_focus = _continue_space(storage, label, settings.env, baseline)
    budget = space.budget_for(budget_name, severity)
    seed = settings.seed if settings.seed is not None else int(baseline["train"]["seed"])
    if not 0 <= seed <= 2_147_483_647:
        raise UserError(f"--seed {seed} is outside 0..2147483647")
    timesteps = settings.timesteps or budget.timesteps
    return StudyPlan(
        focus=focus, severity=severity, insights=insights, space=space, space_focus=space_focus,
        from_run=None if settings.from_run is None else Path(settings.from_run).resolve(),
        baseline_name=settings.baseline, baseline=baseline, study_name=study_name, storage_url=url,
        env=settings.env, timesteps=timesteps, trials=settings.trials or budget.trials,
        startup_trials=budget.startup_trials,
        repeats=budget.repeats if settings.repeats is None else settings.repeats, seed=seed,
        jobs=settings.jobs, timeout=settings.timeout,
        trial_timeout=settings.trial_timeout or TRIAL_TIMEOUT_BASE_S + timesteps / TRIAL_TIMEOUT_MIN_SPS,
        early_stopping=settings.early_stopping, studies_dir=Path(settings.studies_dir),
        # Stored on the study and shown on the dashboard: never with a password in it.
        command=storage_mod.redact_command(settings.command),
        storage=storage,
    )


def default_study_name(focus: str, baseline_label: str, env: str) -> str:
    """Stable per (focus, baseline, env): the same command resumes the same study."""
    name = f"drex-{focus}-{baseline_label}"
    return name if env == "drone_pp" else f"{name}-{env}"


def _continue_space(storage, label: str, env: str, baseline: dict):
    """``continue``: the most recent other focus's space, narrowed around its best trial.

    Without such a study (a first run that already looks fine), the broadest space,
    ``optimize_performance``, narrowed around the baseline itself: small moves from the
    best configuration known, which is the baseline.
    """
    import optuna

    from drex_opt import spaces

    candidates = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if attrs.get("drex_opt") and attrs.get("focus") not in (None, "continue") \
                and attrs.get("baseline_label") == label and attrs.get("env") == env:
            candidates.append((str(summary.datetime_start or ""), summary.study_name, attrs["focus"]))
    candidates.sort()
    for _, name, focus in reversed(candidates):
        study = optuna.load_study(study_name=name, storage=storage)
        best = pick_best(study)
        if best is not None:
            center = best.user_attrs.get("overrides") or {}
            return spaces.narrow(spaces.load(focus), center), focus
    return spaces.narrow(spaces.load("optimize_performance"), baseline), "optimize_performance"


# ---------------------------------------------------------------- picking
def trial_means(study, trial) -> tuple[float, float, float]:
    """A trial's objectives: repeated-seed means where the study has them."""
    rep = study.user_attrs.get(f"repeats:{trial.number}")
    if isinstance(rep, dict) and rep.get("mean"):
        return tuple(rep["mean"])  # type: ignore[return-value]
    return tuple(trial.values)  # type: ignore[return-value]


def pick_best(study, order: tuple[int, ...] = (2, 1, 0)):
    """The Pareto trial best by end-to-end, then delivery, then grip (means if repeated)."""
    try:
        front = study.best_trials
    except Exception:  # noqa: BLE001 - no completed trial
        return None
    if not front:
        return None
    return max(front, key=lambda t: tuple(trial_means(study, t)[i] for i in order))


# ---------------------------------------------------------------- running
class StudyMonitor:
    """Thread-safe live state of a running study, read by the progress display."""

    def __init__(self, plan: StudyPlan) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        self.counts = {"COMPLETE": 0, "FAIL": 0, "PRUNED": 0}
        self.best = [None, None, None]
        self.running: dict[int, dict] = {}
        self.messages: list[str] = []
        self.phase = "search"

    def started(self, number: int) -> None:
        with self.lock:
            self.running[number] = {"steps": 0, "sps": 0.0}

    def progress(self, number: int, event: dict) -> None:
        with self.lock:
            if number in self.running:
                self.running[number] = {"steps": event.get("agent_steps", 0), "sps": event.get("SPS", 0.0),
                                        "grip": event.get("environment/perfect_grip")}

    def finished(self, number: int, state: str, values=None, reason: str | None = None) -> None:
        with self.lock:
            self.running.pop(number, None)
            self.counts[state] = self.counts.get(state, 0) + 1
            if values:
                self.best = [v if b is None else max(b, v) for b, v in zip(self.best, values)]
            line = f"trial {number}: {state.lower()}"
            if values:
                line += " " + " ".join(f"{n.split('_')[0]} {v:.1%}" for n, v in zip(OBJECTIVES, values))
            if reason:
                line += f" ({reason})"
            self.messages.append(line)

    def snapshot(self) -> dict:
        with self.lock:
            return {"counts": dict(self.counts), "best": list(self.best), "running": dict(self.running),
                    "messages": list(self.messages[-6:]), "phase": self.phase}


def open_study(plan: StudyPlan):
    """Create the study (first worker: metric names, attributes, baseline trial 0) or load it."""
    import optuna
    from optuna.exceptions import DuplicatedStudyError
    from optuna.samplers import TPESampler

    from drex_opt import config
    from drex_opt import storage as storage_mod

    storage = plan.storage or storage_mod.open_storage(plan.storage_url)
    sampler = TPESampler(seed=plan.seed, n_startup_trials=plan.startup_trials, constant_liar=True,
                         multivariate=True)
    directions = ["maximize"] * len(OBJECTIVES)
    try:
        study = optuna.create_study(study_name=plan.study_name, storage=storage, sampler=sampler,
                                    directions=directions)
        created = True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler)
        created = False
    if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE] * 3:
        raise UserError(f"study {plan.study_name!r} exists with other objectives; choose another --study-name")
    if created:
        study.set_metric_names(list(OBJECTIVES))
        for key, value in {
            "drex_opt": __version__, "focus": plan.focus, "space_focus": plan.space_focus,
            "theory": plan.space.description, "baseline": plan.baseline_name,
            "baseline_path": str(config.baseline_path(plan.baseline_name).resolve()),
            "from_run": None if plan.from_run is None else str(plan.from_run),
            "analysis": {"severity": plan.severity, "next_focus": plan.focus, "insights": plan.insights}
            if plan.from_run is not None else None,
            "baseline_label": _baseline_label(plan.baseline_name, plan.baseline)[0], "env": plan.env,
            "timesteps": plan.timesteps, "trials_planned": plan.trials, "severity": plan.severity,
            "command": " ".join(plan.command), "objectives": list(OBJECTIVES),
        }.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(baseline_params(plan), user_attrs={"role": BASELINE_ROLE})
        from drex_opt import dashboard

        dashboard.record_study(study, plan)
    return study


def baseline_params(plan: StudyPlan) -> dict:
    """The baseline's values of the searched parameters (those the space can represent)."""
    out = {}
    for name, p in plan.space.params.items():
        section, key = name.split(".")
        value = plan.baseline[section][key]
        if p.type == "categorical" and value not in p.choices:
            continue  # not representable: the baseline trial records only what fits
        out[name] = value
    return out


def _keep_agents(proposal: dict, baseline: dict) -> None:
    """Fewer drones per arena means more arenas: keep the drones per process near the baseline's.

    The grip foci search ``env.num_drones`` for a clearer signal per arena; without this,
    a trial with 4 drones would step 4x fewer agents per call and run several times
    slower, and its updates would see fewer samples. ``env.num_envs`` (not searched) is
    scaled inversely, inside its safety range.
    """
    env = proposal.get("env", {})
    if "num_drones" not in env or "num_envs" in env:
        return
    agents = baseline["env"]["num_envs"] * baseline["env"]["num_drones"]
    env["num_envs"] = max(1, min(256, round(agents / env["num_drones"])))


def _flat(nested: dict) -> dict:
    return {f"{s}.{k}": v for s, values in nested.items() if isinstance(values, dict) for k, v in values.items()}


class TrialRunner:
    """The objective: one trial = sample, clamp, train in a child process, read objectives."""

    def __init__(self, plan: StudyPlan, monitor: StudyMonitor | None, cancel: threading.Event) -> None:
        self.plan = plan
        self.monitor = monitor
        self.cancel = cancel
        from drex_opt.early_stop import EarlyStopRule

        self.rule = EarlyStopRule()

    def overrides_for(self, trial) -> tuple[dict, list[str]]:
        """Sampled overrides of ``trial`` after clamping, and the clamp adjustments."""
        from drex_opt import safety, spaces

        space = self.plan.space
        if trial.user_attrs.get("role") == BASELINE_ROLE:
            # Enqueued values live in the trial's "fixed_params" system attribute.
            fixed = set(trial._cached_frozen_trial.system_attrs.get("fixed_params", {}) or {})
            space = space.model_copy(update={"params": {k: v for k, v in space.params.items() if k in fixed}})
        sampled = spaces.suggest(space, trial) if space.params else {}
        proposal = {section: dict(values) for section, values in sampled.items()}
        _keep_agents(proposal, self.plan.baseline)
        proposal.setdefault("train", {}).update(total_timesteps=self.plan.timesteps, seed=self.plan.seed)
        effective, adjustments = safety.clamp(proposal, self.plan.baseline)
        used = _flat(effective)
        changed = [k for k, v in _flat(sampled).items() if used.get(k) != v]
        if changed:
            # The recorded params must be the values the run used; never train on others.
            raise TrialFailure(f"safety clamp changed sampled {', '.join(changed)}: {'; '.join(adjustments)}")
        return effective, adjustments

    def __call__(self, trial) -> tuple[float, float, float]:
        from drex_opt import config, runner
        from drex_opt import storage as storage_mod
        from drex_opt.early_stop import curve_of

        plan = self.plan
        trial.set_user_attr("worker", storage_mod.worker_id())
        if self.monitor:
            self.monitor.started(trial.number)
        try:
            overrides, adjustments = self.overrides_for(trial)
        except TrialFailure as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        cfg = config.merge(plan.baseline, overrides)
        run_dir = (plan.studies_dir / plan.study_name / f"trial-{trial.number}").resolve()
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("clamp_adjustments", adjustments)
        trial.set_user_attr("run_dir", str(run_dir))
        references = self._references(trial) if plan.early_stopping else []

        # The baseline trial is the study's reference point: it always runs to the end.
        judge = plan.early_stopping and trial.user_attrs.get("role") != BASELINE_ROLE

        def stop_rule(event: dict, history: list) -> str | None:
            return self.rule.check(history, plan.timesteps, references) if judge else None

        def on_event(event: dict) -> None:
            if self.monitor and event.get("event") == "progress":
                self.monitor.progress(trial.number, event)

        result = runner.run_training(cfg, run_dir, plan.env, timeout=plan.trial_timeout, on_event=on_event,
                                     stop_rule=stop_rule, threads=plan.threads_per_trial(), cancel=self.cancel)
        s = result.summary
        ext = s.get("metrics_extended") or {}
        analysis = s.get("behavioral_analysis") or {}
        for key, value in {
            "status": s["status"], "agent_steps": s.get("agent_steps"), "wall_time_s": s.get("wall_time_s"),
            "sps": ext.get("SPS"), "checkpoint": s.get("checkpoint"),
            "behavioral_analysis": {k: analysis.get(k) for k in ("severity", "next_focus", "insights")},
            "curve": curve_of(result.history, plan.timesteps),
        }.items():
            trial.set_user_attr(key, value)
        try:
            values = self._objectives(trial, s)
        except BaseException as exc:
            self._record(trial, s, run_dir, _outcome_of(exc))
            raise
        self._record(trial, s, run_dir, "complete: " + ", ".join(
            f"{label} {v:.1%}" for label, v in zip(("grip", "delivery", "e2e"), values)))
        return values

    def _objectives(self, trial, s: dict) -> tuple[float, float, float]:
        """The trial's objectives from its summary; raises for interrupted, stopped, failed."""
        import optuna

        if s.get("error") == "interrupted":
            trial.set_user_attr("fail_reason", "interrupted")
            raise KeyboardInterrupt  # Optuna records the trial as FAIL, the worker stops
        if s["status"] == "stopped":
            trial.set_user_attr("prune_reason", s["error"])
            raise optuna.TrialPruned(s["error"])
        if s["status"] != "completed":
            reason = f"{s['status']}: {s.get('error')}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailure(reason)
        values = [s.get(name) for name in OBJECTIVES]
        missing = [n for n, v in zip(OBJECTIVES, values) if not isinstance(v, (int, float)) or not math.isfinite(v)]
        if missing:
            reason = f"missing metrics: {', '.join(missing)}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailure(reason)
        return tuple(float(v) for v in values)  # type: ignore[return-value]

    def _record(self, trial, summary: dict, run_dir: Path, outcome: str) -> None:
        """The dashboard note and run files, while the trial can still take them (RUNNING)."""
        from drex_opt import dashboard

        dashboard.record_trial(trial, self.plan, summary, run_dir, outcome)

    def _references(self, trial) -> list:
        """Grip curves of completed trials that ran the same budget."""
        from optuna.trial import TrialState

        out = []
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            curve = t.user_attrs.get("curve")
            if curve and t.user_attrs.get("overrides", {}).get("train", {}).get("total_timesteps") == self.plan.timesteps:
                out.append([tuple(p) for p in curve])
        return out


def _outcome_of(exc: BaseException) -> str:
    """One line for a trial that did not complete: ``pruned: <reason>`` or ``failed: <reason>``."""
    import optuna

    if isinstance(exc, optuna.TrialPruned):
        return f"pruned: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "failed: interrupted"
    reason = str(exc) or type(exc).__name__
    return reason if reason.startswith("failed") else f"failed: {reason}"  # not "failed: failed: ..."


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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run(plan: StudyPlan, monitor: StudyMonitor | None = None) -> StudyResult:
    """Run ``plan.trials`` new trials (``plan.jobs`` at a time), then the seed repeats.

    Ctrl-C (or SIGTERM) stops the children, fails the running trials and returns with
    ``interrupted`` set; the study can be resumed by running the same command again.
    """
    from drex_opt import storage as storage_mod

    study = open_study(plan)
    stale = storage_mod.fail_stale_trials(study)
    cancel = threading.Event()
    objective = TrialRunner(plan, monitor, cancel)
    deadline = time.time() + plan.timeout if plan.timeout else None
    budget = {"left": plan.trials}
    budget_lock = threading.Lock()

    def take() -> bool:
        with budget_lock:
            if budget["left"] <= 0 or cancel.is_set() or (deadline and time.time() >= deadline):
                return False
            budget["left"] -= 1
            return True

    def callback(study_, trial) -> None:
        if monitor:
            reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("prune_reason")
            monitor.finished(trial.number, trial.state.name, trial.values, reason)

    # Held from before a worker asks for a trial until its objective starts: SQLite ignores
    # row locks, so two threads could otherwise both pop the same enqueued (waiting) trial.
    ask_lock = threading.Lock()
    holder = threading.local()

    def objective_call(trial):
        if getattr(holder, "locked", False):
            holder.locked = False
            ask_lock.release()
        return objective(trial)

    def worker() -> None:
        while take():
            ask_lock.acquire()
            holder.locked = True
            try:
                study.optimize(objective_call, n_trials=1, catch=(TrialFailure,), callbacks=[callback],
                               gc_after_trial=False, show_progress_bar=False)
            except KeyboardInterrupt:
                cancel.set()
                return
            finally:
                if holder.locked:
                    holder.locked = False
                    ask_lock.release()

    interrupted = _run_workers(worker, plan.jobs, cancel)
    repeats = {}
    if not interrupted and plan.repeats > 0:
        if monitor:
            monitor.phase = "repeats"
        repeats = run_repeats(study, plan, cancel, monitor)
        interrupted = cancel.is_set()
    return summarize(study, plan, plan.trials - budget["left"], repeats, interrupted, stale)


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


def run_repeats(study, plan: StudyPlan, cancel: threading.Event, monitor: StudyMonitor | None) -> dict:
    """Re-train the top Pareto trials with ``plan.repeats`` new seeds; record mean and spread.

    Stored as study user attribute ``repeats:<trial number>`` (a finished trial cannot be
    changed): seeds, values per seed (the trial's own run first), mean and stdev per
    objective. Trials that already have repeats are skipped.
    """
    from concurrent.futures import ThreadPoolExecutor

    from drex_opt import config, runner

    try:
        front = study.best_trials
    except Exception:  # noqa: BLE001
        return {}
    front = sorted(front, key=lambda t: tuple(t.values[i] for i in (2, 1, 0)), reverse=True)
    todo = [t for t in front[:MAX_REPEAT_CANDIDATES] if f"repeats:{t.number}" not in study.user_attrs]
    jobs = [(t, k) for t in todo for k in range(1, plan.repeats + 1)]
    results: dict[int, list] = {t.number: [] for t in todo}

    def one(item):
        trial, k = item
        if cancel.is_set():
            return trial.number, k, None
        overrides = trial.user_attrs.get("overrides") or {}
        seed = (plan.seed + 7919 * k + trial.number) % 2_147_483_647
        cfg = config.merge(plan.baseline, config.merge(overrides, {"train": {"seed": seed}}))
        run_dir = plan.studies_dir / plan.study_name / f"trial-{trial.number}-seed-{seed}"
        res = runner.run_training(cfg, run_dir, plan.env, timeout=plan.trial_timeout,
                                  threads=plan.threads_per_trial(), cancel=cancel)
        s = res.summary
        values = [s.get(name) for name in OBJECTIVES]
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
    from drex_opt import storage as storage_mod

    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    try:
        front = study.best_trials
    except Exception:  # noqa: BLE001
        front = []
    pareto = [{"number": t.number, "values": dict(zip(OBJECTIVES, t.values)),
               "means": dict(zip(OBJECTIVES, trial_means(study, t))), "params": t.params,
               "baseline": t.user_attrs.get("role") == BASELINE_ROLE} for t in front]
    best = pick_best(study)
    return StudyResult(
        study_name=plan.study_name, storage=storage_mod.redact(plan.storage_url), focus=plan.focus,
        space_focus=plan.space_focus, severity=plan.severity, trials_run=trials_run, states=states,
        pareto=sorted(pareto, key=lambda p: p["number"]),
        best=None if best is None else {"number": best.number, "values": dict(zip(OBJECTIVES, trial_means(study, best))),
                                        "params": best.params},
        repeats={str(k): v for k, v in repeats.items()}, interrupted=interrupted, stale_failed=stale,
    )
