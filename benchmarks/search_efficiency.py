"""Search efficiency: the best success each search method finds per agent step spent.

Run from the repository root:
    .venv/bin/python -m benchmarks.search_efficiency [--quick] [--seeds 1 2 3] [--trials N]
        [--work DIR [--resume]] | --recompute benchmarks/results/search_efficiency.json

From one baseline state (the quick baseline trained briefly; its behavioural analysis
names the focus), four methods get the same number of trials at the same agent steps per
trial (the focus's quick budget), every trial a real PufferLib training run:

- ``drex-opt``: the study engine on that focus (``planning.plan`` + ``study.run``), early
  stopping as shipped, no seed repeats (they would spend extra compute);
- ``random``: Optuna's RandomSampler over the whole safe space (see :func:`whole_space`);
- ``tpe``: multi-objective TPE over the whole safe space, no focus;
- ``protein``: PufferLib's ``pufferlib.sweep.Protein`` (suggest/observe) over the whole
  safe space, score = end-to-end success, cost = wall time.

Every proposal of the others becomes a trial's overrides as drex-opt's trials make theirs
(:func:`trial_overrides`: ``trial.clamped_overrides``: agents kept, the trial's budget and seed,
``safety.clamp``). Writes
``benchmarks/results/search_efficiency[_quick].{json,md,png}``.

Accounting: every trial of a result is trained by the invocation that writes it unless
``--work DIR --resume`` reuses an earlier, interrupted invocation's runs, and then the
result says per method and seed how many trials were reused, from where and when. A trial
killed with the benchmark is not counted (a new one runs in its place); trials that fail on
their own count with the agent steps they consumed. The baseline-state run's agent steps
are charged to drex-opt, the one method that needs that state. ``--recompute FILE``
re-derives a stored result's numbers from its per-trial records with this accounting.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import TrialState

from benchmarks.common import (
    NOT_REACHED, RESULTS, band, best_so_far, md_table, median_steps, pct, result_name, spread_text, steps_text,
    steps_to, write_results,
)
from benchmarks.machine import command_line, describe, header_markdown
from drex_opt.rules import config, objectives, safety
from drex_opt.run import runner
from drex_opt.search import planning, spaces, study
from drex_opt.search.trial import clamped_overrides

METHODS = ("drex-opt", "random", "tpe", "protein")
# (key, label) of the study's objectives in drex-opt's ranking order: end-to-end, delivery, grip.
OBJECTIVES = tuple(zip(objectives.rank_key(objectives.OBJECTIVES), objectives.rank_key(objectives.LABELS)))
TARGET_SHARE = 0.8  # target = this share of the best value any method found
# Fixed end-to-end levels: steps to each, so a method that never gets near the best still
# shows how far it got and at what cost.
LADDER = (0.05, 0.1, 0.25, 0.5, 0.8)
BASELINE_STEPS = 1_000_000  # the short baseline run that defines the baseline state
# The methods that need the baseline state: drex-opt's study takes its focus (and budget)
# from that run's behavioural analysis; the others never read it. Its steps are charged to these.
NEEDS_STATE = frozenset({"drex-opt"})
# Errors of a trial stopped by a kill of the benchmark rather than by its configuration:
# Ctrl-C/SIGTERM (runner and study engine) and the study engine's resume of a dead worker's trial.
KILLED_ERRORS = ("interrupted", "worker process gone")
# Marks a result written with the accounting above (reuse recorded, killed trials left out,
# the baseline-state run charged); a result without it is recomputed by ``--recompute``.
ACCOUNTING = "counted-v2"
INVOCATIONS = "invocations.json"  # in a --work folder: every benchmark invocation that used it

# Keys that choose where and how a run executes rather than what it learns: the device
# must be this machine's, torch.compile costs minutes of start-up on a CPU, and the
# autopilot keys only steer the owner's loop. A search over them finds nothing.
EXCLUDED = frozenset({
    "train.device", "train.compile", "train.compile_fullgraph", "train.compile_mode", "train.cpu_offload",
    "train.torch_deterministic", "train.precision", "train.checkpoint_interval",
    "autopilot.resume_mode", "autopilot.resume_from", "autopilot.save_strategy",
})
# The topology's safety ranges allow batches from 1 to 256^3 x 512 agent steps. Huge ones do
# not fit in memory or leave no update in a trial's budget; tiny ones update every few steps
# (one drone with a 32-step horizon trains at ~300 steps/s here and times out). These bounds,
# a factor of 4 to 8 around the quick baseline, keep every trial runnable: batches of 128 to
# 2M steps, log-uniform around the baseline's 16,384.
TOPOLOGY_BOUNDS: dict[str, tuple[int, int]] = {
    "env.num_envs": (2, 32), "env.num_drones": (4, 64), "vec.num_envs": (1, 8), "train.bptt_horizon": (16, 128),
}
LOG_FLOATS = frozenset({"train.learning_rate", "train.adam_eps"})
LINESTYLES = {"drex-opt": "-", "random": "--", "tpe": ":", "protein": "-."}


@dataclass(frozen=True)
class WholeParam:
    """One key of the whole safe space: a float/int range or categorical choices."""

    key: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


# ---------------------------------------------------------------- the whole safe space
def whole_space(cores: int | None = None) -> list[WholeParam]:
    """Every searchable key of the brief within its safety range.

    Searchable: not derived, not the budget or seed, not an execution setting
    (:data:`EXCLUDED`). Topology keys get :data:`TOPOLOGY_BOUNDS` (log scale) and
    ``vec.num_workers`` at most this machine's cores; learning rate and Adam epsilon are
    log scale; every other number is uniform over its full safety range.
    """
    cores = max(1, cores or os.cpu_count() or 1)
    out = []
    for spec in safety.SPECS:
        key = spec.key
        if spec.derived or key in spaces.RESERVED or key in EXCLUDED:
            continue
        if key in TOPOLOGY_BOUNDS:
            low, high = TOPOLOGY_BOUNDS[key]
            out.append(WholeParam(key, "int", max(low, int(spec.low)), min(high, int(spec.high)), log=True))
        elif key == "vec.num_workers":
            out.append(WholeParam(key, "int", 1, min(cores, int(spec.high))))
        elif spec.kind == "float":
            out.append(WholeParam(key, "float", spec.low, spec.high, log=key in LOG_FLOATS))
        elif spec.kind == "int":
            out.append(WholeParam(key, "int", int(spec.low), int(spec.high)))
        elif spec.kind == "bool":
            out.append(WholeParam(key, "categorical", choices=(False, True)))
        elif spec.kind == "choice":
            out.append(WholeParam(key, "categorical", choices=tuple(spec.choices)))
    return out


def nest(flat: dict[str, Any]) -> dict[str, dict]:
    """``{"train.gamma": 0.9}`` -> ``{"train": {"gamma": 0.9}}``."""
    out: dict[str, dict] = {}
    for key, value in flat.items():
        section, name = key.split(".")
        out.setdefault(section, {})[name] = value
    return out


def flatten(nested: dict) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in nested.items() if isinstance(values, dict) for k, v in values.items()}


def suggest_optuna(trial, space: list[WholeParam]) -> dict[str, dict]:
    """Nested overrides drawn by an Optuna trial over the whole space."""
    flat = {}
    for p in space:
        if p.kind == "float":
            flat[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log)
        elif p.kind == "int":
            flat[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
        else:
            flat[p.key] = trial.suggest_categorical(p.key, list(p.choices))
    return nest(flat)


def trial_overrides(proposal: dict, baseline: dict, timesteps: int, seed: int) -> tuple[dict, list[str]]:
    """A proposal made a trial's overrides as drex-opt's trials make theirs; the clamp's adjustments.

    Drones given without arenas keep the agents per process (``trial.keep_agents``), the
    trial's budget and seed are set, and ``safety.clamp`` repairs the rest and adds the
    derived batch sizes. ``proposal`` is not changed. Unlike a drex-opt trial, a proposal
    the clamp changes is not failed but trains with the clamped values: these methods search
    the whole safe space, where a repaired proposal is part of what they propose (the
    report counts such trials as ``clamped``).
    """
    overrides, adjustments, _ = clamped_overrides(proposal, baseline, timesteps, seed)
    return overrides, adjustments


# ---------------------------------------------------------------- Protein
def protein_config(space: list[WholeParam], baseline: dict) -> dict:
    """PufferLib's ``[sweep]`` sections for the whole space, centred on the baseline.

    Log keys are ``log_normal``, other numbers ``uniform``/``int_uniform``; Protein has no
    categorical type, so a categorical is an ``int_uniform`` index into its choices.
    """
    cfg: dict = {"metric": "end_to_end_success", "goal": "maximize"}
    for p in space:
        section, name = p.key.split(".")
        center = baseline[section][name]
        if p.kind == "categorical":
            entry = {"distribution": "int_uniform", "min": 0, "max": len(p.choices) - 1,
                     "mean": p.choices.index(center) if center in p.choices else 0}
        else:
            dist = "log_normal" if p.log else ("int_uniform" if p.kind == "int" else "uniform")
            entry = {"distribution": dist, "min": p.low, "max": p.high, "mean": min(max(center, p.low), p.high)}
        entry["scale"] = "auto"
        cfg.setdefault(section, {})[name] = entry
    return cfg


def new_protein(sweep_config: dict):
    """``pufferlib.sweep.Protein(sweep_config)``, its construction chatter swallowed.

    Protein's Gaussian processes keep their parameters in Pyro's global param store, by
    name: a second Protein in the same process over another number of keys would find the
    first one's shapes there and fail, so the store is cleared first.
    """
    import pyro
    from pufferlib.sweep import Protein

    pyro.clear_param_store()
    with contextlib.redirect_stdout(io.StringIO()):
        return Protein(sweep_config)


def protein_decode(suggestion: dict, space: list[WholeParam]) -> dict[str, dict]:
    """Protein's suggestion as a proposal (raw numbers: ``safety.clamp`` rounds and bounds them)."""
    flat = flatten(suggestion)
    out = {}
    for p in space:
        value = float(flat[p.key])
        if p.kind == "categorical":
            out[p.key] = p.choices[min(max(int(math.floor(value + 0.5)), 0), len(p.choices) - 1)]
        else:
            out[p.key] = value
    return nest(out)


