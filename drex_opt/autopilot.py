"""The owner's autopilot loop: baseline + proposal -> run -> analysis -> notes -> next proposal.

One iteration, as the brief describes it:

1. ``configs/baseline_<mode>.json`` merged with the validated ``proposals/next_config.json``
   (an invalid proposal stops the loop before anything runs; nothing is half applied);
2. a new run folder ``runs/<UTC timestamp>/`` with ``config.json`` and ``override.json``;
   ``next_config.json`` is reset to ``{}`` as the run starts, and its notes sidecar
   ``next_config.notes.md`` (the theory behind it) is moved into the run's entry;
3. the training (``PUFFER_AUTOPILOT_RUN_DIR``/``_RUN_ID``/``_SUMMARY`` set for it), its log
   mirrored to ``logs/<run id>.log``, resumed from a checkpoint when
   ``autopilot.resume_mode`` is ``continue``;
4. checkpoints kept by ``autopilot.save_strategy`` (``runs/best.json``, ``models/best.pt``,
   ``models/latest.pt``), a ``notes.txt`` entry;
5. with ``optimize``: a study on the run's behavioural focus whose trials continue the
   run's drone (trial 0 unchanged, the control), whose winner is exported as the next
   proposal with its checkpoint (``resume_mode: continue``), so the next run carries on
   from the best drone: generations of one drone, not a restart per run.

``budget`` caps the agent steps the loop trains in all (runs and studies): nothing starts
that would exceed it, and each iteration's compute is kept in the run's ``compute.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from drex_opt import notes
from drex_opt.errors import UserError
from drex_opt.jsonio import read_json, read_json_object, write_atomic, write_json_atomic
from drex_opt.rules import behavior, config, machine, safety
from drex_opt.rules.objectives import CLEARLY_WORSE, clearly_behind, pct, run_rank
from drex_opt.run import checkpoint as checkpoints
from drex_opt.run import metrics, runner
from drex_opt.search import export
from drex_opt.search import planning, study

MODES = ("quick", "full")


@dataclass
class AutopilotSettings:
    mode: str = "quick"
    runs: int | None = None  # None: 1, or as many as the budget allows when a budget is given
    budget: int | None = None  # agent steps the whole loop may train (runs and studies)
    optimize: bool = False
    timesteps: int | None = None
    autopilot_dir: Path = Path("autopilot")
    env: str = "drone_pp"
    storage: str | None = None
    study_trials: int | None = None
    study_timesteps: int | None = None
    study_budget: int | None = None  # agent steps each --optimize study may train
    jobs: int = 1
    timeout: float | None = None


@dataclass
class IterationResult:
    run_id: str
    run_dir: str
    summary: dict
    override: dict
    study: dict | None = None
    export: dict | None = None
    note: str = ""
    problems: list = field(default_factory=list)
    compute: dict = field(default_factory=dict)  # agent steps of the run, the study, the loop so far
    went_back_to: str | None = None  # the best kept run whose drone the next generation continues instead

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["summary"] = {k: v for k, v in self.summary.items() if k != "history"}
        return out


class Autopilot:
    """The folder layout of one autopilot and the operations on it."""

    def __init__(self, root: Path, mode: str) -> None:
        if mode not in MODES:
            raise UserError(f"unknown --mode {mode!r}; choose quick or full")
        self.root = Path(root)
        self.mode = mode
        self.baseline_path = self.root / "configs" / f"baseline_{mode}.json"
        self.proposal_path = self.root / "proposals" / "next_config.json"
        self.runs = self.root / "runs"
        self.logs = self.root / "logs"
        self.models = self.root / "models"
        if not self.baseline_path.is_file():
            raise UserError(f"baseline not found: {self.baseline_path}")

    def read_proposal(self) -> dict:
        """The proposal as written (``{}`` when the file is missing); UserError if malformed."""
        if not self.proposal_path.exists():
            return {}
        return read_json_object(self.proposal_path, "proposal")

    def effective_config(self, proposal: dict, timesteps: int | None) -> dict:
        """Baseline merged with the proposal; every problem named, nothing applied on error."""
        extra = {"train": {"total_timesteps": timesteps}} if timesteps is not None else None
        try:
            return config.resolve(self.baseline_path, proposal, extra)
        except UserError as exc:
            raise UserError(f"invalid proposal {self.proposal_path}: {exc}") from None

    def checkpoint_for(self, cfg: dict) -> Path | None:
        """The checkpoint a ``continue`` run starts from; UserError if it does not exist."""
        policy = cfg["autopilot"]
        if policy["resume_mode"] != "continue":
            return None
        source = policy["resume_from"]
        if source == "best":
            path = self.models / "best.pt"
        elif source == "latest":
            path = self.models / "latest.pt"
            if not path.is_file():
                candidates = sorted(self.runs.glob("*/model.pt"), key=lambda p: p.stat().st_mtime)
                path = candidates[-1] if candidates else path
        else:
            path = Path(source)
        if not path.is_file():
            raise UserError(f"autopilot.resume_from {source!r}: no checkpoint at {path}")
        return path.resolve()

    def new_run_dir(self) -> Path:
        stamp = runner.utc_stamp()
        run_dir, n = self.runs / stamp, 1
        while run_dir.exists():
            n += 1
            run_dir = self.runs / f"{stamp}-{n}"
        return run_dir

    def previous_summary(self) -> dict | None:
        runs = [r for r in metrics.list_runs(self.runs) if r.file and r.file.name == "summary.json"] \
            if self.runs.is_dir() else []
        if not runs:
            return None
        try:
            return read_json_object(runs[-1].file)
        except UserError:
            return None

    def keep_checkpoints(self, cfg: dict, summary: dict, run_dir: Path) -> None:
        """``save_strategy``: latest -> models/latest.pt; best -> runs/best.json + models/best.pt;
        all -> both, plus models/<run id>.pt."""
        checkpoint = summary.get("checkpoint")
        if summary.get("status") != "completed" or not checkpoint or not Path(checkpoint).is_file():
            return
        strategy = cfg["autopilot"]["save_strategy"]
        self.models.mkdir(parents=True, exist_ok=True)
        if strategy in ("latest", "all"):
            checkpoints.copy(checkpoint, self.models / "latest.pt")
        if strategy == "all":
            checkpoints.copy(checkpoint, self.models / f"{run_dir.name}.pt")
        if strategy in ("best", "all"):
            best_file = self.runs / "best.json"
            best = read_json(best_file, "best.json") if best_file.is_file() else None
            if best is None or run_rank(summary) > run_rank(best):
                checkpoints.copy(checkpoint, self.models / "best.pt")
                write_json_atomic(best_file, {
                    "run_id": summary["run_id"], "run_dir": str(run_dir), "checkpoint": str(self.models / "best.pt"),
                    **{k: summary.get(k) for k in ("grip_success", "delivery_success", "end_to_end_success",
                                                   "mean_reward", "timestamp")},
                })

    def best_ahead_of(self, run_dir: Path, summary: dict) -> tuple[Path, dict] | None:
        """The kept best run (``runs/best.json``) and its summary when the run ``run_dir``
        trails it beyond noise (``objectives.clearly_behind``), was trained on the same env
        and its drone is still on disk; None otherwise (no best kept, the run is the best or
        within noise of it, another env's drone)."""
        best_file = self.runs / "best.json"
        if summary.get("status") != "completed" or not best_file.is_file():
            return None
        try:
            best = read_json_object(best_file, "best.json")
            # Found by its id under runs/: best.json's run_dir is as relative as the loop's folder was.
            folder = self.runs / str(best.get("run_id") or "")
            if not best.get("run_id") or not folder.is_dir() or folder.resolve() == Path(run_dir).resolve():
                return None
            kept = read_json_object(folder / "summary.json", "summary.json")
        except UserError:
            return None
        ckpt = kept.get("checkpoint")
        # A best drone of another env (the folder reused for a new env) is not this loop's drone.
        if kept.get("status") != "completed" or not ckpt or not Path(ckpt).is_file() \
                or kept.get("env") != summary.get("env"):
            return None
        return (folder, kept) if clearly_behind(summary, kept) else None


class BudgetSpent(Exception):
    """The next piece of work would take the loop past its ``--budget``."""


@dataclass
class Ledger:
    """Agent steps the loop has trained, against its budget (None: no limit)."""

    budget: int | None
    spent: int = 0

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.spent

    def check(self, steps: int, what: str) -> None:
        if steps > self.left():
            raise BudgetSpent(f"the budget leaves {int(self.left()):,} agent steps of {self.budget:,}; "
                              f"{what} needs {steps:,}")


def run_iteration(pilot: Autopilot, settings: AutopilotSettings, iteration: int,
                  on_event: Callable[[dict], None] | None = None, ledger: Ledger | None = None) -> IterationResult:
    """One run of the loop (see the module docstring). UserError before anything runs;
    BudgetSpent, before anything runs, when the run would not fit the ledger's budget."""
    ledger = ledger or Ledger(None)
    proposal = pilot.read_proposal()
    cfg = pilot.effective_config(proposal, settings.timesteps)
    try:
        advice = machine.check_here(cfg)
    except UserError as exc:
        raise UserError(f"{pilot.baseline_path.name} with {pilot.proposal_path} cannot train here: {exc}") from None
    load_model = pilot.checkpoint_for(cfg)
    ledger.check(planning.steps_of(cfg["train"]["total_timesteps"], cfg["train"]["batch_size"]), "the next run")
    previous = pilot.previous_summary()
    why = notes.read_sidecar(pilot.proposal_path)
    run_dir = runner.prepare_run_dir(pilot.new_run_dir())
    run_id = run_dir.name
    write_json_atomic(run_dir / "override.json", safety.nest(proposal)[0])
    if why:
        write_atomic(notes.sidecar_path(run_dir / "override.json"), why + "\n")
    # The next proposal (and its notes) are written after this run.
    write_json_atomic(pilot.proposal_path, {})
    notes.sidecar_path(pilot.proposal_path).unlink(missing_ok=True)
    pilot.logs.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "summary.json"
    result = runner.run_training(
        cfg, run_dir, settings.env, timeout=settings.timeout, load_model=load_model, on_event=on_event,
        log_mirror=pilot.logs / f"{run_id}.log",
        extra_env={runner.ENV_RUN_DIR: str(run_dir.resolve()), runner.ENV_RUN_ID: run_id,
                   runner.ENV_SUMMARY: str(summary_path.resolve())},
    )
    summary = result.summary
    before = ledger.spent
    ledger.spent += int(summary.get("agent_steps") or 0)
    pilot.keep_checkpoints(cfg, summary, run_dir)
    # The loop's product is its best drone: a run that fell behind the best kept one beyond
    # noise is not what the next generation builds on; the best run's drone is.
    back = pilot.best_ahead_of(run_dir, summary) if settings.optimize else None
    drone_dir, drone = back or (run_dir, summary)
    went_back = ""
    if back:
        went_back = (f"this run ({pct(summary.get('end_to_end_success'))} end to end) fell behind the best kept "
                     f"drone, run {drone_dir.name} ({pct(drone.get('end_to_end_success'))}), by more than "
                     f"{CLEARLY_WORSE:.0%} on the ranking; the next generation continues that drone. ")
    focus = (drone.get("behavioral_analysis") or {}).get("next_focus")
    last = settings.runs is not None and iteration + 1 >= settings.runs
    # A completed run may still give no focus to search (the drone was not observed).
    searchable = summary["status"] == "completed" and focus in behavior.FOCI
    if summary["status"] != "completed":
        next_step = "the run did not complete; the next run reuses the baseline (next_config.json is {})"
    elif not searchable:
        reason = ("the drone was not observed (no behaviour statistic arrived)" if focus == behavior.TRAIN_LONGER
                  else f"{settings.env} logs none of the behaviour inputs, so there is no diagnosis to search"
                  if focus == behavior.NAME_A_FOCUS else f"its analysis gives {focus}, which has no search space")
        otherwise = (f"the next run continues {'that' if back else 'this'} drone unchanged"
                     if settings.optimize and drone.get("checkpoint")
                     else "otherwise it reuses the baseline")
        todo = (f"study it with drex-opt study --focus FOCUS --env {settings.env}" if focus == behavior.NAME_A_FOCUS
                else f"give the next run more train.total_timesteps in {pilot.proposal_path}")
        next_step = f"{went_back}no study: {reason}; {todo}, {otherwise}"
    elif settings.optimize:
        whose = "that" if back else "this run's"
        next_step = (f"{went_back}search focus {focus} with a study whose trials continue {whose} drone (trial 0 "
                     f"unchanged) and export the winner, with its checkpoint, to {pilot.proposal_path}"
                     + ("" if not last else " for the run after this loop"))
    else:
        next_step = (f"focus {focus}: run drex-opt study --from-run {run_dir} then drex-opt export, "
                     "or fill next_config.json by hand; otherwise the next run reuses the baseline")
    notes_path = run_dir / "notes.txt"
    changed = safety.overrides_relative(cfg, config.load_baseline(pilot.baseline_path))
    notes.append_entry(notes_path, notes.run_entry(run_id, pilot.mode, changed, summary, previous, next_step,
                                                   why=why, advice=advice))
    out = IterationResult(run_id=run_id, run_dir=str(run_dir), summary=summary, override=proposal,
                          note=str(notes_path), went_back_to=str(drone_dir) if back else None)
    try:
        if settings.optimize and searchable:
            optimize_after(pilot, settings, run_dir, out, ledger, drone_dir=drone_dir, drone=drone)
        elif settings.optimize and summary["status"] == "completed":
            out.problems.append(f"no study after run {run_id}: next focus {focus} has no search space")
        if settings.optimize and out.export is None and summary["status"] == "completed":
            keep_this_drone(pilot, run_dir, proposal if not back else run_override(drone_dir), drone, drone_dir)
    finally:
        record_compute(run_dir, out, summary, ledger, before)
    return out


def run_override(run_dir: Path) -> dict:
    """The proposal a run trained with (its ``override.json``; ``{}`` if unreadable)."""
    try:
        return read_json_object(Path(run_dir) / "override.json", "override.json")
    except UserError:
        return {}


def keep_this_drone(pilot: Autopilot, run_dir: Path, proposal: dict, summary: dict,
                    drone_dir: Path | None = None) -> None:
    """No winner to hand on (no study, or no proposal from it): the next run continues the
    drone of ``drone_dir`` (this run ``run_dir``, or the best kept run it fell behind) with
    that run's configuration ``proposal``/``summary``, instead of restarting from the baseline."""
    drone_dir = drone_dir or run_dir
    ckpt = summary.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        return
    resume = {"autopilot": {"resume_mode": "continue", "resume_from": str(Path(ckpt).resolve())}}
    following = safety.merge(safety.nest(proposal)[0], resume)
    if safety.validate(following, config.load_baseline(pilot.baseline_path)):
        return  # cannot happen for a proposal that trained; never write one that does not validate
    whose = "its drone" if drone_dir == run_dir else f"the drone of run {drone_dir.name}, the best kept,"
    why = (f"No study winner after run {run_dir.name}: the next run continues {whose} unchanged "
           f"({Path(ckpt).resolve()}), with the same configuration.")
    write_json_atomic(pilot.proposal_path, following)
    write_atomic(notes.sidecar_path(pilot.proposal_path), why + "\n")
    notes.append_entry(run_dir / "notes.txt", why + "\n")


def record_compute(run_dir: Path, out: IterationResult, summary: dict, ledger: Ledger, before: int) -> None:
    """The iteration's agent steps in ``compute.json`` (read by ``drex-opt runs``) and its notes."""
    run_steps = int(summary.get("agent_steps") or 0)
    out.compute = {
        "run_agent_steps": run_steps, "study_agent_steps": ledger.spent - before - run_steps,
        "iteration_agent_steps": ledger.spent - before, "loop_agent_steps": ledger.spent, "budget": ledger.budget,
        "drone_agent_steps": summary.get("drone_agent_steps"),
    }
    write_json_atomic(run_dir / metrics.COMPUTE_FILE, out.compute)
    c = out.compute
    budget = f" of the --budget {ledger.budget:,}" if ledger.budget is not None else ""
    notes.append_entry(run_dir / "notes.txt", notes.compute_entry(run_dir.name, c["run_agent_steps"],
                                                                  c["study_agent_steps"], ledger.spent, budget))


def study_steps(run_dir: Path) -> int:
    """Agent steps every training of a study folder took (trials, seed repeats, failed ones too)."""
    total = 0
    for path in Path(run_dir).glob("*/summary.json"):
        try:
            total += int(read_json_object(path).get("agent_steps") or 0)
        except (UserError, TypeError, ValueError):
            continue
    return total


# The brief's "warning" line on grip (grip_success < 0.1): below it the drone grips in fewer
# than one episode in ten and carrying, delivery and end-to-end have nothing to build on.
GRIP_LEARNED = 0.1


def study_cap(settings: AutopilotSettings, run_steps: int, summary: dict | None = None) -> tuple[float, str]:
    """The agent steps a generation's study may train, and what set that cap.

    ``--study-budget`` when given. Otherwise a study sized by its focus trains at most what
    the run it follows trained (``run_steps``), once the drone grips: a generation is then
    one run plus a search no dearer than it, so the loop never spends most of its compute
    searching before the drone gains from it. A drone that does not grip yet (``summary``'s
    grip success below ``GRIP_LEARNED``, or no grip attempt at all) gets its focus's whole
    budget: continuing such a drone unchanged teaches it little, and a search capped at one
    run is too small to find the learning levers that make it grip. Trials or steps per
    trial given explicitly size the study themselves: no default cap.
    """
    if settings.study_budget is not None:
        return settings.study_budget, "--study-budget"
    if settings.study_trials is not None or settings.study_timesteps is not None:
        return math.inf, "no cap"
    grip = (summary or {}).get("grip_success")
    if isinstance(grip, (int, float)) and grip < GRIP_LEARNED:
        return math.inf, f"no cap: the drone grips in {grip:.1%} of episodes, below {GRIP_LEARNED:.0%}"
    return run_steps, "one run's agent steps (the default study cap)"


def optimize_after(pilot: Autopilot, settings: AutopilotSettings, run_dir: Path, out: IterationResult,
                   ledger: Ledger | None = None, drone_dir: Path | None = None, drone: dict | None = None) -> None:
    """Study the focus of the drone of ``drone_dir`` (the run ``run_dir`` itself unless the
    loop went back to its best kept run, whose summary is ``drone``), every trial continuing
    that drone; export the winner and its checkpoint. Within the loop's budget and the study
    cap (``study_cap``) the study gets the trials that fit (at least two: the control and one
    change), else none. Notes go to ``run_dir``'s entry."""
    ledger = ledger or Ledger(None)
    drone_dir, drone = drone_dir or run_dir, drone or out.summary
    plan = planning.plan(planning.StudySettings(
        from_run=drone_dir, baseline=str(drone_dir / "config.json"), env=settings.env, storage=settings.storage,
        trials=settings.study_trials, timesteps=settings.study_timesteps, jobs=settings.jobs,
        studies_dir=pilot.root / "studies", study_name=f"autopilot-{run_dir.name}",
    ))
    # The plan's baseline is the drone's run's own config.json.
    cap, cap_name = study_cap(settings, int(plan.baseline["train"]["total_timesteps"]), drone)
    allowed = min(ledger.left(), cap)
    if planning.fit_budget(plan, allowed) < 2:
        which = f"{cap_name} allows" if allowed < ledger.left() else "the budget leaves"
        reason = (f"no study after run {run_dir.name}: {which} {int(allowed):,} agent steps, "
                  f"two trials of {plan.timesteps:,} need {2 * planning.trial_steps_bound(plan):,}")
        out.problems.append(reason)
        return
    folder = plan.studies_dir / plan.study_name
    before = study_steps(folder)
    try:
        result = study.run(plan)
    finally:
        ledger.spent += study_steps(folder) - before
    out.study = result.to_dict()
    if result.interrupted:
        raise KeyboardInterrupt
    try:
        exported = export.export(plan.study_name, plan.storage_url, out=pilot.proposal_path,
                                 baseline=str(pilot.baseline_path), notes=run_dir / "notes.txt",
                                 next_step=f"the next autopilot run trains with {pilot.proposal_path}")
        out.export = exported.to_dict()
    except UserError as exc:
        notes.append_entry(run_dir / "notes.txt", f"Study {plan.study_name} gave no proposal ({exc}).\n")
        out.problems.append(str(exc))


def run_loop(settings: AutopilotSettings, on_start: Callable[[int], object] | None = None,
             on_done: Callable[[IterationResult], None] | None = None,
             on_stop: Callable[[str], None] | None = None) -> list[IterationResult]:
    """``settings.runs`` iterations, or as many as ``settings.budget`` allows.

    The first invalid proposal stops the loop (UserError); so does a budget too small for
    even one run. A budget spent later ends the loop normally, ``on_stop`` told why.
    """
    if settings.runs is not None and settings.runs < 1:
        raise UserError(f"--runs must be at least 1, got {settings.runs}")
    if settings.budget is not None and settings.budget < 1:
        raise UserError(f"--budget must be a positive number of agent steps, got {settings.budget}")
    if settings.study_budget is not None and settings.study_budget < 1:
        raise UserError(f"--study-budget must be a positive number of agent steps, got {settings.study_budget}")
    runner.check_env_name(settings.env)
    runs = settings.runs if settings.runs is not None else (None if settings.budget is not None else 1)
    pilot = Autopilot(settings.autopilot_dir, settings.mode)
    ledger = Ledger(settings.budget)
    results: list[IterationResult] = []
    i = 0
    while runs is None or i < runs:
        try:
            on_event = on_start(i) if on_start else None
            result = run_iteration(pilot, settings, i, on_event, ledger)  # type: ignore[arg-type]
        except BudgetSpent as exc:
            if not results:
                raise UserError(f"--budget {settings.budget:,} is too small: {exc}") from None
            if on_stop:
                on_stop(f"stopped before run {i + 1}: {exc}")
            break
        results.append(result)
        if on_done:
            on_done(result)
        i += 1
    return results
