"""Warm trials: what a study spends outside PufferLib's training, cold against warm start.

Run from the repository root: .venv/bin/python -m benchmarks.warm_trials [--quick] [--rounds N]

Each round runs the same ``drex-opt study`` four ways, one after the other: ``--no-fork``
(every trial a fresh interpreter: imports torch and PufferLib itself) and the default warm
start (every trial a fork of a server that imported them once), each with ``--jobs 1`` and
``--jobs 2``. Trials are ``diagnostic_grip`` trials of 300k agent steps (the focus's own
short budget), no early stopping, fresh SQLite storage.

- **inside training**: the sum over trials of PuffeRL's own clock (``uptime`` at the run's
  last report: from the trainer's creation to its last epoch), over the study's wall time
  times ``--jobs`` (the trial slots);
- **per-trial overhead**: for the trials after the first (steady state), a trial's wall
  time as the study records it (Optuna start to completion: sampling, the child's start,
  the run, the summary, the storage) minus its time inside training;
- **study start-up**: the command's wall time before its first trial started (imports,
  storage, the warm server's own imports, which overlap with opening the study).

Wall-time numbers move with the machine's other load (load averages recorded); the cold
and warm rows of a round run back to back so they see the same machine.
Writes ``benchmarks/results/warm_trials[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from benchmarks.common import md_table, result_name, spread_text, write_results
from benchmarks.machine import describe, header_markdown

FOCUS = "diagnostic_grip"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _uptime(run_dir: str | None) -> float | None:
    """PuffeRL's own clock at the run's last report, from the run's summary."""
    if not run_dir or not (Path(run_dir) / "summary.json").is_file():
        return None
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    history = summary.get("history") or []
    uptime = (summary.get("metrics") or {}).get("uptime") or (history[-1].get("uptime") if history else None)
    return float(uptime) if isinstance(uptime, (int, float)) else None