def protein_encode(overrides: dict, space: list[WholeParam], baseline: dict) -> dict[str, dict]:
    """The values a trial ran with, in Protein's encoding (what ``observe`` expects)."""
    used = flatten(safety.merge(baseline, overrides))
    out = {}
    for p in space:
        value = used[p.key]
        out[p.key] = p.choices.index(value) if p.kind == "categorical" else float(value)
    return nest(out)


# ---------------------------------------------------------------- running trials
def train_trial(overrides: dict, adjustments: list[str], baseline: dict, run_dir: Path, timeout: float,
                threads: int) -> dict:
    """One real training run of ``baseline`` + ``overrides`` (already clamped); its record.

    A run of exactly this configuration already finished in ``run_dir`` (a benchmark
    resumed with ``--work DIR --resume``) is read back instead of trained again; the record
    then says so (``resumed``) and where and when that run was trained (``reused_from``).
    """
    cfg = safety.merge(baseline, overrides)
    s = finished_run(run_dir, cfg)
    resumed = s is not None
    if s is None:
        s = runner.run_training(cfg, run_dir, timeout=timeout, threads=threads).summary
    ok = s["status"] == "completed"
    record = {"state": "COMPLETE" if ok else "FAIL", "status": s["status"], "error": s.get("error"),
              "agent_steps": s.get("agent_steps") or 0, "wall_time_s": s.get("wall_time_s"),
              "sps": (s.get("metrics_extended") or {}).get("SPS"), "overrides": overrides,
              "adjustments": adjustments, "resumed": resumed}
    if resumed:
        record["reused_from"] = {"run_dir": str(run_dir), "trained_at": s.get("timestamp")}
    record.update({key: None for key, _ in OBJECTIVES})
    if ok:
        try:
            record.update(zip(objectives.OBJECTIVES, objectives.from_summary(s)))
        except ValueError as exc:  # the same rule as a drex-opt trial's
            record["state"], record["error"] = "FAIL", str(exc)
    return record


def finished_run(run_dir: Path, cfg: dict) -> dict | None:
    """The summary of a finished earlier run of exactly ``cfg`` in ``run_dir``, else None.

    A run stopped by a kill of the benchmark (Ctrl-C or SIGTERM leave a summary with error
    ``interrupted``) did not finish: it is trained again, not counted as a failed trial.
    """
    try:
        if json.loads((run_dir / "config.json").read_text(encoding="utf-8")) == json.loads(json.dumps(cfg)):
            s = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            return None if killed({"state": "FAIL", "error": s.get("error")}) else s
    except (OSError, ValueError):
        pass  # never started, or killed before its summary was written: train it
    return None


def killed(rec: dict) -> bool:
    """Whether a trial record is a run stopped by a kill of the benchmark, not a real trial.

    Such a trial says nothing about its configuration: a study still RUNNING (or WAITING)
    when the process died, one the study engine failed on resume because its worker was
    gone (``storage.fail_stale_trials``), or one stopped by Ctrl-C/SIGTERM (``interrupted``).
    Failures of the configuration itself (crash, NaN, timeout, missing metrics) are real.
    """
    if rec.get("state") in ("RUNNING", "WAITING"):
        return True
    error = rec.get("error") or ""
    return rec.get("state") == "FAIL" and any(error == e or error.startswith(e) for e in KILLED_ERRORS)


def counted_trials(records: list[dict], trials: int) -> list[dict]:
    """The first ``trials`` real trials, in the order they ran.

    A killed trial (:func:`killed`) is left out and not counted toward ``trials``: a
    resumed study runs a new trial in its place, so it neither takes the place of a real
    trial nor is counted twice. Completed and pruned trials count with their agent steps,
    failed ones with the agent steps they consumed before failing.
    """
    return [r for r in records if not killed(r)][:trials]


def trials_missing(records: list[dict], trials: int) -> int:
    """How many new trials a resumed study must run to reach ``trials`` counted ones."""
    return max(0, trials - len(counted_trials(records, trials)))


def _log(method: str, seed: int, number: int, rec: dict) -> None:
    values = " ".join(f"{label[:4]} {pct(rec.get(key))}" for key, label in OBJECTIVES)
    print(f"  {method:<8} seed {seed} trial {number:>2}: {rec['state']:<8} {rec['agent_steps']:>9,} steps "
          f"{rec.get('wall_time_s') or 0:6.1f}s {values}" + (f" ({rec.get('error')})" if rec.get("error") else "")
          + (f" (the {rec['shared_with']} run of this configuration)" if rec.get("shared_with") else "")
          + (" (reused from an earlier run)" if rec.get("resumed") else ""), flush=True)


def drex_record(t, reused: bool, source: str) -> dict:
    """The benchmark's record of one trial (an Optuna ``FrozenTrial``) of drex-opt's study."""
    a = t.user_attrs
    rec = {"number": t.number, "state": t.state.name, "status": a.get("status"),
           "error": a.get("fail_reason") or a.get("prune_reason"), "agent_steps": a.get("agent_steps") or 0,
           "wall_time_s": a.get("wall_time_s"), "sps": a.get("sps"), "overrides": a.get("overrides"),
           "adjustments": a.get("clamp_adjustments") or [], "baseline_trial": a.get("role") == objectives.BASELINE_ROLE,
           "resumed": reused}
    if reused:
        # Optuna stores local time without a zone: make it comparable with the runs' UTC timestamps.
        started = t.datetime_start.astimezone(timezone.utc).isoformat(timespec="seconds") if t.datetime_start else None
        rec["reused_from"] = {"study": source, "trained_at": started}
    # The study stores its values in the order of ``objectives.OBJECTIVES``.
    values = dict(zip(objectives.OBJECTIVES, t.values)) if t.state == TrialState.COMPLETE and t.values else {}
    for key, _ in OBJECTIVES:
        rec[key] = float(values[key]) if values else None
    return rec


