"""A PufferLib C env through drex-opt against a plain PuffeRL script, same config and policy.

Run from the repository root, with the C drone built (``DREX_PUFFER_ENVS=drone bash scripts/setup.sh``):
    .venv/bin/python -m benchmarks.puffer_env_speed [--quick] [--rounds 2] [--steps 1048576]

Variants, each in its own fresh process, interleaved round by round (only ratios measured
side by side mean anything on a shared machine):

- ``plain``: what a PufferLib user runs, ``puffer train puffer_drone`` without its
  dashboard: ``pufferl.load_config('puffer_drone')`` (PufferLib's ``default.ini`` and
  ``drone.ini``), ``load_env``, ``load_policy`` (drone.ini's ``Policy`` + ``Recurrent``), a
  ``PuffeRL`` evaluate/train loop. Three changes, all needed for a CPU run here that
  drex-opt can equal: ``train.device = cpu``; ``vec.num_workers = 2`` (``auto`` resolves to
  8 here, which PufferLib itself refuses on 2 cores); and the brief's batch rule (minibatch
  = batch = agents × horizon) instead of drone.ini's 32,768-step minibatches, which the
  owner's safety rules do not allow.
- ``drex``: ``drex-opt train --env puffer_drone`` (its training child, exactly what the CLI
  runs) with the drone.ini's values for every brief key: its train scalars, muon, bptt 64,
  and its topology, 8 vec sub-envs of 1,024 drones (env.num_envs 64 × env.num_drones 16,
  mapped onto the C env's own ``num_envs``), vec.num_workers 2 (PufferLib's ``auto`` here).

Measured per run: agent steps over the wall time of the training loop (``loop SPS``) and
PuffeRL's own ``SPS`` reports (median after the first). Writes
``benchmarks/results/puffer_env_speed[_quick].{json,md}``.
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

from benchmarks.common import ROOT, md_table, result_name, write_results
from benchmarks.machine import describe, header_markdown

MARK = "@speed "
VARIANTS = ("plain", "drex")
ENV = "puffer_drone"
# drone.ini's topology: [vec] num_envs = 8 sub-envs of [env] num_envs = 1024 drones.
SUB_ENVS, DRONES_PER_SUB_ENV = 8, 1024
BRIEF_TRAIN_KEYS = ("learning_rate", "ent_coef", "gamma", "gae_lambda", "update_epochs", "clip_coef", "vf_coef",
                    "vf_clip_coef", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_eps", "bptt_horizon",
                    "optimizer", "anneal_lr")


def ini_args() -> dict:
    """PufferLib's own config for the env, as ``puffer train`` reads it (no command-line args)."""
    import pufferlib.pufferl as pufferl

    saved, sys.argv = sys.argv, ["puffer"]
    try:
        return pufferl.load_config(ENV)
    finally:
        sys.argv = saved


