"""Overhead: drex-opt's own time per trial against the trial's training time.

Run from the repository root: .venv/bin/python -m benchmarks.overhead [--quick] [--seeds 1] [--focus F]

Three measurements, all wall time (so they depend on the machine's load, recorded):

1. **Parent side per trial.** The real study engine (``study.open_study`` + ``trial.TrialRunner``
   through Optuna's ``Study.optimize``, as a worker runs it) on SQLite and on a journal file
   holding 10 and 200 completed trials (synthetic, made with ``optuna.trial.create_trial``
   from the focus's space). Only the training child is replaced, by a stand-in that
   replays a progress history through the early-stopping rule and writes the run-folder
   files. Each piece is timed: sampling (TPE), clamping, storage (ask, user attributes,
   tell), early-stopping references and checks, dashboard notes and files.
2. **Child start-up.** A real training run of a single batch (16,384 steps for the quick
   baseline; PufferLib 3.0 divides by zero below one batch): process start, imports,
   environment and policy construction, one batch and update, summary.
3. **Training time** of one real trial at the focus's quick budget.

Writes ``benchmarks/results/overhead[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from benchmarks.common import md_table, result_name, write_results
from benchmarks.machine import command_line, describe, header_markdown
from drex_opt.jsonio import write_json_atomic
from drex_opt.rules import config, safety
from drex_opt.run import runner
from drex_opt.search import dashboard, planning, spaces, study
from drex_opt.search.monitor import StudyMonitor
from drex_opt.search.trial import TrialFailure, TrialRunner

SIZES = (10, 200)
STORAGES = ("sqlite", "journal")
PIECES = ("sample", "clamp", "storage", "early_stop", "notes", "run_files")
PIECE_LABELS = {"sample": "sampling (TPE)", "clamp": "clamp", "storage": "storage (ask, attrs, tell)",
                "early_stop": "early-stop refs + checks", "notes": "dashboard notes + files",
                "run_files": "run-folder files"}
HISTORY_POINTS = 20  # progress events of a typical trial (one per PufferLib log interval)


class Stopwatch:
    """Accumulated seconds per piece for the trial being measured."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def add(self, piece: str, seconds: float) -> None:
        self.times[piece] = self.times.get(piece, 0.0) + seconds

    def wrap(self, piece: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(piece, time.perf_counter() - t)

        return timed


def synthetic_trials(space, n: int, timesteps: int, seed: int) -> list:
    """``n`` completed trials that look like real ones to the engine (params, values, curve, overrides)."""
    rng = random.Random(seed)
    dists = {}
    for name, p in space.params.items():
        if p.type == "float":
            dists[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            dists[name] = IntDistribution(p.low, p.high, log=p.log, step=p.step or 1)
        else:
            dists[name] = CategoricalDistribution(p.choices)
    out = []
    for i in range(n):
        params = {}
        for name, d in dists.items():
            if isinstance(d, CategoricalDistribution):
                params[name] = rng.choice(d.choices)
            elif isinstance(d, IntDistribution):
                params[name] = rng.randint(d.low, d.high)
            else:
                params[name] = rng.uniform(d.low, d.high)
        grip = rng.random()
        values = [grip, grip * rng.random(), 0.0]
        values[2] = values[1] * rng.random()
        overrides: dict = {}
        for name, v in params.items():
            section, key = name.split(".")
            overrides.setdefault(section, {})[key] = v
        overrides.setdefault("train", {}).update(total_timesteps=timesteps, seed=seed)
        curve = [(round((k + 1) / HISTORY_POINTS, 4), round(grip * (k + 1) / HISTORY_POINTS, 4), 0.5)
                 for k in range(HISTORY_POINTS)]
        attrs = {"overrides": overrides, "clamp_adjustments": [], "run_dir": f"/synthetic/trial-{i}",
                 "status": "completed", "agent_steps": timesteps, "wall_time_s": 10.0, "sps": 100_000.0,
                 "behavioral_analysis": {"severity": "ok", "next_focus": "continue", "insights": []},
                 "curve": curve, "worker": {"host": "synthetic", "pid": 0}}
        out.append(optuna.trial.create_trial(params=params, distributions=dists, values=values, user_attrs=attrs))
    return out


def fake_training(watch: Stopwatch, files: Path, summary: dict, timesteps: int) -> Callable:
    """A stand-in for ``runner.run_training``: replays a progress history through the stop
    rule (timed as early stopping) and writes the run folder (timed as run-folder files)."""
    def run_training(config, run_dir, env_name="drone_pp", timeout=None, load_model=None, on_event=None,
                     stop_rule=None, threads=None, cancel=None, **_):
        t0 = time.perf_counter()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", config)
        shutil.copy(files / "train.log", run_dir / "train.log")
        history = []
        checks = 0.0
        for k in range(HISTORY_POINTS):
            steps = timesteps * (k + 1) // HISTORY_POINTS
            event = {"event": "progress", "agent_steps": steps, "environment/perfect_grip": 0.3 * k / HISTORY_POINTS,
                     "environment/to_pickup": 0.5}
            history.append(event)
            if on_event:
                on_event(event)
            if stop_rule is not None:
                t = time.perf_counter()
                stop_rule(event, history)
                checks += time.perf_counter() - t
        # Objectives as a completed trial reports them (a one-batch run has no finished episode).
        s = dict(summary, status="completed", error=None, agent_steps=timesteps, history=history,
                 grip_success=0.3, delivery_success=0.1, end_to_end_success=0.08)
        write_json_atomic(run_dir / "summary.json", s)
        watch.add("early_stop", checks)
        watch.add("run_files", time.perf_counter() - t0 - checks)
        return runner.TrainResult(run_dir=run_dir, summary=s, summary_path=run_dir / "summary.json", history=history)

    return run_training


def measure_parent(storage_kind: str, size: int, reps: int, focus: str, timesteps: int, seed: int, work: Path,
                   files: Path, summary: dict) -> list[dict]:
    """Per-trial times (seconds per piece and total) of ``reps`` trials after ``size`` prefilled ones."""
    url = (f"sqlite:///{work / f'{storage_kind}-{size}.db'}" if storage_kind == "sqlite"
           else f"journal:{work / f'{storage_kind}-{size}.log'}")
    plan = planning.plan(planning.StudySettings(
        focus=focus, storage=url, study_name=f"overhead-{storage_kind}-{size}", trials=reps, timesteps=timesteps,
        seed=seed, repeats=0, studies_dir=work / "studies", command=command_line()))
    st = study.open_study(plan)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st.add_trials(synthetic_trials(plan.space, size, timesteps, seed))
    watch = Stopwatch()
    objective = TrialRunner(plan, StudyMonitor(plan), threading.Event())
    objective._references = watch.wrap("early_stop", objective._references)
    patches = [(runner, "run_training", fake_training(watch, files, summary, timesteps)),
               (spaces, "suggest", watch.wrap("sample", spaces.suggest)),
               (safety, "clamp", watch.wrap("clamp", safety.clamp)),
               (dashboard, "record_trial", watch.wrap("notes", dashboard.record_trial))]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    rows = []
    try:
        for mod, name, fn in patches:
            setattr(mod, name, fn)
        for k in range(reps + 1):  # the first is the enqueued baseline trial and warms up imports: not counted
            watch.times = {}
            t = time.perf_counter()
            st.optimize(objective, n_trials=1, catch=(TrialFailure,), gc_after_trial=False,
                        show_progress_bar=False)
            total = time.perf_counter() - t
            if k == 0:
                continue
            last = st.trials[-1]
            if last.state.name != "COMPLETE":
                raise SystemExit(f"measured trial {last.number} ended {last.state.name}: {last.user_attrs}")
            row = {piece: watch.times.get(piece, 0.0) for piece in PIECES if piece != "storage"}
            row["storage"] = total - sum(row.values())
            row["total"] = total
            rows.append(row)
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    return rows


def real_run(steps: int, seed: int, run_dir: Path) -> dict:
    """A real training run of the quick baseline; wall time, time to the child's start event, SPS."""
    cfg = config.resolve("quick", None, {"train": {"total_timesteps": steps, "seed": seed}})
    t0 = time.time()
    marks: dict = {}

    def on_event(event: dict) -> None:
        marks.setdefault(event.get("event"), time.time() - t0)

    res = runner.run_training(cfg, run_dir, on_event=on_event)
    s = res.summary
    return {"steps": s["agent_steps"], "status": s["status"], "wall_time_s": s["wall_time_s"],
            "to_start_event_s": marks.get("start"), "to_first_progress_s": marks.get("progress"),
            "sps": (s.get("metrics_extended") or {}).get("SPS"), "summary": s, "run_dir": str(run_dir)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def markdown(info: dict, settings: dict, parent: dict, startup: list[dict], trial_runs: list[dict]) -> str:
    runs = startup + trial_runs
    # Start-up: until the child reports its start (process, imports, configuration), measured
    # on every real run; what follows in a trial is environment, policy, training and summary.
    start = statistics.median(r["to_start_event_s"] for r in runs if r.get("to_start_event_s") is not None)
    trial_wall = statistics.median(r["wall_time_s"] for r in trial_runs)
    training = statistics.median(r["wall_time_s"] - (r.get("to_start_event_s") or 0.0) for r in trial_runs)
    one_batch = statistics.median(r["wall_time_s"] for r in startup)
    lines = ["# Overhead: drex-opt's own time per trial\n", header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; focus `{settings['focus']}` "
             f"({settings['timesteps']:,} steps per trial); {settings['reps']} measured trials per storage and size; "
             f"load average {settings['load_before']} before, {settings['load_after']} after\n",
             "All numbers are wall time on a shared 2-core machine and move with its load.\n",
             "## Parent side per trial (median ms)\n",
             "The study engine itself, with the training child replaced by a stand-in (see the script's docstring). "
             "`storage` is the rest of the trial: Optuna's ask and tell, the user attributes, the monitor.\n"]
    rows = []
    for key, r in parent.items():
        storage_kind, size = key.split(":")
        med = {p: statistics.median(row[p] for row in r) for p in (*PIECES, "total")}
        rows.append([storage_kind, size, *(ms(med[p]) for p in PIECES), f"**{ms(med['total'])}**"])
    lines += [md_table(["storage", "trials in storage", *(PIECE_LABELS[p] for p in PIECES), "total"], rows,
                       [False] + [True] * (len(PIECES) + 2)), ""]
    worst = max(statistics.median(row["total"] for row in r) for r in parent.values())
    lines += ["## Child process and training (real runs)\n",
              md_table(["run", "steps", "wall s", "to start event s", "to first progress s", "SPS"],
                       [[r["label"], f"{r['steps']:,}", f"{r['wall_time_s']:.1f}",
                         f"{r['to_start_event_s'] or 0:.1f}", f"{r['to_first_progress_s'] or 0:.1f}",
                         f"{r['sps'] or 0:,.0f}"] for r in startup + trial_runs]),
              "",
              "## Share of a trial\n",
              f"- child start-up (process start, imports and configuration, until the child reports its start; "
              f"median of all real runs): **{start:.1f} s**",
              "- a one-batch run end to end (start-up, environment and policy, one batch, teardown): "
              f"{one_batch:.1f} s",
              f"- a trial at the focus's budget: {trial_wall:.1f} s wall, {training:.1f} s of it after the start "
              "event (environment, training, summary)",
              f"- parent side, worst storage/size above: **{worst * 1000:.0f} ms** = {worst / trial_wall:.1%} of "
              "the trial's wall time",
              f"- drex-opt's own time per trial (parent side + child start-up): {worst + start:.1f} s = "
              f"**{(worst + start) / trial_wall:.0%}** of the trial's wall time. Nearly all of it is the child's "
              "start-up, the price of running each trial in its own process (crash, hang and NaN isolation); the "
              "parent side is small beside it.\n"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 measured trials per case, one real run of each kind")
    parser.add_argument("--seeds", type=int, nargs="+", help="sampler/training seeds, one real trial run each "
                        "(default: 1 quick, 1 2 full)")
    parser.add_argument("--render", type=Path, help="rewrite the .md of this results .json; measure nothing")
    parser.add_argument("--focus", default="fix_grip_activation", help="the space sampled (default: the search-"
                        "efficiency benchmark's focus, whose short budget makes overhead weigh most)")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([1] if args.quick else [1, 2])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text(encoding="utf-8"))
        write_results(args.render.stem, data, markdown(data["machine"], data["settings"], data["parent_per_trial_s"],
                                                       data["startup_runs"], data["trial_runs"]),
                      out=args.render.parent)
        return
    reps = 3 if args.quick else 10
    timesteps = spaces.load(args.focus).budget_for("quick").timesteps
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="drex-bench-overhead-") as tmp:
        work = Path(tmp)
        startup, trial_runs = [], []
        batch = config.load_baseline("quick")["train"]["batch_size"]
        for i, seed in enumerate(args.seeds if not args.quick else args.seeds[:1]):
            for label, steps, into in ((f"{batch:,} steps = one batch (start-up)", batch, startup),
                                       (f"{timesteps:,} steps (a {args.focus} trial)", timesteps, trial_runs)):
                r = real_run(steps, seed, work / f"real-{steps}-{i}")
                r["label"] = f"{label}, seed {seed}"
                into.append(r)
                print(f"{r['label']}: {r['status']} {r['wall_time_s']:.1f} s", flush=True)
        files, summary = Path(startup[-1]["run_dir"]), startup[-1]["summary"]
        parent = {}
        for storage_kind in STORAGES:
            for size in SIZES:
                rows = measure_parent(storage_kind, size, reps, args.focus, timesteps, args.seeds[0], work, files,
                                      summary)
                parent[f"{storage_kind}:{size}"] = rows
                median = statistics.median(r["total"] for r in rows)
                print(f"{storage_kind} with {size} trials: median {median * 1000:.0f} ms per trial", flush=True)
    for r in startup + trial_runs:
        r.pop("summary", None)
    settings = {"quick": args.quick, "seeds": args.seeds, "focus": args.focus, "timesteps": timesteps, "reps": reps,
                "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}
    info = describe()
    name = result_name("overhead", args.quick)
    payload = {"machine": info, "settings": settings, "parent_per_trial_s": parent, "startup_runs": startup,
               "trial_runs": trial_runs}
    write_results(name, payload, markdown(info, settings, parent, startup, trial_runs))
    print(f"wrote benchmarks/results/{name}.{{json,md}}")


if __name__ == "__main__":
    main()
