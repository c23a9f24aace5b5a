"""The ``drex-opt`` command line: registers commands, parses options, prints.

No logic lives here; every command calls one function of a module below and renders
the result it returns (the same object feeds ``--json``). Heavy libraries (torch,
pufferlib, optuna) are imported inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import gc
import signal
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from drex_opt.errors import UserError

app = typer.Typer(
    name="drex-opt",
    help="Behaviour-driven Bayesian hyperparameter search for PufferLib drone pick-and-place training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Shared options, declared once.
EnvOpt = Annotated[str, typer.Option("--env", help="drone_pp or drone_pp_hard (built in), a PufferLib environment name (puffer_drone, puffer_drone_delivery) or module:Class.")]
EnvConfigOpt = Annotated[Optional[Path], typer.Option("--env-config", help="A PufferLib .ini for the env (its env, vec, policy, rnn, train and drex.metrics sections); layered over the installed one's, gives a module:Class env its settings.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON result on stdout.")]


def env_id(env: str, env_config: Optional[Path]) -> str:
    from drex_opt.envs import BUILTIN_ENVS
    from drex_opt.envs.puffer import make_env_id

    if env_config is not None and env in BUILTIN_ENVS:
        raise UserError(f"--env-config is for PufferLib envs; {env} is built in and takes its settings from the run config")
    if env_config is not None and not env_config.is_file():
        raise UserError(f"--env-config {env_config}: no such file")
    return make_env_id(env, env_config)


def _warn_topology(cfg: dict, env: str) -> None:
    """A foreign env trained with far fewer agents than its .ini configures: say so first."""
    from drex_opt.run import runner

    shrunk = runner.topology_warning(cfg, env)
    if shrunk:
        typer.echo(f"warning: {shrunk}", err=True)


RecomputeOpt = Annotated[bool, typer.Option("--recompute", help="Use drex-opt's rules on the run's metrics instead of the behavioral_analysis its summary stores.")]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error on stderr and exit (2 = bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _quiet_optuna() -> None:
    """Optuna logs every finished trial at INFO; the commands show their own progress."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def user_errors(fn: Callable) -> Callable:
    """Turn :class:`UserError` into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    return wrapper


def print_json(obj) -> None:
    from drex_opt.jsonio import dumps

    sys.stdout.write(dumps(obj) + "\n")


# ---------------------------------------------------------------- train
@app.command()
@user_errors
def train(
    config: Annotated[str, typer.Option("--config", "-c", help="Run config (the brief's nested JSON): quick, full or the path of a full config.")] = "quick",
    override: Annotated[Optional[Path], typer.Option("--override", help="JSON file of overrides merged on top of --config (validated).")] = None,
    timesteps: Annotated[Optional[int], typer.Option("--timesteps", help="Override train.total_timesteps.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override train.seed.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder (default: $PUFFER_AUTOPILOT_RUN_DIR or autopilot/runs/<UTC timestamp>).")] = None,
    env: EnvOpt = "drone_pp",
    env_config: EnvConfigOpt = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Kill the training after this many seconds (status timeout).")] = None,
    load_model: Annotated[Optional[Path], typer.Option("--load-model-path", help="Start from this checkpoint (.pt) instead of fresh weights.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one real PufferLib training in a child process and write a run folder."""
    from drex_opt.run import runner
    from drex_opt.views import console

    job = runner.prepare_training(config_path=config, override_path=override, timesteps=timesteps, seed=seed,
                                  run_dir=run_dir, env_name=env_id(env, env_config), timeout=timeout, load_model=load_model)
    for warning in job.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        result = job.run()
        print_json(result.summary)
    else:
        with console.TrainProgress(job.config["train"]["total_timesteps"]) as progress:
            result = job.run(on_event=progress.update)
        console.print_train_result(result)
    if result.summary.get("status") != "completed":
        raise typer.Exit(1)