def drex_override(args: dict, steps: int) -> dict:
    """The run config that trains the env as its .ini does, within the brief's keys and rules."""
    # PufferLib parses the .ini's lower-case "true" as a string; the brief's keys are typed.
    train = {k: {"true": True, "false": False}.get(v, v) if isinstance(v, str) else v
             for k, v in ((k, args["train"][k]) for k in BRIEF_TRAIN_KEYS)}
    agents = SUB_ENVS * DRONES_PER_SUB_ENV
    batch = agents * train["bptt_horizon"]
    train.update(device="cpu", seed=1, total_timesteps=steps, batch_size=batch, minibatch_size=batch,
                 max_minibatch_size=batch)
    return {"train": train, "env": {"num_envs": DRONES_PER_SUB_ENV // 16, "num_drones": 16},
            "vec": {"num_envs": SUB_ENVS, "num_workers": 2}}


def run_plain(steps: int) -> dict:
    import pufferlib.pufferl as pufferl

    class QuietPuffeRL(pufferl.PuffeRL):
        def print_dashboard(self, *args, **kwargs):
            return None

    args = ini_args()
    args["train"].update(device="cpu", seed=1, total_timesteps=steps)
    # default.ini's num_workers "auto" resolves to 8 here and PufferLib refuses more workers
    # than cores: a user on this machine passes --vec.num-workers 2, as drex-opt's run does.
    args["vec"]["num_workers"] = 2
    with tempfile.TemporaryDirectory() as tmp:
        args["train"]["data_dir"] = tmp
        vecenv = pufferl.load_env(ENV, args)
        policy = pufferl.load_policy(args, vecenv)
        batch = vecenv.num_agents * args["train"]["bptt_horizon"]
        args["train"].update(batch_size=batch, minibatch_size=batch, max_minibatch_size=batch)
        trainer = QuietPuffeRL(dict(**args["train"], env=ENV), vecenv, policy)
        logs_seen = []
        start = time.perf_counter()
        while trainer.global_step < steps:
            trainer.evaluate()
            logs = trainer.train()
            if logs:
                logs_seen.append(dict(logs))
        wall = time.perf_counter() - start
        done = trainer.global_step
        trainer.close()
    sps = [float(x["SPS"]) for x in logs_seen[1:] if x.get("SPS")]
    return {"variant": "plain", "agents": vecenv.num_agents, "agent_steps": int(done), "loop_s": wall,
            "loop_sps": done / wall, "puffer_sps": statistics.median(sps) if sps else None,
            "policy": type(policy).__name__}


def run_drex(steps: int) -> dict:
    """``drex-opt train`` itself; the loop's wall time from its start and final events."""
    override = drex_override(ini_args(), steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "override.json"
        path.write_text(json.dumps(override))
        run_dir = Path(tmp) / "run"
        cli = str(Path(sys.executable).parent / "drex-opt")
        proc = subprocess.run([cli, "train", "--env", ENV, "--override", str(path), "--run-dir", str(run_dir),
                               "--json"], capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise SystemExit(f"drex-opt train failed: {proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout)
        events = [json.loads(line[6:]) for line in (run_dir / "train.log").read_text().splitlines()
                  if line.startswith("@drex ")]
    start = next(e for e in events if e.get("event") == "start")
    progress = [e for e in events if e.get("event") == "progress"]
    sps = [float(e["SPS"]) for e in progress[1:] if e.get("SPS")]
    final = next(e for e in events if e.get("event") == "final")
    loop_s = float(final.get("uptime") or summary["wall_time_s"])
    done = int(summary["agent_steps"])
    return {"variant": "drex", "agents": start.get("agents"), "agent_steps": done, "loop_s": loop_s,
            "loop_sps": done / loop_s, "puffer_sps": statistics.median(sps) if sps else None,
            "notes": summary.get("notes"), "status": summary["status"]}


def child(variant: str, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:  # PufferLib's import writes a resources link here
        proc = subprocess.run([sys.executable, "-m", "benchmarks.puffer_env_speed", "--one", variant,
                               "--steps", str(steps)], cwd=tmp, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise SystemExit(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def render(info: dict, payload: dict) -> str:
    runs = payload["runs"]
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    med = {v: {k: statistics.median(r[k] for r in rs if r.get(k)) for k in ("loop_sps", "puffer_sps")}
           for v, rs in by.items()}
    rows = []
    for v in VARIANTS:
        per_round = [d["loop_sps"] / p["loop_sps"] for p, d in zip(by["plain"], by[v])]
        rows.append([{"plain": "plain PuffeRL script (puffer train, CPU)", "drex": "drex-opt train"}[v],
                     f"{by[v][0]['agents']:,}", f"{med[v]['loop_sps']:,.0f}",
                     f"{med[v]['loop_sps'] / med['plain']['loop_sps']:.2f}x",
                     f"{min(per_round):.2f}–{max(per_round):.2f}x",
                     f"{med[v]['puffer_sps']:,.0f}"])
    s = payload["settings"]
    lines = [f"# PufferLib's C `drone` through drex-opt against a plain PuffeRL script", "",
             header_markdown(info),
             f"- {s['rounds']} rounds, variants interleaved, each run in a fresh process; {s['steps']:,} agent steps "
             "per run; train seed 1", "",
             "Both train drone.ini's configuration: its policy (`Policy` + `Recurrent` LSTM), its train scalars "
             "and optimiser, 8 sub-envs × 1,024 drones, 2 workers (Multiprocessing), bptt 64, on the CPU, with "
             "the brief's batch rule (minibatch = batch = agents × horizon) in both. Wall-time based on a shared "
             "2-core machine: read the ratios.", "",
             md_table(["variant", "agents", "loop SPS", "vs plain", "per round", "PuffeRL SPS"], rows,
                      [False, True, True, True, True, True]), "",
             "`loop SPS` (agent steps over the training loop's wall time, median over rounds; `per round`: the "
             "ratio within each round) is the measure. `PuffeRL SPS` is PuffeRL's own counter, sampled at "
             "different moments by the two (drex-opt's progress events after every epoch, the plain loop's "
             "returned logs), so it is shown, not compared.", "",
             "drex-opt's notes on its run: " + "; ".join(by["drex"][0].get("notes") or []), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of two batches")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2 * SUB_ENVS * DRONES_PER_SUB_ENV * 64)
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import warnings

        warnings.filterwarnings("ignore")
        result = run_plain(args.steps) if args.one == "plain" else run_drex(args.steps)
        print(MARK + json.dumps(result), flush=True)
        return
    rounds = 1 if args.quick else args.rounds
    info = describe()
    runs = []
    started = time.time()
    for _ in range(rounds):
        for variant in VARIANTS:
            runs.append(child(variant, args.steps))
            print(json.dumps({k: runs[-1][k] for k in ("variant", "agents", "loop_sps", "puffer_sps")}), flush=True)
    payload = {"settings": {"rounds": rounds, "steps": args.steps, "wall_s": round(time.time() - started)},
               "runs": runs}
    name = result_name("puffer_env_speed", args.quick)
    text = render(info, payload)
    write_results(name, {"info": info, **payload}, text)
    print(text)


if __name__ == "__main__":
    main()