def run_drex(from_run: Path, trials: int, timesteps: int, seed: int, work: Path,
             timeout: float) -> tuple[list[dict], list[dict]]:
    """The real study engine on the baseline state's focus.

    Returns one record per counted trial, in order (:func:`counted_trials`), and the
    records of killed trials left out of the count. A study already in ``work`` (only with
    ``--resume``) is continued: its real trials are reused and marked so, and the engine
    runs as many new trials as real ones are missing.
    """
    plan = planning.plan(planning.StudySettings(
        from_run=from_run, baseline="quick", storage=f"sqlite:///{work / 'drex.db'}",
        study_name=f"bench-drex-s{seed}", trials=trials, timesteps=timesteps, seed=seed, repeats=0,
        trial_timeout=timeout, studies_dir=work / "studies", command=command_line()))
    source = f"{work / 'drex.db'}, study {plan.study_name}"

    def stored() -> list:
        try:
            return optuna.load_study(study_name=plan.study_name, storage=plan.storage).get_trials(deepcopy=False)
        except KeyError:
            return []

    earlier = stored()  # trials of an earlier invocation: only a resumed benchmark has any
    before = {t.number for t in earlier}
    missing = trials_missing([drex_record(t, True, source) for t in earlier], trials)
    if missing > 0 and study.run(replace(plan, trials=missing)).interrupted:
        raise KeyboardInterrupt

    everything = [drex_record(t, t.number in before, source) for t in stored()]
    records = counted_trials(everything, trials)
    left_out = [r for r in everything if killed(r)]
    for rec in records:
        _log("drex-opt", seed, rec["number"], rec)
    for rec in left_out:
        print(f"  drex-opt seed {seed} trial {rec['number']} left out: killed with the benchmark "
              f"({rec.get('error') or rec['state']}), a new trial ran in its place", flush=True)
    return records, left_out


def run_optuna(method: str, space: list[WholeParam], baseline: dict, trials: int, timesteps: int, seed: int,
               startup: int, work: Path, timeout: float, threads: int, shared: dict[str, dict]) -> list[dict]:
    """Random search or multi-objective TPE over the whole space, through ask/tell.

    TPE's start-up trials come from a RandomSampler with the same seed, so they propose
    exactly what random search proposed: such a configuration already trained (same
    values, budget and seed) is taken from ``shared`` instead of being trained again.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = RandomSampler(seed=seed) if method == "random" else TPESampler(
        seed=seed, n_startup_trials=startup, multivariate=True)
    search = optuna.create_study(directions=["maximize"] * len(objectives.OBJECTIVES), sampler=sampler)
    records = []
    for number in range(trials):
        trial = search.ask()
        overrides, adjustments = trial_overrides(suggest_optuna(trial, space), baseline, timesteps, seed)
        key = json.dumps(overrides, sort_keys=True)
        if key in shared:
            rec = {**shared[key], "shared_with": shared[key]["method"]}
        else:
            rec = train_trial(overrides, adjustments, baseline, work / f"trial-{number}", timeout, threads)
            shared[key] = {**rec, "method": method}
        rec["number"] = number
        if rec["state"] == "COMPLETE":
            search.tell(trial, [rec[k] for k in objectives.OBJECTIVES])
        else:
            search.tell(trial, state=TrialState.FAIL)
        records.append(rec)
        _log(method, seed, number, rec)
    return records


def run_protein(space: list[WholeParam], baseline: dict, trials: int, timesteps: int, seed: int, work: Path,
                timeout: float, threads: int) -> list[dict]:
    """PufferLib's Protein: suggest, clamp, train, observe (score e2e, cost wall time)."""
    # Only Protein needs torch and PufferLib's sweep: seconds to import, and the other
    # methods (and the tests, where PufferLib may be missing) run without them.
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    chatter = io.StringIO()  # Protein prints its samples and predictions
    protein = new_protein(protein_config(space, baseline))
    records = []
    for number in range(trials):
        with contextlib.redirect_stdout(chatter):
            suggestion, _ = protein.suggest(None)
        overrides, adjustments = trial_overrides(protein_decode(suggestion, space), baseline, timesteps, seed)
        rec = train_trial(overrides, adjustments, baseline, work / f"trial-{number}", timeout, threads)
        rec["number"] = number
        ok = rec["state"] == "COMPLETE"
        protein.observe(protein_encode(overrides, space, baseline), rec["end_to_end_success"] if ok else 0.0,
                        max(float(rec.get("wall_time_s") or 0.0), 1e-3), is_failure=not ok)
        records.append(rec)
        _log("protein", seed, number, rec)
    return records


def baseline_state(steps: int, seed: int, run_dir: Path) -> dict:
    """Train the quick baseline for ``steps``; its summary is the state drex-opt starts from.

    drex-opt's study takes its focus (and severity, hence its budget) from this run's
    behavioural analysis, so this run's agent steps are charged to drex-opt
    (:func:`baseline_state_charge`). A run reused from ``--work`` (``--resume``) says so.
    """
    cfg = config.resolve("quick", None, {"train": {"total_timesteps": steps, "seed": seed}})
    s = finished_run(run_dir, cfg)
    reused = s is not None
    s = s or runner.run_training(cfg, run_dir).summary
    if s["status"] != "completed":
        raise SystemExit(f"baseline run {s['status']}: {s.get('error')}")
    analysis = s["behavioral_analysis"]
    return {"run_dir": str(run_dir), "steps": s["agent_steps"], "seed": seed, "wall_time_s": s["wall_time_s"],
            **{key: s.get(key) for key, _ in OBJECTIVES},
            "focus": analysis["next_focus"], "severity": analysis["severity"], "insights": analysis["insights"],
            "reused": reused, "trained_at": s.get("timestamp")}


def baseline_state_charge(state: dict, methods) -> dict[str, dict[str, float]]:
    """The baseline-state run's agent steps and wall time, for each method that needs that state.

    Only drex-opt does (:data:`NEEDS_STATE`): random search, TPE and Protein search the
    whole safe space from the baseline configuration and never read the trained state.
    """
    return {m: {"agent_steps": float(state.get("steps") or 0), "wall_time_s": float(state.get("wall_time_s") or 0)}
            for m in methods if m in NEEDS_STATE}


# ---------------------------------------------------------------- analysis
def curve(records: list[dict], key: str, cost: str = "agent_steps", start: float = 0.0):
    """:func:`common.best_so_far`, with ``start`` spent before the first trial (nothing found by it)."""
    c = best_so_far(records, key, cost)
    return c if not start else [(0.0, 0.0)] + [(x + start, y) for x, y in c]