# ---------------------------------------------------------------- analyze
@app.command()
@user_errors
def analyze(
    path: Annotated[Path, typer.Argument(help="A run folder, a summary.json, a training log, or a JSON object of environment/* metrics.", show_default=False)],
    recompute: RecomputeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Explain what the drone does wrong and what to fix next (reads only, never writes).

    A summary's stored behavioral_analysis is shown as the run's analysis; drex-opt's rules
    decide when none is stored or with --recompute, and any disagreement is shown.
    """
    from drex_opt.run import metrics

    run = metrics.read_run(path)
    reading = metrics.run_analysis(run, recompute)
    if as_json:
        print_json(reading.to_dict())
    else:
        from drex_opt.views import behavior as views_behavior

        views_behavior.print_analysis(run, reading)


# ---------------------------------------------------------------- runs
@app.command()
@user_errors
def runs(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of run folders, each with a summary.json.")] = Path("autopilot/runs"),
    recompute: RecomputeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List past runs oldest first: success rates, severity, focus and the change since the previous run."""
    from drex_opt.run import metrics
    from drex_opt.views import behavior as views_behavior

    found = metrics.list_runs(directory)
    rows = metrics.run_history(found, recompute)
    views_behavior.print_skipped(found.skipped)
    if as_json:
        print_json(rows)
    else:
        views_behavior.print_runs(rows, directory, recompute)


# ---------------------------------------------------------------- validate
@app.command()
@user_errors
def validate(
    proposal: Annotated[Path, typer.Argument(help="Proposal JSON (overrides in the brief's nested format), e.g. autopilot/proposals/next_config.json.")],
    baseline: Annotated[str, typer.Option("--baseline", "-b", help="quick, full or a path to a full config.")] = "quick",
    clamp: Annotated[bool, typer.Option("--clamp", help="Repair the proposal into the safety ranges and print it (exit 0).")] = False,
    here: Annotated[bool, typer.Option("--here", help="The run trains on this machine: its devices and cores are rules too (and --clamp fits them).")] = False,
    cores: Annotated[Optional[int], typer.Option("--cores", help="Cores of the machine the proposal is meant for, for the brief's topology advice (default: this machine's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a proposal against the brief's safety rules; writes nothing.

    Valid: prints the overrides (nested, with the derived batch sizes). Invalid: one line
    per problem on stderr and exit code 2. The brief's topology advice is printed as
    warnings and never fails a proposal.
    """
    from drex_opt.rules import config, machine
    from drex_opt.jsonio import read_json_object

    base = config.load_baseline(baseline)
    result = machine.review(read_json_object(proposal, "proposal"), base, repair=clamp, here=here, cores=cores)
    if as_json:
        print_json(result.to_dict())
    else:
        from drex_opt.views import config as views_config

        views_config.print_review(result, baseline, clamped=clamp, here=here)
    if not result.valid and not clamp:
        raise typer.Exit(2)


# ---------------------------------------------------------------- spaces
@app.command()
@user_errors
def spaces(
    focus: Annotated[Optional[str], typer.Argument(help="Show one focus (e.g. improve_grip); omit to list them all.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the search spaces per behavioural focus, or show one in detail."""
    from drex_opt.search import spaces as search_spaces
    from drex_opt.views import config as views_config

    if focus is None:
        loaded = search_spaces.load_all()
        if as_json:
            print_json([space.model_dump(mode="json") for space in loaded.values()])
        else:
            views_config.print_spaces(loaded)
        return
    space = search_spaces.load(focus)
    if as_json:
        print_json(space.model_dump(mode="json"))
    else:
        views_config.print_space(space)


# ---------------------------------------------------------------- study
StorageOpt = Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default: $DREX_STORAGE or sqlite:///studies/drex-opt.db); journal:PATH for a journal file.")]
StudyNameOpt = Annotated[Optional[str], typer.Option("--study-name", help="Study name (default: derived from focus, baseline and env).")]


@app.command()
@user_errors
def study(
    focus: Annotated[Optional[str], typer.Option("--focus", help="Behavioural focus to search (see drex-opt spaces).")] = None,
    from_run: Annotated[Optional[Path], typer.Option("--from-run", help="Take the focus (and severity) from this run's behavioural analysis (the one its summary stores); every trial continues the run's drone (its model.pt) with the run's configuration as baseline.")] = None,
    recompute: RecomputeOpt = False,
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="With --from-run: trials train fresh weights instead of continuing the run's checkpoint.")] = False,
    warm_start: Annotated[Optional[Path], typer.Option("--warm-start", help="Every trial continues this checkpoint (.pt) instead.")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", "-b", help="quick, full or a path to a full config (default: the --from-run run's config.json, else quick).", show_default=False)] = None,
    env: EnvOpt = "drone_pp",
    env_config: EnvConfigOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="New trials to run (default: the space's budget).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop starting new trials after this many seconds.")] = None,
    timesteps: Annotated[Optional[int], typer.Option("--timesteps", help="Agent steps per trial (default: the space's budget).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampler seed and the trials' training seed (default: the baseline's).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Trials at once on this machine (threads capped per trial).")] = 1,
    repeats: Annotated[Optional[int], typer.Option("--repeats", help="Re-train the top Pareto trials with this many new seeds (default: the space's).")] = None,
    budget: Annotated[Optional[int], typer.Option("--budget", help="Agent steps the whole study may train (trials and seed repeats, each counted at its largest batch): only the trials that fit run, at least two.")] = None,
    trial_timeout: Annotated[Optional[float], typer.Option("--trial-timeout", help="Kill one trial's training after this many seconds.")] = None,
    no_early_stopping: Annotated[bool, typer.Option("--no-early-stopping", help="Never stop a trial early on its behaviour.")] = False,
    no_fork: Annotated[bool, typer.Option("--no-fork", help="Start each trial in a fresh Python instead of forking a preloaded one (slower start; for envs that cannot be forked).")] = False,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe (multi-objective TPE) or random (the same space and trial 0, sampled blindly: a control for the search itself).")] = "tpe",
    as_json: JsonOpt = False,
) -> None:
    """Multi-objective Bayesian search (grip, delivery, end-to-end) over a focus's space; each trial is one PufferLib run."""

    from drex_opt.search import planning, study as study_mod
    from drex_opt.search.monitor import StudyMonitor
    from drex_opt.views import study as views_study

    _quiet_optuna()
    # A shell starts background jobs with SIGINT ignored; a study must still stop cleanly on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = planning.StudySettings(
        focus=focus, from_run=from_run, recompute=recompute, baseline=baseline, env=env_id(env, env_config), storage=storage,
        study_name=study_name, trials=trials, timeout=timeout, timesteps=timesteps, seed=seed, jobs=jobs, repeats=repeats,
        budget=budget, trial_timeout=trial_timeout, early_stopping=not no_early_stopping, forked=not no_fork,
        from_scratch=from_scratch, warm_start=warm_start, sampler=sampler,
    )
    plan = planning.plan(settings)
    _warn_topology(plan.baseline, plan.env)
    if plan.warm_start_declined:
        typer.echo(f"note: {plan.warm_start_declined}", err=True)
    monitor = StudyMonitor(plan)
    if as_json:
        result = study_mod.run(plan, monitor)
        print_json(result.to_dict())
    else:
        with views_study.StudyDisplay(monitor):
            result = study_mod.run(plan, monitor)
        views_study.print_result(result)
    if result.interrupted:
        raise typer.Exit(130)


# ---------------------------------------------------------------- export
@app.command()
@user_errors
def export(
    study_name: StudyNameOpt = None,
    storage: StorageOpt = None,
    pick: Annotated[str, typer.Option("--pick", help="e2e (then delivery, then grip), delivery, grip, or balanced (closest to the ideal point).")] = "e2e",
    out: Annotated[Path, typer.Option("--out", help="Proposal file to write.")] = Path("autopilot/proposals/next_config.json"),
    baseline: Annotated[Optional[str], typer.Option("--baseline", "-b", help="Write overrides relative to this baseline (default: the study's).")] = None,
    notes: Annotated[Optional[Path], typer.Option("--notes", help="Lab notebook to append to (default: the study's run notes.txt, else autopilot/notes.txt).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the proposal; write nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export the study's winner (Pareto front) as the autopilot's next_config.json, with a lab-notes entry."""
    from drex_opt.search import export as export_mod
    from drex_opt.search import storage as storage_mod

    _quiet_optuna()
    result = export_mod.export(study_name, storage_mod.storage_url(storage), pick=pick, out=out,
                               dry_run=dry_run, baseline=baseline, notes=notes)
    if as_json:
        print_json(result.to_dict())
    else:
        from drex_opt.views import console as views

        views.print_export(result)


# ---------------------------------------------------------------- autopilot
@app.command()
@user_errors
def autopilot(
    mode: Annotated[str, typer.Option("--mode", help="quick (smoke baseline) or full (long baseline).")] = "quick",
    runs: Annotated[Optional[int], typer.Option("--runs", help="Iterations of the loop (default 1, or as many as --budget allows).", show_default=False)] = None,
    budget: Annotated[Optional[int], typer.Option("--budget", help="Agent steps the whole loop may train, studies included; nothing starts that would exceed it.")] = None,
    optimize: Annotated[bool, typer.Option("--optimize", help="After each run, study its focus and export the winner as the next proposal.")] = False,
    timesteps: Annotated[Optional[int], typer.Option("--timesteps", help="Override train.total_timesteps of every run.")] = None,
    autopilot_dir: Annotated[Path, typer.Option("--autopilot-dir", help="Folder with configs/, proposals/, runs/, logs/, models/.")] = Path("autopilot"),
    env: EnvOpt = "drone_pp",
    env_config: EnvConfigOpt = None,
    storage: StorageOpt = None,
    study_trials: Annotated[Optional[int], typer.Option("--study-trials", help="Trials of each --optimize study (default: the focus's budget).")] = None,
    study_timesteps: Annotated[Optional[int], typer.Option("--study-timesteps", help="Steps per trial of each --optimize study.")] = None,
    study_budget: Annotated[Optional[int], typer.Option("--study-budget", help="Agent steps each --optimize study may train: the trials that fit run (at least two), else that run gets no study. Default: the agent steps of the run it follows, unless --study-trials or --study-timesteps size the study.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel trials of each --optimize study.")] = 1,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Kill a training run after this many seconds.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The autopilot loop: baseline + next_config.json -> run -> behavioural analysis -> notes -> next proposal."""
    from drex_opt import autopilot as autopilot_mod

    _quiet_optuna()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = autopilot_mod.AutopilotSettings(
        mode=mode, runs=runs, budget=budget, optimize=optimize, timesteps=timesteps, autopilot_dir=autopilot_dir, env=env_id(env, env_config),
        storage=storage, study_trials=study_trials, study_timesteps=study_timesteps, study_budget=study_budget,
        jobs=jobs, timeout=timeout,
    )
    def on_stop(reason: str) -> None:
        typer.echo(reason, err=True)

    if as_json:
        results = autopilot_mod.run_loop(settings, on_stop=on_stop)
        print_json([r.to_dict() for r in results])
        return
    from drex_opt.views import console as views

    progress: dict = {}

    def on_start(i: int):
        if "bar" in progress:
            progress["bar"].close()
        progress["bar"] = views.LazyTrainProgress(f"run {i + 1}" + (f"/{runs}" if runs else ""))
        return progress["bar"].update

    def on_done(result) -> None:
        progress["bar"].close()
        views.print_autopilot_result(result)

    autopilot_mod.run_loop(settings, on_start=on_start, on_done=on_done, on_stop=on_stop)


# ---------------------------------------------------------------- dashboard
@app.command()
@user_errors
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 exposes the dashboard to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
) -> None:
    """Browse the studies in optuna-dashboard: trials, notes, run files, Pareto plots (Ctrl-C stops)."""
    from drex_opt.search import dashboard as dashboard_mod

    _quiet_optuna()

    def ready(url: str, where: str, artifacts: Path) -> None:
        typer.echo(f"optuna-dashboard on {url} (storage {where}, run files in {artifacts}); Ctrl-C stops", err=True)

    dashboard_mod.serve(storage, host, port, on_ready=ready)


# ---------------------------------------------------------------- report
@app.command()
@user_errors
def report(
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Study to report on (may be omitted when the storage holds one study).")] = None,
    storage: StorageOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the images and report.md (default: studies/<study>/report/).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a study's report: Pareto front, objective history and parameter importance images, and report.md."""
    from drex_opt.search import report as report_mod
    from drex_opt.views import report as views_report

    _quiet_optuna()
    result = report_mod.build(storage=storage, study_name=study_name, out=out)
    views_report.write_files(result)
    if as_json:
        print_json(result.to_dict())
    else:
        views_report.print_report(result)


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    finally:
        # The command's files are written and closed: spare the interpreter its last full
        # collection over every imported module (Optuna, SQLAlchemy, SciPy: over a second
        # after a study on a slow core). Exit handlers (logging, multiprocessing) still run.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
