"""Warm trials: what a study spends outside PufferLib's training, before and after warm
trial workers.

Run from the repository root: .venv/bin/python -m benchmarks.warm_trials [--quick] [--rounds N] [--before REV]

Each round runs the same ``drex-opt study`` six ways, one after the other, each with
``--jobs 1`` and ``--jobs 2``:

- **before**: the code at ``--before`` (taken out of git into a temporary folder and run
  with this interpreter): every trial a fresh interpreter, and that revision's env and
  training path;
- **cold**: today's code with ``--no-fork`` (every trial a fresh interpreter that imports
  torch and PufferLib itself);
- **warm**: today's default (every trial a fork of a server that imported them once).

Trials are ``diagnostic_grip`` trials of 300k agent steps (the focus's own short budget),
the space's 12 trials, no early stopping, no seed repeats, fresh SQLite storage, the same
sampler seed for the six studies of a round. Each study waits for a quiet machine first.

- **inside training**: the sum over trials of PuffeRL's own clock (``uptime`` at the run's
  last report: from the trainer's creation to its last epoch), over the study's wall time
  times ``--jobs`` (the trial slots);
- **per-trial overhead**: for the trials after the first (steady state), a trial's wall
  time as the study records it (Optuna start to completion: sampling, the child's start,
  the run, the summary, the storage) minus its time inside training;
- **study start-up**: the command's wall time before its first trial started (imports,
  storage, the warm server's own imports, which overlap with opening the study).

Two ceilings say how far any work outside training could still move the ratios:

- **trials per hour with nothing outside training**: the warm ``--jobs 1`` study's trials
  by PuffeRL's clock alone (its time inside training), against the before study's wall time;
- **``--jobs 2`` over ``--jobs 1`` with nothing outside training**: the warm ``--jobs 1``
  study's trial configs replayed through ``runner.run_training``, each once alone with
  the threads a ``--jobs 1`` trial gets and once as two copies at once with the threads a
  ``--jobs 2`` trial gets; the ceiling is 2 x (its time alone) / (its time in a pair),
  summed over the configs by PuffeRL's clock (a perfectly packed ``--jobs 2`` study with no
  time outside training).

Wall-time numbers move with the machine's other load (load averages recorded); the
studies of a round run back to back so they see the same machine, and the ratios are taken
round by round.
Writes ``benchmarks/results/warm_trials[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna

from benchmarks.common import ROOT, load, md_table, result_name, spread_text, wait_for_quiet, write_results
from benchmarks.machine import describe, header_markdown
from drex_opt.rules.machine import usable_cpus
from drex_opt.run import runner

FOCUS = "diagnostic_grip"
BEFORE_REV = "557699e"  # cold trial children and the training path before the speed work
STARTS = ("before", "cold", "warm")



def _uptime(run_dir: str | None) -> float | None:
    """PuffeRL's own clock at the run's last report, from the run's summary."""
    if not run_dir or not (Path(run_dir) / "summary.json").is_file():
        return None
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    history = summary.get("history") or []
    uptime = (summary.get("metrics") or {}).get("uptime") or (history[-1].get("uptime") if history else None)
    return float(uptime) if isinstance(uptime, (int, float)) else None



def code_at(rev: str, where: Path) -> Path:
    """The repository's tree at ``rev`` (package, search spaces, baselines) under ``where``."""
    archive = where / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(where / "src", filter="data")
    archive.unlink()
    return where / "src"