def summarize(runs: dict[str, dict[int, list[dict]]], charged: dict[str, dict[str, float]] | None = None) -> dict:
    """Per objective: the target, and per method the best found and the steps to the target.

    ``runs[method][seed]`` is the list of trial records in the order they ran.
    ``charged[method]`` is spent before a method's first trial (the baseline-state run for
    drex-opt, see :func:`baseline_state_charge`): it counts in the method's steps to any
    target and in its total, and finds nothing itself.
    """
    charged = charged or {}

    def start(m: str, cost: str = "agent_steps") -> float:
        return float((charged.get(m) or {}).get(cost) or 0.0)

    out: dict = {"objectives": {}}
    for key, label in OBJECTIVES:
        curves = {m: {s: curve(recs, key, start=start(m)) for s, recs in by_seed.items()}
                  for m, by_seed in runs.items()}
        best_any = max((c[-1][1] for by_seed in curves.values() for c in by_seed.values()), default=0.0)
        target = TARGET_SHARE * best_any if best_any > 0 else None
        methods = {}
        for m, by_seed in curves.items():
            finals = [c[-1][1] for c in by_seed.values()]
            reach = [steps_to(c, target) if target is not None else NOT_REACHED for c in by_seed.values()]
            # The same in wall time: load-dependent, and it counts what a trial costs on this machine.
            walls = [steps_to(curve(recs, key, "wall_time_s", start(m, "wall_time_s")), target)
                     if target is not None else NOT_REACHED for recs in runs[m].values()]
            methods[m] = {"best": finals, "steps_to_target": reach, "median_steps_to_target": median_steps(reach),
                          "seeds_reached": sum(math.isfinite(r) for r in reach),
                          "wall_s_to_target": walls, "median_wall_s_to_target": median_steps(walls)}
        out["objectives"][key] = {"label": label, "best_any": best_any, "target": target, "methods": methods}
    out["charged"] = {m: start(m) for m in runs}
    out["spent"] = {m: [sum(r["agent_steps"] for r in recs) + start(m) for recs in by_seed.values()]
                    for m, by_seed in runs.items()}
    out["ladder"] = ladder(runs, "end_to_end_success", starts={m: start(m) for m in runs})
    out["states"] = {m: _states(r for recs in by_seed.values() for r in recs) for m, by_seed in runs.items()}
    out["verdict"] = verdict(out["objectives"], {m: statistics.median(v) for m, v in out["spent"].items()})
    out["verdict"] += ladder_verdict(out["ladder"])
    return out


def ladder(runs: dict[str, dict[int, list[dict]]], key: str, levels: tuple[float, ...] = LADDER,
           starts: dict[str, float] | None = None) -> dict[str, dict[str, dict]]:
    """Per method and level: agent steps to first reach it per seed, their median, seeds reached.

    ``starts[method]``: agent steps spent before the method's first trial (see :func:`summarize`).
    """
    out: dict[str, dict[str, dict]] = {}
    for m, by_seed in runs.items():
        curves = [curve(recs, key, start=(starts or {}).get(m, 0.0)) for recs in by_seed.values()]
        out[m] = {}
        for level in levels:
            reach = [steps_to(c, level) for c in curves]
            out[m][f"{level:g}"] = {"steps": reach, "median": median_steps(reach),
                                    "seeds_reached": sum(math.isfinite(r) for r in reach)}
    return out


def reuse_summary(runs: dict[str, dict[int, list[dict]]], work_given: bool = True) -> dict[str, dict[str, dict]]:
    """Per method and seed: trials counted, reused from an earlier run, trained now, shared.

    ``reused``: read back from an earlier invocation's run folder or study (record
    ``resumed``). ``shared``: TPE start-up trials taken from random search's run of the
    same configuration in the same invocation (trained once; each may itself be reused).
    A record without the ``resumed`` flag (older results) counts as trained now when the
    benchmark ran without ``--work`` (a fresh temporary folder: nothing to reuse), else as
    ``unknown``. ``trained_at``: earliest and latest training date of the reused trials,
    where recorded.
    """
    out: dict[str, dict[str, dict]] = {}
    for m, by_seed in runs.items():
        out[m] = {}
        for s, recs in by_seed.items():
            flags = [r.get("resumed") if r.get("resumed") is not None else (None if work_given else False)
                     for r in recs]
            dates = sorted(d for r in recs if (d := (r.get("reused_from") or {}).get("trained_at")))
            sources = sorted({str(Path(f["run_dir"]).parent) if f.get("run_dir") else str(f.get("study"))
                              for r in recs if (f := r.get("reused_from"))})
            out[m][str(s)] = {"trials": len(recs), "reused": sum(f is True for f in flags),
                              "trained_now": sum(f is False for f in flags), "unknown": sum(f is None for f in flags),
                              "shared": sum(1 for r in recs if r.get("shared_with")),
                              "trained_at": [dates[0], dates[-1]] if dates else None, "sources": sources}
    return out


def ladder_verdict(by_method: dict[str, dict[str, dict]]) -> list[str]:
    """One sentence per rival: at which fixed end-to-end levels drex-opt needs at least 2x
    fewer median agent steps (a rival that never reached counts as infinitely late)."""
    if "drex-opt" not in by_method:
        return []
    drex = by_method["drex-opt"]
    lines = []
    for rival in ("random", "protein"):
        if rival not in by_method:
            continue
        met, missed = [], []
        for level, d in drex.items():
            r = by_method[rival][level]
            if not math.isfinite(d["median"]) and not math.isfinite(r["median"]):
                continue  # neither got there: nothing to compare
            ok = math.isfinite(d["median"]) and (not math.isfinite(r["median"]) or r["median"] >= 2 * d["median"])
            (met if ok else missed).append(f"{float(level):.0%} ({steps_text(d['median'])} vs {steps_text(r['median'])})")
        if not met and not missed:
            continue
        lines.append(f"Fixed end-to-end levels, drex-opt vs {rival} (median agent steps): at least 2x fewer at "
                     + (", ".join(met) or "none") + (f"; NOT at {', '.join(missed)}" if missed else "") + ".")
    return lines


def gradient_updates(rec: dict, baseline: dict) -> int | None:
    """Optimizer steps a trial took: update epochs x batches trained (minibatch = batch here)."""
    train = {**baseline["train"], **((rec.get("overrides") or {}).get("train") or {})}
    batch = train.get("batch_size")
    if not batch or not rec.get("agent_steps"):
        return None
    return int(train.get("update_epochs", 1)) * (int(rec["agent_steps"]) // int(batch))


def best_trials(runs: dict[str, dict[int, list[dict]]], n: int = 5) -> list[tuple[str, int, dict]]:
    """The ``n`` best completed trials of all methods by end-to-end, then delivery, then grip."""
    done = [(m, s, r) for m, by_seed in runs.items() for s, recs in by_seed.items() for r in recs
            if r["state"] == "COMPLETE" and not r.get("shared_with")]
    done.sort(key=lambda x: objectives.rank_key([x[2][k] for k in objectives.OBJECTIVES]), reverse=True)
    return done[:n]


def _states(records) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return counts


def verdict(objectives: dict, spent: dict[str, float]) -> list[str]:
    """Plain sentences on the issue's target: at least 2x less compute than random search to
    reach the target level, and ahead of Protein. Judged on end-to-end success (the issue's
    measure), then on delivery and grip, the stages before it, wherever any method found some."""
    lines = []
    for key, label in OBJECTIVES:
        parts = []
        obj = objectives[key]
        if obj["target"] is None:
            lines.append(f"No method found any {label} success, so the target cannot be judged on {label}.")
            continue
        ms = obj["methods"]
        if "drex-opt" not in ms:
            continue
        drex = ms["drex-opt"]["median_steps_to_target"]
        reached = ", ".join(f"{m} {r['seeds_reached']}/{len(r['best'])}" for m, r in ms.items())
        head = (f"On {label} (target {pct(obj['target'])}, {TARGET_SHARE:.0%} of the best found; seeds that reached "
                f"it: {reached}): ")
        if "random" in ms:
            rnd = ms["random"]["median_steps_to_target"]
            if not math.isfinite(drex):
                parts.append("drex-opt did not reach the target (median seed): the 2x-over-random target is NOT met.")
            elif not math.isfinite(rnd):
                # Random search's whole spend only bounds its steps to the target from below.
                bound = spent.get("random", 0.0) / max(drex, 1)
                parts.append(f"drex-opt reached it in {steps_text(drex)} agent steps; random search did not within "
                             f"the {steps_text(spent.get('random'))} it spent (ratio above {bound:.1f}x): "
                             + ("the 2x target is met." if bound >= 2 else
                                "whether the 2x target is met is not shown by this budget."))
            else:
                ratio = rnd / max(drex, 1)
                parts.append(f"drex-opt {steps_text(drex)} vs random {steps_text(rnd)} agent steps ({ratio:.1f}x): "
                             f"the 2x target is {'met' if ratio >= 2 else 'NOT met'}.")
        if "protein" in ms:
            prot = ms["protein"]["median_steps_to_target"]
            d_best = statistics.median(ms["drex-opt"]["best"])
            p_best = statistics.median(ms["protein"]["best"])
            if math.isfinite(drex) and (not math.isfinite(prot) or drex < prot):
                ahead = f"drex-opt is ahead of Protein ({steps_text(drex)} vs {steps_text(prot)} to the target)."
            elif math.isfinite(prot) and (not math.isfinite(drex) or prot < drex):
                ahead = f"drex-opt is NOT ahead of Protein ({steps_text(drex)} vs {steps_text(prot)} to the target)."
            else:
                tie = "tie on steps to the target" if math.isfinite(drex) else "neither reached the target"
                ahead = (f"drex-opt and Protein {tie}; by median best found, drex-opt {pct(d_best)} vs Protein "
                         f"{pct(p_best)}: drex-opt is {'ahead' if d_best > p_best else 'NOT ahead'}.")
            parts.append(ahead)
        lines.append(head + " ".join(parts))
    return lines


# ---------------------------------------------------------------- report
def _was(new: str, old: str | None) -> str:
    """``new``, followed by the earlier accounting's ``(was old)`` where that differs."""
    return new if old is None or old == new else f"{new} (was {old})"


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:.1f}" if seconds is not None and math.isfinite(seconds) else "not reached"


