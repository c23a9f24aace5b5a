"""Throughput: end-to-end training SPS of the quick baseline, and trials per hour of
``drex-opt study`` with ``--jobs 1`` against ``--jobs 2`` on this machine.

Run from the repository root: .venv/bin/python -m benchmarks.throughput [--quick] [--seeds 1 2]

Everything here is wall-time based and moves with the machine's other load (recorded as
the load average around each measurement). Env-only steps/s against the number of drones
is ``benchmarks.env_throughput``. Writes ``benchmarks/results/throughput[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from benchmarks.common import RESULTS, load, md_table, result_name, spread_text, write_results
from benchmarks.machine import describe, header_markdown
from drex_opt.rules import config
from drex_opt.run import runner

# A space without topology keys: every trial steps the same number of agents, so the two
# job counts train comparable work (its start-up trials are seeded random samples).
FOCUS = "optimize_performance"



def baseline_sps(seed: int, run_dir: Path) -> dict:
    """One real run of the quick baseline at its own budget."""
    cfg = config.resolve("quick", None, {"train": {"seed": seed}})
    before = load()
    s = runner.run_training(cfg, run_dir).summary
    return {"seed": seed, "status": s["status"], "agent_steps": s["agent_steps"], "wall_time_s": s["wall_time_s"],
            "sps_puffer": (s.get("metrics_extended") or {}).get("SPS"),
            "sps_end_to_end": s["agent_steps"] / s["wall_time_s"] if s["wall_time_s"] else None,
            "load_before": before, "load_after": load()}


def study_run(jobs: int, trials: int, timesteps: int, seed: int, work: Path) -> dict:
    """``drex-opt study`` as a user runs it (a fresh SQLite study, no early stopping or seed
    repeats, so both job counts do the same work); wall time of the whole command."""
    db = work / f"tp-j{jobs}-s{seed}.db"
    name = f"throughput-j{jobs}-s{seed}"
    cmd = [str(Path(sys.executable).with_name("drex-opt")), "study", "--focus", FOCUS, "--trials", str(trials),
           "--timesteps", str(timesteps), "--jobs", str(jobs), "--repeats", "0", "--no-early-stopping",
           "--storage", f"sqlite:///{db}", "--study-name", name, "--seed", str(seed), "--json"]
    before = load()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command and every training process it waited for: less sensitive to
    # the machine's other load than wall time, and wall x cores against it shows idle cores.
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    st = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    steps = sum(tr.user_attrs.get("agent_steps") or 0 for tr in st.get_trials(deepcopy=False))
    sps = [tr.user_attrs["sps"] for tr in st.get_trials(deepcopy=False) if tr.user_attrs.get("sps")]
    trial_walls = [tr.user_attrs["wall_time_s"] for tr in st.get_trials(deepcopy=False)
                   if tr.user_attrs.get("wall_time_s")]
    return {"jobs": jobs, "seed": seed, "trials": result["trials_run"], "states": result["states"],
            "wall_time_s": wall, "trials_per_hour": result["trials_run"] / wall * 3600, "agent_steps": steps,
            "cpu_s": cpu, "cpu_share": cpu / (wall * (os.cpu_count() or 1)),
            "steps_per_s": steps / wall, "trial_sps_median": statistics.median(sps) if sps else None,
            "trial_wall_median_s": statistics.median(trial_walls) if trial_walls else None,
            "load_before": before, "load_after": load(), "command": " ".join(cmd[1:])}


def markdown(info: dict, settings: dict, sps_runs: list[dict], studies: list[dict]) -> str:
    lines = ["# Throughput: training SPS and trials per hour\n", header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; seeds {settings['seeds']}; "
             f"wall time {settings['wall_time_min']:.1f} min\n",
             "**Every number here is wall-time based** on a shared 2-core machine: it moves with the other load "
             "(load averages recorded). Env-only steps/s against the number of drones: "
             "[`benchmarks/env_throughput.py`](../env_throughput.py).\n",
             "## Training SPS of the quick baseline\n",
             "`PufferLib SPS` is the trainer's own steps/s at the end of the run; `end to end` is agent steps over "
             "the run's whole wall time (process start-up, imports and teardown included).\n",
             md_table(["seed", "status", "agent steps", "wall s", "PufferLib SPS", "end-to-end SPS", "load before"],
                      [[r["seed"], r["status"], f"{r['agent_steps']:,}", f"{r['wall_time_s']:.1f}",
                        f"{r['sps_puffer'] or 0:,.0f}", f"{r['sps_end_to_end'] or 0:,.0f}",
                        r["load_before"][0]] for r in sps_runs]),
             "",
             "## `drex-opt study` with --jobs 1 and --jobs 2\n",
             f"`{FOCUS}` space, {settings['trials']} trials of {settings['timesteps']:,} agent steps, early stopping "
             "and seed repeats off so both do the same work, fresh SQLite storage; wall time of the whole command "
             "(study set-up included).\n"]
    rows = []
    for jobs in (1, 2):
        rs = [r for r in studies if r["jobs"] == jobs]
        rows.append([jobs, spread_text([r["trials_per_hour"] for r in rs], lambda v: f"{v:.0f}"),
                     spread_text([r["steps_per_s"] for r in rs], lambda v: f"{v:,.0f}"),
                     spread_text([r["wall_time_s"] for r in rs], lambda v: f"{v:.0f}"),
                     spread_text([r["trial_wall_median_s"] or 0 for r in rs], lambda v: f"{v:.1f}"),
                     spread_text([r["trial_sps_median"] or 0 for r in rs], lambda v: f"{v:,.0f}"),
                     spread_text([r["cpu_s"] / max(r["trials"], 1) for r in rs], lambda v: f"{v:.1f}"),
                     spread_text([r["cpu_share"] for r in rs], lambda v: f"{v:.0%}"),
                     ", ".join(str(r["load_before"][0]) for r in rs)])
    lines += [md_table(["jobs", "trials / hour", "agent steps / s", "study wall s", "trial wall s",
                        "SPS per trial", "CPU s per trial", "cores used", "load before"], rows),
              "\n`CPU s per trial`: CPU time of the study command and its training processes per trial; "
              "`cores used`: that CPU time over wall time x cores.\n"]
    one = statistics.median(r["trials_per_hour"] for r in studies if r["jobs"] == 1)
    two = statistics.median(r["trials_per_hour"] for r in studies if r["jobs"] == 2)
    lines += [f"`--jobs 2` runs **{two / one:.2f}x** the trials per hour of `--jobs 1` on this machine "
              f"({os.cpu_count()} cores; each trial gets {max(1, (os.cpu_count() or 1) // 2)} torch thread(s) "
              "with --jobs 2). Median over seeds; spread [min–max].\n"]
    if two / one > (os.cpu_count() or 1) * 1.1 or two / one < 0.5:
        # Two jobs on N cores cannot do more than N times the work: the load moved in between.
        lines.append("That ratio is outside what the cores allow: the machine's other load changed between the "
                     "two measurements, so it says more about that load than about `--jobs`.\n")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 4 short trials per study")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 1 quick, 1 2 full)")
    parser.add_argument("--trials", type=int, help="trials per study (default: 4 quick, 8 full)")
    parser.add_argument("--timesteps", type=int, help="agent steps per trial (default: 300k quick, 1M full)")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([1] if args.quick else [1, 2])
    args.trials = args.trials or (4 if args.quick else 8)
    args.timesteps = args.timesteps or (300_000 if args.quick else 1_000_000)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    sps_runs, studies = [], []
    with tempfile.TemporaryDirectory(prefix="drex-bench-tp-") as tmp:
        work = Path(tmp)
        for seed in args.seeds:
            sps_runs.append(baseline_sps(seed, work / f"sps-{seed}"))
            print(f"quick baseline seed {seed}: {sps_runs[-1]['sps_puffer'] or 0:,.0f} SPS", flush=True)
        for i, seed in enumerate(args.seeds):
            # Alternate the order so a drift in the machine's load does not favour one job count.
            for jobs in ((1, 2) if i % 2 == 0 else (2, 1)):
                studies.append(study_run(jobs, args.trials, args.timesteps, seed, work))
                r = studies[-1]
                print(f"study --jobs {jobs} seed {seed}: {r['trials']} trials in {r['wall_time_s']:.0f} s = "
                      f"{r['trials_per_hour']:.0f} trials/h", flush=True)
    settings = {"quick": args.quick, "seeds": args.seeds, "trials": args.trials, "timesteps": args.timesteps,
                "focus": FOCUS, "wall_time_min": (time.time() - started) / 60}
    info = describe()
    name = result_name("throughput", args.quick)
    write_results(name, {"machine": info, "settings": settings, "baseline_sps": sps_runs, "studies": studies},
                  markdown(info, settings, sps_runs, studies))
    print(f"wrote {RESULTS / name}.{{json,md}}")


if __name__ == "__main__":
    main()
