"""One trial: sample the focus's space, clamp it to the safety rules, train, read objectives.

A sampled value the safety clamp would change fails the trial (its recorded params must
be the values the run used); a crash, NaN, timeout or missing metric fails it with its
reason; an early-stopping verdict prunes it. The study goes on in every case.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna

from drex_opt.rules import behavior, machine, safety
from drex_opt.rules.early_stop import EarlyStopRule, curve_of
from drex_opt.rules.objectives import BASELINE_ROLE, LABEL, from_summary, show
from drex_opt.run import runner
from drex_opt.search import dashboard, spaces
from drex_opt.search import storage as storage_mod
from drex_opt.search.monitor import StudyMonitor
from drex_opt.search.planning import StudyPlan


class TrialFailure(Exception):
    """A trial that produced no trustworthy objectives (crash, NaN, timeout, no metrics)."""


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


def keep_agents(proposal: dict, baseline: dict) -> None:
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


def clamped_overrides(sampled: dict, baseline: dict, timesteps: int, seed: int) -> tuple[dict, list[str], list[str]]:
    """Sampled values as a trial's overrides: agents kept, budget and seed set, clamped.

    Returns:
        (the overrides with the derived batch sizes, the clamp's adjustments, the sampled
        ``section.key`` names whose value the clamp changed).
    """
    proposal = {section: dict(values) for section, values in sampled.items()}
    keep_agents(proposal, baseline)
    proposal.setdefault("train", {}).update(total_timesteps=timesteps, seed=seed)
    # Trials train here, so this machine's cores cap the workers (PufferLib refuses more).
    effective, adjustments = safety.clamp(proposal, baseline, cores=machine.physical_cores())
    used = _flat(effective)
    return effective, adjustments, [k for k, v in _flat(sampled).items() if used.get(k) != v]


class TrialRunner:
    """The objective: one trial = sample, clamp, train in a child process, read objectives."""

    def __init__(self, plan: StudyPlan, monitor: StudyMonitor | None, cancel: threading.Event,
                 launch: runner.Launcher = runner.cold_launch) -> None:
        self.plan = plan
        self.monitor = monitor
        self.cancel = cancel
        self.launch = launch
        self.rule = EarlyStopRule()

    def overrides_for(self, trial) -> tuple[dict, list[str]]:
        """Sampled overrides of ``trial`` after clamping, and the clamp adjustments."""
        space = self.plan.space
        if trial.user_attrs.get("role") == BASELINE_ROLE:
            # The baseline trial was enqueued with the baseline's values of exactly these.
            fixed = set(baseline_params(self.plan))
            space = space.model_copy(update={"params": {k: v for k, v in space.params.items() if k in fixed}})
        sampled = spaces.suggest(space, trial) if space.params else {}
        effective, adjustments, changed = clamped_overrides(sampled, self.plan.baseline, self.plan.timesteps,
                                                            self.plan.seed)
        if changed:
            # The recorded params must be the values the run used; never train on others.
            raise TrialFailure(f"safety clamp changed sampled {', '.join(changed)}: {'; '.join(adjustments)}")
        return effective, adjustments

    def __call__(self, trial) -> tuple[float, float, float]:
        plan = self.plan
        trial.set_user_attr("worker", storage_mod.worker_id())
        if self.monitor:
            self.monitor.started(trial.number)
        try:
            overrides, adjustments = self.overrides_for(trial)
        except TrialFailure as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        cfg = safety.merge(plan.baseline, overrides)
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
                                     load_model=plan.warm_start,
                                     stop_rule=stop_rule, threads=plan.threads_per_trial(), cancel=self.cancel,
                                     launch=self.launch)
        s = result.summary
        ext = s.get("metrics_extended") or {}
        analysis = s.get("behavioral_analysis") or {}
        for key, value in {
            "status": s["status"], "agent_steps": s.get("agent_steps"), "wall_time_s": s.get("wall_time_s"),
            "sps": ext.get("SPS"), "checkpoint": s.get("checkpoint"),
            # Where this drone came from and how far it has trained in all.
            "warm_start": s.get("started_from"), "drone_agent_steps": s.get("drone_agent_steps"),
            "optimizer_state": s.get("optimizer_state"),
            "behavioral_analysis": {k: analysis.get(k) for k in ("severity", "next_focus", "insights")},
            "curve": curve_of(result.history, plan.timesteps),
        }.items():
            trial.set_user_attr(key, value)
        try:
            values = self._objectives(trial, s)
        except BaseException as exc:
            self._record(trial, s, run_dir, outcome_of(exc))
            raise
        self._record(trial, s, run_dir, "complete: " + ", ".join(
            f"{LABEL[name]} {show(name, v)}" for name, v in zip(self.plan.objectives, values)))
        return values

    def _objectives(self, trial, s: dict) -> tuple[float, ...]:
        """The trial's objectives from its summary; raises for interrupted, stopped, failed."""
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
        try:
            return from_summary(s, self.plan.objectives)
        except ValueError as exc:
            reason = missing_reason(s, str(exc))
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailure(reason) from None

    def _record(self, trial, summary: dict, run_dir: Path, outcome: str) -> None:
        """The dashboard note and run files, while the trial can still take them (RUNNING)."""
        dashboard.record_trial(trial, self.plan, summary, run_dir, outcome)

    def _references(self, trial) -> list:
        """Grip curves of completed trials that ran the same budget."""
        out = []
        for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            curve = t.user_attrs.get("curve")
            if curve and t.user_attrs.get("overrides", {}).get("train", {}).get("total_timesteps") == self.plan.timesteps:
                out.append([tuple(p) for p in curve])
        return out


def missing_reason(summary: dict, missing: str) -> str:
    """Why a completed trial has no objectives: its drone was never observed (no statistic
    arrived in its budget, e.g. shorter than the env's report interval), or ``missing``."""
    analysis = summary.get("behavioral_analysis") or {}
    if analysis.get("next_focus") == behavior.TRAIN_LONGER:
        return (f"not observed: no behaviour statistic arrived in {summary.get('agent_steps') or 0:,} agent steps; "
                f"give the trials more steps (--timesteps) or the env a shorter report interval ({missing})")
    return missing


def outcome_of(exc: BaseException) -> str:
    """One line for a trial that did not complete: ``pruned: <reason>`` or ``failed: <reason>``."""
    if isinstance(exc, optuna.TrialPruned):
        return f"pruned: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "failed: interrupted"
    reason = str(exc) or type(exc).__name__
    return reason if reason.startswith("failed") else f"failed: {reason}"  # not "failed: failed: ..."