def study_run(warm: bool, jobs: int, trials: int, timesteps: int, seed: int, work: Path) -> dict:
    """One ``drex-opt study`` as a user runs it; its wall time and where it went."""
    tag = f"{'warm' if warm else 'cold'}-j{jobs}-s{seed}-{time.monotonic_ns()}"
    db = work / f"{tag}.db"
    cmd = [str(Path(sys.executable).with_name("drex-opt")), "study", "--focus", FOCUS, "--trials", str(trials),
           "--timesteps", str(timesteps), "--jobs", str(jobs), "--repeats", "0", "--no-early-stopping",
           "--storage", f"sqlite:///{db}", "--study-name", tag, "--seed", str(seed), "--json"]
    if not warm:
        cmd.append("--no-fork")
    before = load()
    started = time.time()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    done = optuna.load_study(study_name=tag, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    rows = []
    for t in sorted(done, key=lambda t: t.datetime_start):
        uptime = _uptime(t.user_attrs.get("run_dir"))
        trial_wall = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({"number": t.number, "state": t.state.name, "wall_s": trial_wall, "uptime_s": uptime,
                     "start_s": t.datetime_start.timestamp() - started, "sps": t.user_attrs.get("sps")})
    inside = sum(r["uptime_s"] or 0 for r in rows)  # over all slots: up to jobs x wall
    steady = [r["wall_s"] - r["uptime_s"] for r in rows[1:] if r["uptime_s"] is not None]
    return {"warm": warm, "jobs": jobs, "seed": seed, "trials": len(rows), "wall_s": wall,
            "trials_per_hour": len(rows) / wall * 3600, "inside_training_s": inside,
            "inside_share": inside / (wall * jobs), "overhead_per_trial_s": statistics.median(steady) if steady else None,
            "first_trial_start_s": min(r["start_s"] for r in rows), "first_trial_overhead_s":
            rows[0]["wall_s"] - (rows[0]["uptime_s"] or 0), "trial_rows": rows,
            "load_before": before, "load_after": load(), "command": " ".join(cmd[1:])}


def markdown(info: dict, settings: dict, runs: list[dict]) -> str:
    def pick(warm: bool, jobs: int) -> list[dict]:
        return [r for r in runs if r["warm"] == warm and r["jobs"] == jobs]

    def tph(warm: bool, jobs: int) -> float:
        return statistics.median(r["trials_per_hour"] for r in pick(warm, jobs))

    lines = ["# Warm trials: a study's time outside PufferLib's training\n", header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; {settings['rounds']} round(s); "
             f"sampler seeds {settings['seeds']}; {settings['trials']} `{FOCUS}` trials of "
             f"{settings['timesteps']:,} agent steps per study; wall time {settings['wall_time_min']:.1f} min\n",
             "Cold: `drex-opt study --no-fork` (each trial a fresh Python that imports torch and PufferLib). "
             "Warm: the default (each trial a fork of a server that imported them once). Each round runs the "
             "four studies back to back; medians over rounds, spread [min–max]. Wall-time numbers on a shared "
             "2-core machine (load averages recorded).\n",
             "A speed benchmark: no space, default or setting was tuned on these sampler seeds, so there is no "
             "design set to keep apart; the rival is what users ran before, a fresh Python per trial "
             "(`--no-fork`), on the same seeds and trials. What the trials learn is the search-efficiency "
             "benchmarks' subject, not this one's.\n"]
    rows = []
    for warm in (False, True):
        for jobs in (1, 2):
            rs = pick(warm, jobs)
            rows.append(["warm" if warm else "cold", jobs,
                         spread_text([r["trials_per_hour"] for r in rs], lambda v: f"{v:.0f}"),
                         spread_text([r["wall_s"] for r in rs], lambda v: f"{v:.1f}"),
                         spread_text([r["inside_share"] for r in rs], lambda v: f"{v:.0%}"),
                         spread_text([r["overhead_per_trial_s"] or 0 for r in rs], lambda v: f"{v:.2f}"),
                         spread_text([r["first_trial_start_s"] for r in rs], lambda v: f"{v:.1f}"),
                         spread_text([r["first_trial_overhead_s"] for r in rs], lambda v: f"{v:.1f}"),
                         ", ".join(str(r["load_before"][0]) for r in rs)])
    lines += [md_table(["start", "jobs", "trials / hour", "study wall s", "inside training",
                        "overhead per trial s (steady)", "study start-up s", "first trial overhead s",
                        "load before"], rows),
              "\n`inside training`: the trials' time by PuffeRL's own clock over the study's wall time x jobs. "
              "`overhead per trial`: a trial's wall time minus its time inside training, trials after the first. "
              "`study start-up`: from the command's start to its first trial's start. `first trial overhead`: "
              "the first trial's wall time outside training (a warm study's server imports once, here).\n"]
    lines.append(f"- warm against cold, `--jobs 1`: **{tph(True, 1) / tph(False, 1):.2f}x** the trials per hour")
    lines.append(f"- warm against cold, `--jobs 2`: **{tph(True, 2) / tph(False, 2):.2f}x**")
    lines.append(f"- `--jobs 2` against `--jobs 1`, warm: **{tph(True, 2) / tph(True, 1):.2f}x**; "
                 f"cold: {tph(False, 2) / tph(False, 1):.2f}x\n")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_trials", description=__doc__.split("\n")[0])
    parser.add_argument("--render", type=Path, help="rewrite the markdown of a stored result JSON (no runs)")
    parser.add_argument("--quick", action="store_true", help="one round of 3 trials")
    parser.add_argument("--rounds", type=int, help="rounds of the four studies (default: 1 quick, 3 full)")
    parser.add_argument("--trials", type=int, help="trials per study (default: 3 quick, 8 full)")
    parser.add_argument("--timesteps", type=int, default=300_000, help="agent steps per trial")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.trials = args.trials or (3 if args.quick else 8)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        payload = json.loads(args.render.read_text())
        for run in payload["runs"]:
            run["inside_share"] = run["inside_training_s"] / (run["wall_s"] * run["jobs"])
        args.render.with_suffix(".md").write_text(markdown(payload["info"], payload["settings"], payload["runs"]))
        args.render.write_text(json.dumps(payload, indent=2) + "\n")
        return
    started = time.time()
    seeds = list(range(1, args.rounds + 1))
    runs = []
    with tempfile.TemporaryDirectory(prefix="drex-warm-") as tmp:
        for seed in seeds:
            for jobs in (1, 2):
                for warm in (False, True):
                    run = study_run(warm, jobs, args.trials, args.timesteps, seed, Path(tmp))
                    print(f"round {seed}: {'warm' if warm else 'cold'} --jobs {jobs}: {run['wall_s']:.1f} s, "
                          f"{run['inside_share']:.0%} inside training, overhead/trial "
                          f"{run['overhead_per_trial_s'] or 0:.2f} s", flush=True)
                    runs.append(run)
    settings = {"quick": args.quick, "rounds": args.rounds, "seeds": seeds, "trials": args.trials,
                "timesteps": args.timesteps, "wall_time_min": (time.time() - started) / 60}
    info = describe()
    payload = {"info": info, "settings": settings, "runs": runs}
    for path in write_results(result_name("warm_trials", args.quick), payload, markdown(info, settings, runs)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