def accounting_markdown(settings: dict, state: dict, summary: dict, runs: dict[str, dict[int, list[dict]]],
                        left_out: dict | None, previous: dict | None) -> list[str]:
    """The section that says what was reused, what was left out and what is charged to whom."""
    reuse = settings.get("reuse") or {}
    table = reuse_summary(runs, work_given=reuse.get("work") is not None)
    total = sum(v["trials"] for by_seed in table.values() for v in by_seed.values())
    reused = sum(v["reused"] for by_seed in table.values() for v in by_seed.values())
    unknown = sum(v["unknown"] for by_seed in table.values() for v in by_seed.values())
    lines = ["## How trials and agent steps are counted\n", "### Trials reused from an earlier run\n"]
    policy = ("Fresh runs are the default; reuse needs `--work DIR --resume`, and every reused trial is marked "
              "(`resumed`, `reused_from`) in the .json.")
    if not reused and not unknown:
        lines.append(f"None: all {total} counted trials were trained by the invocation that wrote this result"
                     + (" (run without `--work`, in a fresh temporary folder). " if reuse.get("work") is None
                        else f" (in `{reuse['work']}`). ") + policy + "\n")
    else:
        own = [r for by_seed in runs.values() for recs in by_seed.values() for r in recs if not r.get("shared_with")]
        lines.append(f"**{reused} of the {total} counted trials were not trained by the invocation that wrote this "
                     f"result**: they were read back from an earlier run in `{reuse.get('work')}`"
                     + (f", and {unknown} trials do not record whether they were" if unknown else "")
                     + f" ({sum(1 for r in own if r.get('resumed'))} of the {len(own)} distinct training runs: "
                     "TPE's shared start-up trials are random search's runs). Per method and seed:\n")
        rows = []
        for m, by_seed in table.items():
            for s, v in by_seed.items():
                when = " – ".join(dict.fromkeys(v["trained_at"])) if v["trained_at"] else (
                    "not recorded" if v["reused"] else "-")
                now = v["trained_now"] if not v["unknown"] else f"{v['trained_now']} (+{v['unknown']} not recorded)"
                where = ", ".join(f"`{x}`" for x in v["sources"]) or (f"`{reuse.get('work')}`" if v["reused"] else "-")
                rows.append([m, s, v["trials"], v["reused"], now, v["shared"] or "-", when, where])
        lines += [md_table(["method", "seed", "counted trials", "reused from an earlier run", "trained in this run",
                            "of which shared with random (same run)", "reused trials trained at", "reused from"],
                           rows, [False, True, True, True, True, True, False, False]), ""]
        prefix = all(not any(r.get("resumed") for r in recs[i:]) for by_seed in runs.values()
                     for recs in by_seed.values() for i in [sum(1 for r in recs if r.get("resumed"))])
        target = ((summary.get("objectives") or {}).get("end_to_end_success") or {}).get("target")
        first = {m: [_first_reaching(recs, "end_to_end_success", target) for recs in by_seed.values()]
                 for m, by_seed in runs.items()} if target else {}
        reached = [f"{m} {sum(1 for r in hits if r and r.get('resumed'))} of {sum(1 for r in hits if r)}"
                   for m, hits in first.items() if any(hits)]
        lines.append((("In every method and seed the reused trials are the first ones of the sequence. "
                       if prefix else "") + (
            f"The trial at which a seed first reached the end-to-end target ({pct(target)}) was a reused one "
            f"for {', '.join(reached)} seeds that reached it." if reached else "")).strip() + "\n")
        if reuse.get("note"):
            lines.append(reuse["note"] + "\n")
        earlier = reuse.get("earlier_invocations")
        if earlier:
            lines.append("Earlier invocations in that folder: " + "; ".join(
                f"{e.get('started')}: `{e.get('command')}`" for e in earlier) + ".\n")
        lines.append("A reused run of random search, TPE or Protein had exactly the configuration, budget and seed "
                     "of the trial (its `config.json` is compared), so its agent steps and success are what this "
                     "invocation would have trained, up to run-to-run nondeterminism; its wall time was measured "
                     "under the earlier run's load. drex-opt's reused trials are the first trials of the same Optuna "
                     "study, continued by name from its `drex.db`: its later trials were sampled knowing them. "
                     "Reuse does not change how a trial is counted: the numbers below count every reused trial "
                     "with its agent steps, exactly as a trial trained now. " + policy + "\n")

    gone = [(m, s, r) for m, by_seed in (left_out or {}).items() for s, recs in by_seed.items() for r in recs]
    lines += ["### Trials killed with the benchmark\n",
              "A trial stopped by a kill of the benchmark itself (still running when the process died, failed "
              "on resume as `worker process gone`, or `interrupted` by Ctrl-C/SIGTERM) says nothing about its "
              "configuration: it is left out and, on resume, a new trial runs in its place. Trials that failed on "
              "their own (crash, NaN weights, timeout, missing metrics) count, with the agent steps they "
              "consumed. Earlier, drex-opt's records were simply the study's first N trials whatever their state, "
              "and a resume ran N minus (complete + pruned + failed) new trials: a trial killed with the process "
              "stayed as a 0-step failure and the last real trial was dropped. Random search, TPE and Protein "
              "read a run interrupted by Ctrl-C back as a failed trial with its partial steps.\n"]
    if gone:
        lines.append(f"Left out here ({len(gone)}): " + "; ".join(
            f"{m} seed {s} trial {r.get('number')} ({r.get('error') or r.get('state')}, "
            f"{int(r.get('agent_steps') or 0):,} steps)" for m, s, r in gone) + ".\n")
    else:
        lines.append("Here no counted trial was killed with the benchmark (every record is complete, pruned, or "
                     "failed on its own), so this rule changes no number in this result.\n")

    charged = summary.get("charged") or {}
    needs = [m for m, v in charged.items() if v]
    lines.append("### The baseline-state run\n")
    if needs:
        wall = state.get("wall_time_s")
        lines.append(
            f"drex-opt's study takes its focus and budget from the behavioural analysis of the baseline-state run "
            f"(`planning.plan(from_run=...)`); random search, TPE and Protein never read that run (they search the "
            f"whole safe space from the baseline configuration). That run's **{int(state['steps']):,} agent steps**"
            + (f" ({wall:.1f} s)" if isinstance(wall, (int, float)) else "")
            + f" are charged to {', '.join(needs)} before its first trial, in every seed: in its steps to each "
            "target and level, its agent steps spent and the plot."
            + (" Earlier they were counted for no method." if previous else "")
            + (" The run was reused from an earlier invocation." if state.get("reused") else "") + "\n")
    else:
        lines.append("No method here needs the baseline-state run (drex-opt did not run), so it is charged to none.\n")
    if previous:
        lines.append("Figures that these rules changed show the earlier accounting beside them as `(was …)`.\n")
    return lines