def study_run(start: str, jobs: int, trials: int, timesteps: int, seed: int, work: Path,
              before_code: Path | None = None) -> dict:
    """One ``drex-opt study`` as a user runs it; its wall time and where it went."""
    tag = f"{start}-j{jobs}-s{seed}-{time.monotonic_ns()}"
    db = work / f"{tag}.db"
    cmd = [str(Path(sys.executable).with_name("drex-opt")), "study", "--focus", FOCUS, "--trials", str(trials),
           "--timesteps", str(timesteps), "--jobs", str(jobs), "--repeats", "0", "--no-early-stopping",
           "--storage", f"sqlite:///{db}", "--study-name", tag, "--seed", str(seed), "--json"]
    env = dict(os.environ)
    if start == "cold":
        cmd.append("--no-fork")
    elif start == "before":
        env["PYTHONPATH"] = str(before_code)  # that revision's package, search spaces and baselines
    before = load()
    started = time.time()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    done = optuna.load_study(study_name=tag, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    rows = []
    for t in sorted(done, key=lambda t: t.datetime_start):
        uptime = _uptime(t.user_attrs.get("run_dir"))
        trial_wall = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({"number": t.number, "state": t.state.name, "wall_s": trial_wall, "uptime_s": uptime,
                     "start_s": t.datetime_start.timestamp() - started, "sps": t.user_attrs.get("sps"),
                     "run_dir": t.user_attrs.get("run_dir")})
    inside = sum(r["uptime_s"] or 0 for r in rows)  # over all slots: up to jobs x wall
    steady = [r["wall_s"] - r["uptime_s"] for r in rows[1:] if r["uptime_s"] is not None]
    return {"start": start, "jobs": jobs, "seed": seed, "trials": len(rows), "wall_s": wall,
            "trials_per_hour": len(rows) / wall * 3600, "inside_training_s": inside,
            "inside_share": inside / (wall * jobs), "overhead_per_trial_s": statistics.median(steady) if steady else None,
            "first_trial_start_s": min(r["start_s"] for r in rows), "first_trial_overhead_s":
            rows[0]["wall_s"] - (rows[0]["uptime_s"] or 0), "trial_rows": rows,
            "load_before": before, "load_after": load(), "command": " ".join(cmd[1:])}


def _replay(config: dict, run_dir: Path, threads: int) -> float:
    """A trial's effective config trained again through the runner; PuffeRL's clock at its end."""
    summary = runner.run_training(config, run_dir, threads=threads).summary
    uptime = _uptime(str(run_dir))
    if summary.get("status") != "completed" or uptime is None:
        raise SystemExit(f"replaying a trial in {run_dir} ended {summary.get('status')}: {summary.get('error')}")
    return uptime


def jobs_ceiling(study: dict, work: Path) -> dict:
    """The warm ``--jobs 1`` study's trials replayed alone (``--jobs 1`` threads) and in pairs
    (``--jobs 2`` threads): how much faster two at a time trains them, nothing else counted."""
    cores = usable_cpus()
    alone_threads, pair_threads = max(1, cores), max(1, cores // 2)
    configs = [Path(r["run_dir"]) / "config.json" for r in study["trial_rows"]
               if r.get("run_dir") and (Path(r["run_dir"]) / "config.json").is_file()]
    rows = []
    for i, config in enumerate(configs):
        base = work / f"ceiling-{study['seed']}-{i}-{time.monotonic_ns()}"
        base.mkdir()
        cfg = json.loads(config.read_text())
        alone = _replay(cfg, base / "alone", alone_threads)
        with ThreadPoolExecutor(2) as pool:  # the two copies train at once
            pair = list(pool.map(lambda k: _replay(cfg, base / f"pair{k}", pair_threads), (0, 1)))
        rows.append({"config": str(config), "alone_s": alone, "pair_s": pair})
    alone = sum(r["alone_s"] for r in rows)
    pair = sum(statistics.mean(r["pair_s"]) for r in rows)
    return {"seed": study["seed"], "threads_alone": alone_threads, "threads_pair": pair_threads,
            "alone_s": alone, "pair_s": pair, "ceiling": 2 * alone / pair, "rows": rows}


def markdown(info: dict, settings: dict, runs: list[dict], ceilings: list[dict] | None = None) -> str:
    def pick(start: str, jobs: int) -> list[dict]:
        return [r for r in runs if r["start"] == start and r["jobs"] == jobs]

    def ratio(a: tuple[str, int], b: tuple[str, int]) -> str:
        """Median of the per-round ratios of trials per hour (the two studies saw the same machine)."""
        values = [x["trials_per_hour"] / y["trials_per_hour"] for x in pick(*a) for y in pick(*b)
                  if x["seed"] == y["seed"]]
        return spread_text(values, lambda v: f"{v:.2f}x") if values else "-"

    starts = [s for s in STARTS if any(r["start"] == s for r in runs)]
    labels = {"before": f"before ({settings.get('before')})", "cold": "cold (`--no-fork`)", "warm": "warm"}

    lines = ["# Warm trials: a study's time outside PufferLib's training\n", header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; {settings['rounds']} round(s); "
             f"sampler seeds {settings['seeds']}; {settings['trials']} `{FOCUS}` trials of "
             f"{settings['timesteps']:,} agent steps per study; wall time {settings['wall_time_min']:.1f} min\n",
             f"Before: the code at `{settings.get('before')}` (each trial a fresh Python; that revision's env and "
             "training path). Cold: today's `drex-opt study --no-fork` (each trial a fresh Python that imports "
             "torch and PufferLib). Warm: today's default (each trial a fork of a server that imported them "
             "once). Each round runs its studies back to back, each after waiting for a quiet machine; medians "
             "over rounds, spread [min–max]. Wall-time numbers on a shared 2-core machine (load averages "
             "recorded).\n",
             "A speed benchmark: no space, default or setting was tuned on these sampler seeds, so there is no "
             "design set to keep apart; the rival is what users ran before, a fresh Python per trial "
             "(`--no-fork`), on the same seeds and trials. What the trials learn is the search-efficiency "
             "benchmarks' subject, not this one's.\n"]
    rows = []
    for start in starts:
        for jobs in (1, 2):
            rs = pick(start, jobs)
            rows.append([labels[start], jobs,
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
    lines.append("Trials per hour, ratios of the studies of the same round, median [min–max]:\n")
    rrows = [[f"{labels[a]} against {labels[b]}, `--jobs {j}`", ratio((a, j), (b, j))]
             for a, b in (("warm", "before"), ("warm", "cold")) if a in starts and b in starts for j in (1, 2)]
    rrows += [[f"`--jobs 2` against `--jobs 1`, {labels[s]}", ratio((s, 2), (s, 1))] for s in starts]
    if "warm" in starts and "before" in starts:
        free = [b["wall_s"] / w["inside_training_s"] for w in pick("warm", 1) for b in pick("before", 1)
                if w["seed"] == b["seed"] and w["inside_training_s"]]
        rrows.append(["ceiling: warm with nothing outside training against before, `--jobs 1`",
                      spread_text(free, lambda v: f"{v:.2f}x")])
    if ceilings:
        rrows.append(["ceiling: `--jobs 2` against `--jobs 1`, both with nothing outside training",
                      spread_text([c["ceiling"] for c in ceilings], lambda v: f"{v:.2f}x")])
    lines += [md_table(["trials per hour", "ratio"], rrows), ""]
    if ceilings:
        c0 = ceilings[0]
        lines += ["## How far `--jobs 2` can go on this machine\n",
                  "The warm `--jobs 1` study's trial configs replayed through `runner.run_training` (a fresh training process each): each "
                  f"once alone with {c0['threads_alone']} torch thread(s) (what a `--jobs 1` trial gets) and once "
                  f"as two copies at once with {c0['threads_pair']} each (what a `--jobs 2` trial gets). Seconds "
                  "by PuffeRL's clock, summed over the study's trials; the ceiling is 2 x alone / pair: a "
                  "`--jobs 2` study with perfectly packed slots and no time outside training.\n",
                  md_table(["round", "trials", "alone s", "in a pair s (mean of the two)", "ceiling"],
                           [[c["seed"], len(c["rows"]), f"{c['alone_s']:.1f}", f"{c['pair_s']:.1f}",
                             f"{c['ceiling']:.2f}x"] for c in ceilings]), ""]
    if settings.get("notes"):
        lines += ["## Notes\n", settings["notes"], ""]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_trials", description=__doc__.split("\n")[0])
    parser.add_argument("--render", type=Path, help="rewrite the markdown of a stored result JSON (no runs)")
    parser.add_argument("--quick", action="store_true", help="one round of 3 trials")
    parser.add_argument("--rounds", type=int, help="rounds of the six studies (default: 1 quick, 3 full)")
    parser.add_argument("--trials", type=int, help="trials per study (default: 3 quick, 12 full: the space's budget)")
    parser.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' code")
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS))
    parser.add_argument("--max-load", type=float, default=0.7,
                        help="before each study, wait until the 1-minute load average is below this")
    parser.add_argument("--max-wait", type=float, default=60.0, help="longest wait for that, seconds")
    parser.add_argument("--notes", default="", help="markdown appended to the report")
    parser.add_argument("--timesteps", type=int, default=300_000, help="agent steps per trial")
    parser.add_argument("--no-ceiling", action="store_true", help="skip replaying the trials for the --jobs 2 ceiling")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.trials = args.trials or (3 if args.quick else 12)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        payload = json.loads(args.render.read_text())
        for run in payload["runs"]:
            run.setdefault("start", "warm" if run.pop("warm", False) else "cold")  # results before "before"
            run["inside_share"] = run["inside_training_s"] / (run["wall_s"] * run["jobs"])
        args.render.with_suffix(".md").write_text(markdown(payload["info"], payload["settings"], payload["runs"],
                                                           payload.get("ceilings")))
        args.render.write_text(json.dumps(payload, indent=2) + "\n")
        return
    started = time.time()
    seeds = list(range(1, args.rounds + 1))
    runs, ceilings = [], []
    with tempfile.TemporaryDirectory(prefix="drex-warm-") as tmp:
        before_code = code_at(args.before, Path(tmp)) if "before" in args.starts else None
        for seed in seeds:
            for jobs in (1, 2):
                for start in args.starts:
                    waited = wait_for_quiet(args.max_load, args.max_wait)
                    run = study_run(start, jobs, args.trials, args.timesteps, seed, Path(tmp), before_code)
                    run["waited_s"] = round(waited, 1)
                    print(f"round {seed}: {start} --jobs {jobs}: {run['wall_s']:.1f} s, "
                          f"{run['inside_share']:.0%} inside training, overhead/trial "
                          f"{run['overhead_per_trial_s'] or 0:.2f} s", flush=True)
                    runs.append(run)
                    if start == "warm" and jobs == 1 and not args.no_ceiling:
                        wait_for_quiet(args.max_load, args.max_wait)
                        ceilings.append(jobs_ceiling(run, Path(tmp)))
                        print(f"round {seed}: --jobs 2 ceiling {ceilings[-1]['ceiling']:.2f}x", flush=True)
    settings = {"quick": args.quick, "rounds": args.rounds, "seeds": seeds, "trials": args.trials,
                "timesteps": args.timesteps, "wall_time_min": (time.time() - started) / 60,
                "before": args.before, "notes": args.notes}
    info = describe()
    payload = {"info": info, "settings": settings, "runs": runs, "ceilings": ceilings}
    for path in write_results(result_name("warm_trials", args.quick), payload,
                              markdown(info, settings, runs, ceilings)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
