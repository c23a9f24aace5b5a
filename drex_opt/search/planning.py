"""Planning a study: the user's options checked and resolved into a plan; nothing runs.

Focus (given, or read from a run's behavioural analysis: the one its summary stores,
drex-opt's rules when none is stored or with ``recompute``) → search space and budget →
storage, name, seed and per-trial limits. Everything is validated here, so a bad option,
file or storage stops the command before any training starts.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from drex_opt.envs import puffer
from drex_opt.errors import UserError
from drex_opt.rules import behavior, config, machine
from drex_opt.rules.objectives import OBJECTIVES, best_trial
from drex_opt.run import checkpoint, env_metrics, metrics, runner
from drex_opt.search import spaces
from drex_opt.search import storage as storage_mod

# Per-trial kill switch when none is given: generous start-up plus a floor of 5k steps/s.
TRIAL_TIMEOUT_BASE_S = 120.0
TRIAL_TIMEOUT_MIN_SPS = 5_000.0
QUICK_MAX_TIMESTEPS = 5_000_000  # a baseline file at or below this uses the quick budgets
MAX_REPEAT_CANDIDATES = 3  # seed repeats re-train at most this many Pareto trials
SAMPLERS = ("tpe", "random")  # a study's StudyPlan.sampler


@dataclass
class StudySettings:
    """What the user asked for (command-line options); :func:`plan` checks it."""

    focus: str | None = None
    from_run: Path | None = None
    recompute: bool = False  # with from_run: drex-opt's rules decide, not the stored analysis
    baseline: str | None = None  # None: the from_run run's own config.json, else "quick"
    from_scratch: bool = False  # with from_run: trials train fresh weights, not the run's drone
    warm_start: Path | None = None  # the checkpoint every trial continues (default: from_run's)
    env: str = "drone_pp"
    storage: str | None = None
    study_name: str | None = None
    trials: int | None = None
    timeout: float | None = None
    timesteps: int | None = None
    seed: int | None = None
    jobs: int = 1
    repeats: int | None = None
    budget: int | None = None  # agent steps the whole study may train: the trials that fit run
    trial_timeout: float | None = None
    early_stopping: bool = True
    forked: bool = True  # trials fork from a preloaded server, else fresh interpreters
    sampler: str = "tpe"  # one of SAMPLERS
    studies_dir: Path = Path("studies")
    command: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class StudyPlan:
    """A validated study, ready to run."""

    focus: str
    severity: str | None
    insights: list[str]
    from_run: Path | None
    space: spaces.SearchSpace
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
    forked: bool = True  # trials fork from a warm server (drex_opt.run.forkserver), else fresh interpreters
    warm_start: Path | None = None  # the checkpoint every trial continues; None: fresh weights
    warm_start_steps: int | None = None  # agent steps that drone has seen (None: it does not say)
    warm_start_declined: str | None = None  # why the --from-run run's drone is not continued
    storage: optuna.storages.BaseStorage | None = None  # opened while planning, to fail early
    reading: behavior.EffectiveAnalysis | None = None  # from_run: the analysis used and the other one
    objectives: tuple[str, ...] = OBJECTIVES  # what the env measures, in the order of a trial's values
    objectives_note: str | None = None  # why they are not all three
    sampler: str = "tpe"  # one of SAMPLERS: "random" keeps the space and trial 0 but samples blindly

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """Multivariate multi-objective TPE (constant liar: parallel workers do not propose
        the same point), or Optuna's RandomSampler over the same space."""
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        if self.sampler != "tpe":
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.startup_trials, constant_liar=True,
                                          multivariate=True)

    def threads_per_trial(self) -> int:
        return max(1, machine.usable_cpus() // self.jobs)


def baseline_label(baseline: str, cfg: dict) -> tuple[str, str]:
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
    if (settings.focus is None) == (settings.from_run is None):
        raise UserError("give exactly one of --focus FOCUS or --from-run DIR")
    if settings.recompute and settings.from_run is None:
        raise UserError("--recompute applies to --from-run only")
    if settings.sampler not in SAMPLERS:
        raise UserError(f"unknown --sampler {settings.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    severity, insights, reading = None, [], None
    focus = settings.focus
    if settings.from_run is not None:
        # Before the storage opens: a run with no searchable focus must leave nothing behind.
        reading, focus = _focus_of_run(settings.from_run, settings.recompute)
        severity, insights = reading.analysis["severity"], behavior.insights_of(reading.analysis)
    if focus not in spaces.FOCI:
        raise UserError(f"unknown focus {focus!r}; valid foci: {', '.join(spaces.FOCI)}")
    for name, value, low in (("--trials", settings.trials, 1), ("--timesteps", settings.timesteps, 1000),
                             ("--jobs", settings.jobs, 1), ("--repeats", settings.repeats, 0),
                             ("--budget", settings.budget, 1)):
        if value is not None and value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    for name, value in (("--timeout", settings.timeout), ("--trial-timeout", settings.trial_timeout)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive number of seconds, got {value}")
    if settings.timesteps is not None and settings.timesteps > 1_000_000_000:
        raise UserError(f"--timesteps {settings.timesteps} is above the maximum 1000000000")
    runner.check_env_name(settings.env)
    objectives, objectives_note = env_metrics.objectives_of(settings.env, _logging_evidence(settings))
    baseline_name = settings.baseline or _run_config(settings.from_run) or "quick"
    baseline = config.load_baseline(baseline_name)
    machine.check_here(baseline)  # every trial trains here, on the baseline's device and topology
    label, budget_name = baseline_label(baseline_name, baseline)
    warm_start, declined = _warm_start(settings, baseline)
    url = storage_mod.storage_url(settings.storage)
    storage = storage_mod.open_storage(url)
    study_name = settings.study_name or default_study_name(focus, label, settings.env, warm_start is not None)

    space = spaces.load(focus)
    if warm_start is not None:
        # A drone that already flies: ranges around its configuration, a continuation's budget.
        space = spaces.for_warm_start(space, baseline)
    space_focus = focus
    # The budget is the focus's own, read before "continue" borrows another focus's params.
    budget = space.budget_for(budget_name, None if warm_start is not None else severity)
    if warm_start is not None and severity == "critical":
        # A critical drone gets the diagnostic focus's short budget; continuing one, its warm budget.
        budget = spaces.for_warm_start(spaces.load(spaces.DIAGNOSTIC_FOCUS), baseline).budget_for(budget_name)
    if space.inherit:
        space, space_focus = _continue_space(storage, label, settings.env, baseline, warm_start is not None)
    seed = settings.seed if settings.seed is not None else int(baseline["train"]["seed"])
    if not 0 <= seed <= 2_147_483_647:
        raise UserError(f"--seed {seed} is outside 0..2147483647")
    timesteps = settings.timesteps or budget.timesteps
    planned = StudyPlan(
        focus=focus, severity=severity, insights=insights, space=space, space_focus=space_focus,
        from_run=None if settings.from_run is None else Path(settings.from_run).resolve(),
        baseline_name=baseline_name, baseline=baseline, study_name=study_name, storage_url=url,
        env=settings.env, timesteps=timesteps, trials=settings.trials or budget.trials,
        startup_trials=budget.startup_trials,
        repeats=budget.repeats if settings.repeats is None else settings.repeats, seed=seed,
        jobs=settings.jobs, timeout=settings.timeout,
        trial_timeout=settings.trial_timeout or TRIAL_TIMEOUT_BASE_S + timesteps / TRIAL_TIMEOUT_MIN_SPS,
        # Early stopping compares grip curves: an env that logs no grip trains every trial out.
        early_stopping=settings.early_stopping and "grip_success" in objectives, studies_dir=Path(settings.studies_dir), forked=settings.forked, sampler=settings.sampler,
        warm_start=warm_start, warm_start_steps=checkpoint.steps_seen(warm_start) if warm_start else None,
        warm_start_declined=declined,
        # Stored on the study and shown on the dashboard: never with a password in it.
        command=storage_mod.redact_command(settings.command),
        storage=storage, reading=reading, objectives=objectives, objectives_note=objectives_note,
    )
    if settings.budget is not None and fit_budget(planned, settings.budget) < 2:
        raise UserError(f"--budget {settings.budget:,} agent steps is too small: one trial of {timesteps:,} steps "
                        f"can train up to {trial_steps_bound(planned):,} (whole batches), and a study needs at least "
                        "two trials")
    return planned


def steps_of(timesteps: int, batch_size: int) -> int:
    """Agent steps a run of ``timesteps`` really trains: PufferLib collects whole batches."""
    return max(1, math.ceil(timesteps / batch_size)) * batch_size


def trial_steps_bound(plan: StudyPlan) -> int:
    """The most agent steps one trial of ``plan`` can train: its budget rounded up to whole
    batches of the largest batch it may sample (the agents times the longest horizon)."""
    base = plan.baseline
    horizons = [base["train"]["bptt_horizon"]]
    spec = plan.space.params.get("train.bptt_horizon")
    if spec is not None:
        horizons += list(spec.choices or []) + [v for v in (spec.high,) if v is not None]
    agents = base["train"]["batch_size"] // base["train"]["bptt_horizon"]
    return steps_of(plan.timesteps, agents * int(max(horizons)))


def fit_budget(plan: StudyPlan, budget: float) -> int:
    """Fit ``plan`` into ``budget`` agent steps; the number of trials that fit.

    With two or more, ``plan.trials`` becomes that number and ``plan.repeats`` is kept only
    if the seed repeats fit as well (the budget counts every training, whatever it is for);
    with fewer, ``plan`` is left as it was: no study fits (two trials: the control and one
    change, or two settings to compare).
    """
    per_trial = trial_steps_bound(plan)
    fits = int(min(plan.trials, budget // per_trial))
    if fits >= 2:
        repeats = plan.repeats * min(MAX_REPEAT_CANDIDATES, fits)
        plan.trials = fits
        plan.repeats = plan.repeats if (fits + repeats) * per_trial <= budget else 0
    return fits


def _run_config(from_run: Path | None) -> str | None:
    """A run folder's ``config.json``: a study of a run searches around the run's own configuration."""
    if from_run is None:
        return None
    folder = Path(from_run) if Path(from_run).is_dir() else Path(from_run).parent
    path = folder / "config.json"
    return str(path) if path.is_file() else None


def _warm_start(settings: StudySettings, baseline: dict) -> tuple[Path | None, str | None]:
    """The checkpoint the trials continue: ``--warm-start``, else the ``--from-run`` run's
    (unless ``--from-scratch``), else none; and why the run's was not taken, if it was not.

    The checkpoint must load into the baseline's policy. The run's own checkpoint is passed
    over when its policy has unlearned (:mod:`drex_opt.rules.unlearned`): the study trains
    from fresh weights, as ``--from-scratch`` would. A ``--warm-start`` named by the user is
    always taken.

    Raises:
        UserError: conflicting options, a missing checkpoint (the message names the file)
            or one that does not fit the policy.
    """
    if settings.from_scratch and settings.warm_start is not None:
        raise UserError("give --from-scratch or --warm-start, not both")
    if settings.warm_start is not None:
        path = Path(settings.warm_start)
        if not path.is_file():
            raise UserError(f"--warm-start: checkpoint not found: {path}")
        path = path.resolve()
    elif settings.from_run is not None and not settings.from_scratch:
        path = checkpoint.of_run(settings.from_run)
    else:
        return None, None
    checked = runner.check_checkpoint(baseline, settings.env, path)
    if checked.problem:
        raise UserError(f"cannot warm-start from {path}: {checked.problem}")
    if settings.warm_start is None and checked.unlearned:
        return None, f"the run's drone ({path}) is not continued: {checked.unlearned}; trials train fresh weights"
    return path, None


def _logging_evidence(settings: StudySettings) -> dict | None:
    """What a run of the env logged (``not_logged``, ``logged``): the ``--from-run`` run, or
    the run beside a ``--warm-start`` checkpoint; None without one."""
    folder = settings.from_run
    if folder is None and settings.warm_start is not None:
        beside = Path(settings.warm_start).parent
        folder = beside if (beside / "summary.json").is_file() else None
    if folder is None:
        return None
    try:
        return metrics.read_run(folder).extra
    except UserError:
        return None


def _focus_of_run(from_run: Path, recompute: bool) -> tuple[behavior.EffectiveAnalysis, str]:
    """The run's effective analysis and its focus, which must have a search space.

    Raises:
        UserError: the run cannot be read, or its analysis's next_focus is not searchable
            (a run that failed before reporting, an owner's focus drex-opt has no space
            for); the message says what to do instead.
    """
    run = metrics.read_run(from_run)
    reading = metrics.run_analysis(run, recompute)
    focus = reading.analysis["next_focus"]
    if focus in spaces.FOCI:
        return reading, focus
    whose = "stored analysis" if reading.source == behavior.STORED else "analysis by drex-opt's rules"
    advice = "use --focus FOCUS instead of --from-run"
    ours = reading.rules["next_focus"]
    if reading.source == behavior.STORED and ours in spaces.FOCI:
        advice += f", or add --recompute to use drex-opt's rules (next_focus {ours!r})"
    raise UserError(f"run {from_run}: its {whose} gives next_focus {focus!r}, which has no search "
                    f"space; {advice} (foci: {', '.join(spaces.FOCI)})")


def default_study_name(focus: str, baseline_label: str, env: str, warm: bool = False) -> str:
    """Stable per (focus, baseline, env, warm or scratch): the same command resumes the same
    study, and trials that continue a drone never mix with trials from fresh weights."""
    name = f"drex-{focus}-{baseline_label}" + ("-warm" if warm else "")
    return name if env == "drone_pp" else f"{name}-{puffer.env_label(env)}"


def _continue_space(storage, label: str, env: str, baseline: dict, warm: bool):
    """``continue``: the most recent other focus's space, narrowed around its best trial.

    Without such a study (a first run that already looks fine), the broadest space,
    ``optimize_performance``, narrowed around the baseline itself: small moves from the
    best configuration known, which is the baseline. A warm study continues the drone of
    ``baseline``: that focus's warm ranges around ``baseline`` are already narrow.
    """
    candidates = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if attrs.get("drex_opt") and attrs.get("focus") not in (None, "continue") \
                and attrs.get("baseline_label") == label and attrs.get("env") == env:
            candidates.append((str(summary.datetime_start or ""), summary.study_name, attrs["focus"]))
    candidates.sort()
    for _, name, focus in reversed(candidates):
        study = optuna.load_study(study_name=name, storage=storage)
        best = best_trial(study)
        if best is not None:
            if warm:
                return spaces.for_warm_start(spaces.load(focus), baseline), focus
            center = best.user_attrs.get("overrides") or {}
            return spaces.narrow(spaces.load(focus), center), focus
    if warm:
        return spaces.for_warm_start(spaces.load("optimize_performance"), baseline), "optimize_performance"
    return spaces.narrow(spaces.load("optimize_performance"), baseline), "optimize_performance"