def _first_reaching(records: list[dict], key: str, target: float) -> dict | None:
    """The first trial whose ``key`` reached ``target`` (where its best-so-far first got there)."""
    return next((r for r in records if isinstance(r.get(key), (int, float)) and r[key] >= target - 1e-12), None)


def markdown(info: dict, settings: dict, state: dict, space: list[WholeParam], summary: dict,
             runs: dict[str, dict[int, list[dict]]], name: str, previous: dict | None = None,
             left_out: dict | None = None) -> str:
    """The report. ``previous``: the same result's summary under the earlier accounting, shown as ``(was …)``."""
    baseline = config.load_baseline("quick")
    walls = [(r.get("wall_time_s") or 0, bool(r.get("resumed"))) for by_seed in runs.values()
             for recs in by_seed.values() for r in recs if not r.get("shared_with")]
    reused_min = sum(w for w, reused in walls if reused) / 60
    lines = ["# Search efficiency: drex-opt vs random search, TPE and Protein (real PufferLib runs)\n",
             header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; seeds {settings['seeds']}; "
             f"{settings['trials']} trials x {settings['timesteps']:,} agent steps per method and seed; "
             f"trial timeout {settings['trial_timeout']:.0f} s; wall time of all trials "
             f"{settings.get('trials_wall_min', settings['wall_time_min']):.1f} min"
             + (f" ({reused_min:.1f} min of it trained by an earlier run, see below)" if reused_min else "")
             + (f"\n- recomputed offline from the per-trial records on {settings['recomputed']} with the accounting "
                "below (no trial re-run)" if settings.get("recomputed") else "") + "\n",
             "## Baseline state\n",
             f"The quick baseline trained for {state['steps']:,} steps (seed {state['seed']}): grip "
             f"{pct(state['grip_success'])}, delivery {pct(state['delivery_success'])}, end-to-end "
             f"{pct(state['end_to_end_success'])}. Behavioural focus **{state['focus']}** (severity "
             f"{state['severity']}): " + "; ".join(state["insights"]) + ".\n",
             f"drex-opt searches that focus's space (`search_spaces/{settings['space_focus']}.toml`, trial 0 is the "
             "baseline, early stopping on, no seed repeats). The others search the whole safe space below from "
             "scratch (Protein starts at its search centre, the baseline). Each trial trains from scratch with the "
             "study's seed, as drex-opt's trials do. TPE's first "
             f"{settings.get('tpe_startup_trials', '?')} trials are its random start-up: the same proposals as "
             "random search's (same sampler seed), so those runs are shared rather than trained twice"
             + ("" if not ("tpe" in runs and "random" in runs) or any(
                 r.get("shared_with") for recs in runs["tpe"].values() for r in recs)
                else " (not in this result: it was written before runs were shared, and each method trained its "
                     "own)") + "; a failed trial does not count toward the start-up, so TPE stays random longer "
             f"({_own_tpe(runs)} proposals of its own here). drex-opt's study, too, samples its first "
             f"{settings.get('tpe_startup_trials', '?')} trials at random (its focus's `startup_trials`, baseline "
             "trial included): with few trials per seed this compares search spaces more than samplers.\n"]
    lines += accounting_markdown(settings, state, summary, runs, left_out, previous)
    charged = [m for m, v in (summary.get("charged") or {}).items() if v]
    lines += ["## Results\n",
              "Best value found by each method (median [min–max] over seeds) and the agent steps it spent until "
              f"its best first reached the target ({TARGET_SHARE:.0%} of the best value any method found; median "
              "over seeds, a seed that never reached counts as never). Agent steps include pruned and failed "
              "trials" + (f", and for {', '.join(charged)} the baseline-state run" if charged else "")
              + ". Agent-step numbers do not depend on the machine's load; wall times do.\n"]
    old_obj = (previous or {}).get("objectives") or {}
    for key, obj in summary["objectives"].items():
        old = old_obj.get(key)
        rows = []
        for m, r in obj["methods"].items():
            o = (old or {}).get("methods", {}).get(m) if old else None
            rows.append([m, _was(spread_text(r["best"]), o and spread_text(o["best"])),
                         _was(steps_text(r["median_steps_to_target"]), o and steps_text(o["median_steps_to_target"])),
                         _was(f"{r['seeds_reached']}/{len(r['best'])}", o and f"{o['seeds_reached']}/{len(o['best'])}"),
                         _was(_minutes(r.get("median_wall_s_to_target", NOT_REACHED)),
                              o and _minutes(o.get("median_wall_s_to_target")))])
        target = pct(obj["target"]) if obj["target"] is not None else "none (nobody found any)"
        if old:
            target = _was(target, pct(old["target"]) if old["target"] is not None else "none (nobody found any)")
        lines += [f"### {obj['label']} success (target {target})\n",
                  md_table(["method", "best found", "steps to target", "seeds reached",
                            "wall min to target (load-dependent)"], rows), ""]
    if summary.get("ladder"):
        n_seeds = {m: len(by_seed) for m, by_seed in runs.items()}
        levels = list(next(iter(summary["ladder"].values())))
        old_ladder = (previous or {}).get("ladder") or {}

        def cell(m: str, lv: str) -> str:
            new = summary["ladder"][m][lv]
            o = old_ladder.get(m, {}).get(lv)
            return (_was(steps_text(new["median"]), o and steps_text(o["median"]))
                    + f" ({_was(str(new['seeds_reached']), o and str(o['seeds_reached']))}/{n_seeds[m]})")

        lines += ["### Agent steps to fixed end-to-end levels\n",
                  "Median over seeds (a seed that never reached counts as never), and the seeds that reached it.\n",
                  md_table(["method", *(f"≥ {float(lv):.0%}" for lv in levels)],
                           [[m, *(cell(m, lv) for lv in levels)] for m in summary["ladder"]]), ""]
    rows = []
    old_spent = (previous or {}).get("spent") or {}
    for m, by_seed in runs.items():
        walls_min = [sum(r.get("wall_time_s") or 0 for r in recs) / 60 for recs in by_seed.values()]
        st = summary["states"][m]
        adj = sum(1 for recs in by_seed.values() for r in recs if r.get("adjustments")
                  and any("is not an integer" not in a for a in r["adjustments"]))
        load = ", ".join(f"{v:g}" for v in settings.get("load_at_start", {}).get(m, []) if v is not None)
        updates = [u for recs in by_seed.values() for r in recs if (u := gradient_updates(r, baseline)) is not None]
        state_steps = (summary.get("charged") or {}).get(m)
        rows.append([m, _was(spread_text(summary["spent"][m], steps_text),
                             spread_text(old_spent[m], steps_text) if m in old_spent else None),
                     steps_text(state_steps) if state_steps else "-",
                     st.get("COMPLETE", 0), st.get("PRUNED", 0),
                     st.get("FAIL", 0), adj, f"{statistics.median(updates):.0f}" if updates else "-",
                     spread_text(walls_min, lambda v: f"{v:.1f}"), load or "-"])
    lines += ["### Compute\n",
              md_table(["method", "agent steps spent", "of which baseline-state run", "complete", "pruned", "failed",
                        "clamped", "gradient updates per trial (median)", "wall min of trials (load-dependent)",
                        "load at start"], rows),
              "\n`agent steps spent`: all counted trials, plus the baseline-state run where charged. `clamped`: "
              "trials whose proposal `safety.clamp` moved (beyond rounding Protein's real-valued "
              "counts to integers). `gradient updates`: update epochs x batches trained, the optimizer steps a "
              "trial gets from its agent steps. "
              "`failed` includes crashes, NaN and timeouts. `load at start`: the 1-minute load average when the "
              "method's seed started in the invocation that wrote this result (not when its reused trials ran).\n",
              "### Best trials of all methods\n",
              md_table(["method", "seed", "trial", "end-to-end", "delivery", "grip", "gradient updates",
                        "learning rate", "update epochs", "batch", "optimizer", "drones x arenas"],
                       [[m, s, r["number"], pct(r["end_to_end_success"]), pct(r["delivery_success"]),
                         pct(r["grip_success"]), gradient_updates(r, baseline) or "-",
                         f"{_train(r, baseline, 'learning_rate'):.2g}", _train(r, baseline, "update_epochs"),
                         f"{_train(r, baseline, 'batch_size'):,}", _train(r, baseline, "optimizer"),
                         f"{_env(r, baseline, 'num_drones')} x {_env(r, baseline, 'num_envs')}"]
                        for m, s, r in best_trials(runs)]),
              "",
              "## Verdict\n"]
    lines += [f"- {v}" for v in summary["verdict"]] or ["- nothing to judge"]
    changed = [v for v in (previous or {}).get("verdict", []) if v not in summary["verdict"]]
    if changed:
        lines += ["", "Under the earlier accounting, these lines read:\n"]
        lines += [f"- {v}" for v in changed]
    lines += ["", f"![best-so-far vs agent steps]({name}.png)\n", "## The whole safe space\n",
              "Every searchable key of the brief within its safety range (log scale where marked). Left out, "
              "as execution settings rather than hyperparameters: " + ", ".join(f"`{k}`" for k in sorted(EXCLUDED))
              + ". Topology keys are bounded around the quick baseline so every trial can run (batches of 128 "
              "to 2M agent steps; a one-drone, 32-step batch trains at ~300 steps/s here and times out).\n",
              md_table(["key", "type", "range / choices", "log"],
                       [[f"`{p.key}`", p.kind, _range_text(p), "yes" if p.log else ""] for p in space],
                       [False, False, False, False])]
    return "\n".join(lines) + "\n"


def _own_tpe(runs: dict[str, dict[int, list[dict]]]) -> str:
    recs = [r for by_seed in runs.get("tpe", {}).values() for r in by_seed]
    return f"{sum(1 for r in recs if not r.get('shared_with'))} of {len(recs)}"


def _train(rec: dict, baseline: dict, key: str) -> Any:
    return ((rec.get("overrides") or {}).get("train") or {}).get(key, baseline["train"][key])


def _env(rec: dict, baseline: dict, key: str) -> Any:
    return ((rec.get("overrides") or {}).get("env") or {}).get(key, baseline["env"][key])


def _range_text(p: WholeParam) -> str:
    return ", ".join(map(str, p.choices)) if p.choices else f"{p.low:.10g} – {p.high:.10g}"


def plot(runs: dict[str, dict[int, list[dict]]], path: Path,
         charged: dict[str, dict[str, float]] | None = None) -> None:
    """Best-so-far against agent steps; ``charged`` steps (the baseline-state run) come before a method's trials."""
    # Only the picture needs matplotlib, with its file backend chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = {m: float(((charged or {}).get(m) or {}).get("agent_steps") or 0) for m in runs}
    top = max((sum(r["agent_steps"] for r in recs) + starts[m] for m, by_seed in runs.items()
               for recs in by_seed.values()), default=1)
    grid = [top * i / 200 for i in range(201)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=False)
    for ax, (key, label) in zip(axes, OBJECTIVES):
        for m, by_seed in runs.items():
            curves = [curve(recs, key, start=starts[m]) for recs in by_seed.values()]
            end = max(c[-1][0] for c in curves)  # a method's line stops where its spending did
            points = [x for x in grid if x < end] + [end]
            med, low, high = band(curves, points)
            xs = [x / 1e6 for x in points]
            # Random search and TPE share their start-up runs: distinct line styles keep both visible.
            name = m + (" (incl. baseline-state run)" if starts[m] else "")
            (line,) = ax.step(xs, med, where="post", label=name, linewidth=2, linestyle=LINESTYLES.get(m, "-"))
            if len(curves) > 1:
                ax.fill_between(xs, low, high, step="post", alpha=0.08, color=line.get_color())
        ax.set_ylim(bottom=0, top=max(0.05, ax.get_ylim()[1]))
        ax.set_title(f"best {label} success so far")
        ax.set_xlabel("agent steps spent (millions)")
    axes[0].set_ylabel("share of episodes (median, band = min–max over seeds)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 4 trials per method (a few minutes)")
    parser.add_argument("--seeds", type=int, nargs="+", help="benchmark seeds (default: 1 quick, 1 2 3 full)")
    parser.add_argument("--trials", type=int,
                        help="trials per method and seed (default: 4 quick, the focus's budget full)")
    parser.add_argument("--timesteps", type=int, help="agent steps per trial (default: the focus's quick budget)")
    parser.add_argument("--baseline-steps", type=int, default=BASELINE_STEPS, help="steps of the baseline-state run")
    parser.add_argument("--trial-timeout", type=float,
                        help="seconds before any method's trial is killed (default: drex-opt's, 120 s + 1 s per 5,000 "
                             "steps); raise it on a loaded machine, where slow configurations time out sooner")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--work", type=Path,
                        help="keep every run here (default: a temporary folder, deleted at the end); it must be "
                             "empty or new unless --resume is given")
    parser.add_argument("--resume", action="store_true",
                        help="with --work: reuse the baseline-state run, every finished trial and drex-opt's studies "
                             "found there (an interrupted benchmark); the results say per method and seed how many "
                             "trials were reused, from where and when")
    parser.add_argument("--recompute", "--render", dest="recompute", type=Path, metavar="FILE",
                        help="recompute this results .json's summary, .md and .png from its per-trial records with "
                             "the current accounting, keeping the earlier summary beside it; train nothing")
    args = parser.parse_args(argv)
    if args.resume and not args.work:
        parser.error("--resume needs --work DIR (the folder of the benchmark to resume)")
    args.seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    return args


def prepare_work(work: Path, resume: bool, entry: dict) -> list[dict]:
    """Check ``work`` for ``--resume``, record this invocation there; the earlier invocations.

    Without ``resume`` the folder must be empty or new: runs of an earlier invocation are
    never reused silently. ``invocations.json`` in the folder lists every invocation.
    """
    manifest = work / INVOCATIONS
    if work.exists() and any(work.iterdir()) and not resume:
        raise SystemExit(f"{work} already holds runs of an earlier benchmark: pass --resume to reuse them (the "
                         "results will say so), or choose an empty --work folder for a fresh run")
    work.mkdir(parents=True, exist_ok=True)
    try:
        earlier = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = []
    manifest.write_text(json.dumps(earlier + [entry], indent=2) + "\n", encoding="utf-8")
    return earlier


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.recompute:
        return recompute(args.recompute)
    started = time.time()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    baseline = config.load_baseline("quick")
    space = whole_space()
    runs: dict[str, dict[int, list[dict]]] = {m: {} for m in args.methods}
    left_out: dict[str, dict[int, list[dict]]] = {}  # killed trials of drex-opt's studies, see run_drex
    loads: dict[str, list[float | None]] = {}  # the machine's 1-minute load average as each method's run started
    shared: dict[str, dict] = {}  # trained configurations (JSON) -> record, see run_optuna
    keep = contextlib.nullcontext(str(args.work)) if args.work else None
    with keep or tempfile.TemporaryDirectory(prefix="drex-bench-search-") as tmp:
        work = Path(tmp)
        earlier = prepare_work(work, args.resume, {
            "started": started_at, "command": " ".join(command_line()), "seeds": args.seeds, "trials": args.trials,
            "methods": args.methods, "resume": args.resume})
        print(f"baseline state: quick baseline, {args.baseline_steps:,} steps", flush=True)
        state = baseline_state(args.baseline_steps, args.seeds[0], work / "baseline")
        print(f"  focus {state['focus']} ({state['severity']}); grip {pct(state['grip_success'])}"
              + (" (reused from an earlier run)" if state["reused"] else ""), flush=True)
        focus_space = spaces.load(state["focus"])
        budget = focus_space.budget_for("quick", state["severity"])
        timesteps = args.timesteps or budget.timesteps
        trials = args.trials or (4 if args.quick else budget.trials)
        timeout = args.trial_timeout or planning.TRIAL_TIMEOUT_BASE_S + timesteps / planning.TRIAL_TIMEOUT_MIN_SPS
        threads = max(1, os.cpu_count() or 1)
        for seed in args.seeds:
            for m in args.methods:
                print(f"{m}, seed {seed}", flush=True)
                loads.setdefault(m, []).append(round(os.getloadavg()[0], 2))
                where = work / f"{m}-s{seed}"
                where.mkdir(parents=True, exist_ok=True)
                if m == "drex-opt":
                    runs[m][seed], gone = run_drex(Path(state["run_dir"]), trials, timesteps, seed, where, timeout)
                    if gone:
                        left_out.setdefault(m, {})[seed] = gone
                elif m == "protein":
                    runs[m][seed] = run_protein(space, baseline, trials, timesteps, seed, where, timeout, threads)
                else:
                    runs[m][seed] = run_optuna(m, space, baseline, trials, timesteps, seed, budget.startup_trials,
                                               where, timeout, threads, shared)
                if all(r.get("resumed") or r.get("shared_with") for r in runs[m][seed]):
                    loads[m][-1] = None  # nothing trained now: this load says nothing about those runs
    charged = baseline_state_charge(state, args.methods)
    summary = summarize(runs, charged)
    settings = {"quick": args.quick, "seeds": args.seeds, "trials": trials, "timesteps": timesteps,
                "trial_timeout": timeout, "tpe_startup_trials": budget.startup_trials,
                "space_focus": focus_space.focus, "target_share": TARGET_SHARE,
                "wall_time_min": (time.time() - started) / 60, "load_at_start": loads,
                "trials_wall_min": sum(r.get("wall_time_s") or 0 for by_seed in runs.values()
                                       for recs in by_seed.values() for r in recs if not r.get("shared_with")) / 60,
                "reuse": {"work": str(args.work) if args.work else None, "resume": args.resume,
                          "started": started_at, "earlier_invocations": earlier}}
    info = describe()
    name = result_name("search_efficiency", args.quick)
    payload = {"machine": info, "settings": settings, "baseline_state": state,
               "whole_space": [asdict(p) for p in space], "accounting": ACCOUNTING, "charged": charged,
               "summary": summary, "reuse": reuse_summary(runs, args.work is not None),
               "runs": {m: {str(s): recs for s, recs in by_seed.items()} for m, by_seed in runs.items()},
               "left_out": {m: {str(s): recs for s, recs in by_seed.items()} for m, by_seed in left_out.items()}}
    write_results(name, payload, markdown(info, settings, state, space, summary, runs, name, left_out=left_out))
    plot(runs, RESULTS / f"{name}.png", charged)
    for line in summary["verdict"]:
        print(line)
    print(f"wrote {RESULTS / name}.{{json,md,png}} in {settings['wall_time_min']:.1f} min")


def legacy_reuse(data: dict) -> dict:
    """What a result written before reuse was recorded can still tell about it."""
    settings, info = data["settings"], data["machine"]
    command = info.get("command", "").split()
    work = command[command.index("--work") + 1] if "--work" in command[:-1] else None
    reuse: dict = {"work": work, "resume": None, "earlier_invocations": None}
    flagged = any(r.get("resumed") for by_seed in data["runs"].values() for recs in by_seed.values() for r in recs)
    if work and flagged:
        try:  # ``date`` is taken when the result is written, ``wall_time_min`` after the invocation started
            start = (datetime.fromisoformat(info["date"]) - timedelta(minutes=settings["wall_time_min"]))
            start_text = start.isoformat(timespec="minutes")
        except (KeyError, TypeError, ValueError):
            start_text = "an unrecorded time"
        reuse["started"] = start_text
        reuse["note"] = (
            f"The benchmark then reused, without a flag and without saying so in its report, every finished trial "
            f"it found in `--work {work}`. The reused trials were trained by an earlier invocation in that folder "
            f"whose date, command and code version were not recorded; it ended before this invocation started "
            f"(about {start_text}). The baseline-state run's reuse was not recorded either.")
    return reuse


def recompute(path: Path) -> None:
    """Recompute a stored result's summary, report and plot from its per-trial records.

    The records are re-read with the current accounting: killed trials left out
    (:func:`counted_trials`), the baseline-state run charged to the methods that need it
    (:func:`baseline_state_charge`), reuse counted per method and seed (:func:`reuse_summary`).
    A result written with the earlier accounting keeps that summary as
    ``summary_previous_accounting`` (recomputed from the same records the earlier way), so
    the report shows both where they differ. Trains nothing.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    stored = {m: {int(s): recs for s, recs in by_seed.items()} for m, by_seed in data["runs"].items()}
    settings = data["settings"]
    settings.setdefault("trials_wall_min", sum(r.get("wall_time_s") or 0 for by_seed in stored.values()
                                               for recs in by_seed.values() for r in recs
                                               if not r.get("shared_with")) / 60)
    left_out = {m: {int(s): recs for s, recs in by_seed.items()} for m, by_seed in (data.get("left_out") or {}).items()}
    if data.get("accounting") != ACCOUNTING:
        # Written with the earlier accounting: every stored record counted, nothing charged.
        data["summary_previous_accounting"] = summarize(stored)
        settings.setdefault("reuse", legacy_reuse(data))
        settings["recomputed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data["accounting"] = ACCOUNTING
    runs = {}
    for m, by_seed in stored.items():
        runs[m] = {}
        for s, recs in by_seed.items():
            runs[m][s] = counted_trials(recs, len(recs))
            gone = [r for r in recs if killed(r)]
            if gone:
                left_out.setdefault(m, {})[s] = gone
    charged = baseline_state_charge(data["baseline_state"], runs)
    summary = summarize(runs, charged)
    reuse = settings.get("reuse") or {}
    data.update(charged=charged, summary=summary, reuse=reuse_summary(runs, reuse.get("work") is not None),
                runs={m: {str(s): recs for s, recs in by_seed.items()} for m, by_seed in runs.items()},
                left_out={m: {str(s): recs for s, recs in by_seed.items()} for m, by_seed in left_out.items()})
    space = [WholeParam(**{**p, "choices": tuple(p["choices"])}) for p in data["whole_space"]]
    name = path.stem
    write_results(name, data, markdown(data["machine"], settings, data["baseline_state"], space, summary, runs, name,
                                       previous=data.get("summary_previous_accounting"), left_out=left_out),
                  out=path.parent)
    plot(runs, path.parent / f"{name}.png", charged)
    print(f"rewrote {path.parent / name}.{{json,md,png}}")
    for line in summary["verdict"]:
        print(line)


if __name__ == "__main__":
    main()
