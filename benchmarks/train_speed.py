"""Training speed: drex-opt's training path against a minimal PuffeRL loop on a point-mass env.

Run from the repository root: .venv/bin/python -m benchmarks.train_speed [--quick] [--rounds 3] [--steps 1500000]

Variants, each trained in its own fresh process, interleaved round by round (the machine
is shared: only ratios measured side by side mean anything):

- ``pointmass``: a minimal NumPy point-mass ``pufferlib.PufferEnv`` (512 agents in one
  env, Serial backend) trained by a plain ``PuffeRL`` evaluate/train loop.
- ``cdrone``: the same minimal loop on PufferLib's C ``drone`` env (``pufferlib.ocean.drone``,
  512 agents in one env, built by ``DREX_PUFFER_ENVS=drone bash scripts/setup.sh``): what
  PufferLib's own loop reaches here on a compiled drone env. Skipped when it is not built.
- ``drex``: drex-opt's own training path on the quick baseline (``drex_opt.run.train``'s
  ``_seed_everything`` + ``_make_trainer`` (which calls ``build``) + ``_train``, exactly what
  the ``drex-opt train`` child runs).
- ``drex_before``: the same path with ``drone_pp.py`` and ``train.py`` as they were at
  ``--before`` (written out of git to a temporary package), so before and after run side
  by side.
- ``drex_mp2``: the current path with ``vec.num_workers 2`` (PufferLib's Multiprocessing
  backend: env stepping overlaps the learner), to show what that would give on this machine.

All variants use the same flat train config (the quick baseline's, with PufferLib's
defaults beneath it: 512 agents, bptt 32, MLP hidden 128, adam, seed 1) and a PuffeRL
whose full-screen dashboard is switched off, as drex-opt's child does. The point-mass env
has drone_pp's observation and action sizes (27 floats in, 3 velocity commands out; only 9
observation columns are non-zero).

Measured per run: agent steps over the wall time of the training loop (``loop SPS``),
PuffeRL's own logged ``SPS`` (median of its reports after the first), and its
``performance/*`` timers (seconds accumulated on every 5th epoch; shown as shares of
``eval`` + ``train``). Then the env alone (no policy) on one core: agent-steps/s of the
old and the new env at 1024 drones and in the quick baseline's 512-agent layout.

Writes ``benchmarks/results/train_speed[_quick].{json,md}``.
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

from benchmarks.common import RESULTS, ROOT, load, md_table, result_name, wait_for_quiet, write_results
from benchmarks.machine import describe, header_markdown

BEFORE_REV = "557699e"
MARK = "@speed "
VARIANTS = ("pointmass", "cdrone", "drex_before", "drex", "drex_mp2")
REFERENCES = ("pointmass", "cdrone")  # the minimal loops drex-opt is measured against
TIMERS = ("env", "eval_forward", "eval_copy", "eval_misc", "train_forward", "learn", "train_misc")




# ------------------------------------------------------------ the point-mass env
def point_mass_class():
    import gymnasium
    import numpy as np
    import pufferlib

    class PointMass(pufferlib.PufferEnv):
        """Agents accelerate toward a goal: velocity integrates the action, reward -distance."""

        def __init__(self, num_agents=512, horizon=512, seed=0, buf=None):
            self.num_agents = num_agents
            self.horizon = horizon
            self.single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (27,), np.float32)
            self.single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
            super().__init__(buf)
            self.rng = np.random.default_rng(seed)
            self.pos = np.zeros((num_agents, 3), np.float32)
            self.vel = np.zeros((num_agents, 3), np.float32)
            self.goal = np.zeros((num_agents, 3), np.float32)
            self.tick = 0

        def reset(self, seed=None):
            if seed is not None:
                self.rng = np.random.default_rng(seed)
            self.pos[:] = self.rng.uniform(-1, 1, self.pos.shape)
            self.goal[:] = self.rng.uniform(-1, 1, self.goal.shape)
            self.vel[:] = 0
            self.tick = 0
            self._observe()
            return self.observations, []

        def _observe(self):
            self.observations[:, 0:3] = self.pos
            self.observations[:, 3:6] = self.vel
            self.observations[:, 6:9] = self.goal - self.pos

        def step(self, actions):
            self.vel += 0.05 * np.clip(actions, -1, 1)
            self.pos += 0.05 * self.vel
            dist = np.linalg.norm(self.goal - self.pos, axis=1)
            self.rewards[:] = -0.1 * dist
            self.tick += 1
            infos = []
            if self.tick % 64 == 0:
                infos.append({"dist": float(dist.mean())})
            done = self.tick % self.horizon == 0
            self.truncations[:] = done
            if done:
                self.reset()
            else:
                self._observe()
            return self.observations, self.rewards, self.terminals, self.truncations, infos

        def close(self):
            pass

    return PointMass


# ------------------------------------------------------------ the "before" code
def before_package(rev: str, where: Path) -> Path:
    """``drone_pp.py`` and ``train.py`` at ``rev`` as the package ``drex_before`` under ``where``."""
    pkg = where / "drex_before"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name, path in (("drone_pp", "drex_opt/envs/drone_pp.py"), ("train", "drex_opt/run/train.py")):
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout
        if name == "train":
            text = text.replace("from drex_opt.envs import BUILTIN_ENV, drone_pp",
                                "from drex_opt.envs import BUILTIN_ENV\nfrom drex_before import drone_pp")
        (pkg / f"{name}.py").write_text(text)
    return where


# ------------------------------------------------------------ one run (child process)
def quick_config(steps: int, workers: int = 1) -> dict:
    from drex_opt.rules import config

    return config.resolve("quick", None, {"train": {"seed": 1, "total_timesteps": steps},
                                          "vec": {"num_workers": workers}})


def one_run(variant: str, steps: int, before_dir: str | None) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    cfg = quick_config(steps, 2 if variant == "drex_mp2" else 1)
    if variant == "drex_before":
        sys.path.insert(0, before_dir)
        import drex_before.train as train  # type: ignore[import-not-found]
    else:
        from drex_opt.run import train

    logs_seen: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        seed = train._seed_everything(cfg)
        if variant in REFERENCES:
            trainer = _minimal_trainer(cfg, Path(tmp), train, seed, variant)
        else:
            trainer, _, _, _ = train._make_trainer(cfg, Path(tmp), "drone_pp", None, seed)
        inner = trainer.train

        def recording_train():
            logs = inner()
            if logs is not None:
                logs_seen.append(dict(logs))
            return logs

        trainer.train = recording_train
        t = time.perf_counter()
        step0 = trainer.global_step
        if variant in REFERENCES:
            while trainer.global_step < cfg["train"]["total_timesteps"]:
                trainer.evaluate()
                trainer.train()
        else:
            train._train(trainer, int(cfg["train"]["total_timesteps"]), seed)
        wall = time.perf_counter() - t
        steps_done = trainer.global_step - step0
        trainer.close()
    last = logs_seen[-1]
    sps_logged = [float(x["SPS"]) for x in logs_seen[1:] if x.get("SPS")]
    return {"variant": variant, "load_before": load(), "agent_steps": int(steps_done), "loop_s": wall, "loop_sps": steps_done / wall,
            "puffer_sps": statistics.median(sps_logged) if sps_logged else None,
            "timers": {k.removeprefix("performance/"): float(v) for k, v in last.items()
                       if k.startswith("performance/")}}


def _minimal_trainer(cfg: dict, run_dir: Path, train, seed: int, variant: str):
    """The minimal loop: one 512-agent env (point mass or PufferLib's C drone), Serial,
    PufferLib's default MLP, plain PuffeRL."""
    import pufferlib.models
    import pufferlib.pufferl as pufferl
    import pufferlib.vector

    class Quiet(pufferl.PuffeRL):
        def print_dashboard(self, *args, **kwargs):
            return None

    agents = cfg["env"]["num_envs"] * cfg["env"]["num_drones"] * cfg["vec"]["num_envs"]
    if variant == "cdrone":
        from pufferlib.ocean.drone.drone import Drone

        env_class, kwargs = Drone, {"num_envs": agents}  # the C drone counts its agents with num_envs
    else:
        env_class, kwargs = point_mass_class(), {"num_agents": agents}
    vecenv = pufferlib.vector.make(env_class, backend=pufferlib.vector.Serial, num_envs=1,
                                   env_kwargs=kwargs, seed=seed)
    policy = pufferlib.models.Default(vecenv.driver_env, hidden_size=train.POLICY_HIDDEN)
    flat = train.train_config(cfg, "drone_pp", run_dir, vecenv.num_agents, [])
    return Quiet(flat, vecenv, policy)


# ------------------------------------------------------------ env alone (child process, one core)
def env_alone(before_dir: str, steps: int) -> dict:
    import numpy as np

    sys.path.insert(0, before_dir)
    import drex_before.drone_pp as old  # type: ignore[import-not-found]
    from drex_opt.envs import drone_pp as new

    def bench(make_envs, agents: int) -> float:
        envs = make_envs()
        for e in envs:
            e.reset(0)
        rng = np.random.default_rng(0)
        actions = [rng.uniform(-1, 1, (16, e.num_agents, 3)).astype(np.float32) for e in envs]
        for i in range(50):
            for e, a in zip(envs, actions):
                e.step(a[i % 16])
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            for i in range(steps):
                for e, a in zip(envs, actions):
                    e.step(a[i % 16])
            best = max(best, steps * agents / (time.perf_counter() - t))
        return best

    def numpy_step(envs: list) -> list:
        for e in envs:  # the same env stepped by its NumPy operations instead of its compiled loops
            e.compiled = False
        return envs

    compiled = hasattr(new, "compile_step")
    rows = []
    cases = [("64 x 16 (1024 drones)", lambda m: [m.DronePP(num_envs=64, num_drones=16, seed=0)], 1024),
             ("16 x 64 (1024 drones)", lambda m: [m.DronePP(num_envs=16, num_drones=64, seed=0)], 1024),
             ("8 x 16 (one sub-env of the quick baseline)", lambda m: [m.DronePP(num_envs=8, num_drones=16, seed=0)], 128)]
    for label, factory, agents in cases:
        for _ in range(3):  # interleaved rounds
            rows.append({"case": label, "impl": "before", "sps": bench(lambda: factory(old), agents)})
            rows.append({"case": label, "impl": "after", "sps": bench(lambda: factory(new), agents)})
            if compiled:
                rows.append({"case": label, "impl": "numpy", "sps": bench(lambda: numpy_step(factory(new)), agents)})
    # the quick baseline's 512 agents as training steps them
    label = "quick baseline, 4 x (8 x 16) = 512 drones as trained"
    batched = getattr(new, "make_batched", None)
    for _ in range(3):
        rows.append({"case": label, "impl": "before",
                     "sps": bench(lambda: [old.DronePP(num_envs=8, num_drones=16, seed=i) for i in range(4)], 512)})
        if batched is not None:
            rows.append({"case": label, "impl": "after",
                         "sps": bench(lambda: [batched(4, num_envs=8, num_drones=16, seed=0)], 512)})
            if compiled:
                rows.append({"case": label, "impl": "numpy",
                             "sps": bench(lambda: numpy_step([batched(4, num_envs=8, num_drones=16, seed=0)]), 512)})
        else:
            rows.append({"case": label, "impl": "after",
                         "sps": bench(lambda: [new.DronePP(num_envs=8, num_drones=16, seed=i) for i in range(4)], 512)})
    return {"rows": rows}


# ------------------------------------------------------------ parent
def child(args: list[str], one_core: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if one_core:
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_speed", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise SystemExit(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def render(info: dict, payload: dict) -> str:
    runs = payload["runs"]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    by = {v: [r for r in runs if r["variant"] == v] for v in variants}
    names = {"pointmass": "minimal loop, point-mass env", "cdrone": "minimal loop, PufferLib's C drone",
             "drex_before": f"drex-opt before ({payload['before']})",
             "drex": "drex-opt now", "drex_mp2": "drex-opt now, vec.num_workers 2 (Multiprocessing)"}
    refs = [v for v in REFERENCES if v in by]
    ref_by_round = {ref: {r["round"]: r for r in by[ref]} for ref in refs}

    def round_ratios(v: str, key: str, ref: str) -> str:
        ratios = [r[key] / ref_by_round[ref][r["round"]][key] for r in by[v]
                  if r["round"] in ref_by_round[ref] and r[key] and ref_by_round[ref][r["round"]][key]]
        return f"{med(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}]" if ratios else "-"

    mp_note = f" ({payload['mp_steps']:,} with vec.num_workers 2)" if "drex_mp2" in variants else ""
    short = {"pointmass": "point-mass", "cdrone": "C drone"}
    rows = []
    for v in variants:
        loop = [r["loop_sps"] for r in by[v]]
        puff = [r["puffer_sps"] for r in by[v]]
        rows.append([names[v], f"{med(loop):,.0f} [{min(loop):,.0f}–{max(loop):,.0f}]",
                     *[round_ratios(v, "loop_sps", ref) for ref in refs], f"{med(puff):,.0f}",
                     *[round_ratios(v, "puffer_sps", ref) for ref in refs]])
    headers = ["variant", "loop SPS", *[f"loop vs {short[ref]}" for ref in refs], "PuffeRL SPS",
               *[f"PuffeRL vs {short[ref]}" for ref in refs]]
    lines = ["# Training speed: drex-opt's training path against a minimal PuffeRL loop\n", header_markdown(info),
             f"- rounds: {payload['rounds']} (variants interleaved in every round, each run in a fresh process); "
             f"{payload['steps']:,} agent steps per run{mp_note}; train seed 1; load average {payload['load_before']} before, "
             f"{payload['load_after']} after; wall time {payload['wall_min']:.1f} min\n",
             "All numbers are wall-time based on a shared 2-core machine: read the ratios (measured side by side, "
             "medians over rounds), not the absolute values.\n",
             "Quick baseline topology: env.num_envs 8 x env.num_drones 16 x vec.num_envs 4 = 512 agents, "
             "vec.num_workers 1, bptt 32, MLP hidden 128, adam. The point-mass loop trains 512 agents with the "
             "same train config, policy and optimiser, on a NumPy point-mass env and on PufferLib's C drone "
             "(one env of 512 agents, the drone.ini's other env settings as PufferLib's defaults).\n",
             "## Training SPS\n",
             "`loop SPS`: agent steps over the wall time of the evaluate/train loop; `PuffeRL SPS`: the median "
             "of PuffeRL's own `SPS` reports after the first. Median [min–max] over rounds; `vs <loop>`: the "
             "ratio to that minimal loop's run of the same round, median [min–max] over rounds.\n",
             md_table(headers, rows),
             "\n## Where the time goes (PuffeRL `performance/*`)\n",
             "Seconds accumulated by PuffeRL's profiler (every 5th epoch), median over rounds, and the share of "
             "`eval` + `train` (the profiler's `eval` and `train` include their `*_misc` parts).\n"]
    trows = []
    for v in variants:
        tm = {k: med([r["timers"].get(k) for r in by[v]]) for k in ("eval", "train", *TIMERS)}
        total = (tm["eval"] or 0) + (tm["train"] or 0)
        trows.append([names[v]] + [f"{tm[k]:.2f} ({tm[k] / total:.0%})" if tm[k] is not None and total else "-"
                                   for k in TIMERS] + [f"{total:.2f}"])
    lines.append(md_table(["variant", *TIMERS, "eval + train s"], trows))
    lines += ["\n## Every run\n", md_table(
        ["round", "variant", "1-min load before", "waited s", "agent steps", "loop SPS", "PuffeRL SPS"],
        [[r["round"], v, r["load_before"][0], r.get("waited_s", 0), f"{r['agent_steps']:,}", f"{r['loop_sps']:,.0f}",
          f"{r['puffer_sps'] or 0:,.0f}"] for r in sorted(runs, key=lambda r: r["round"]) for v in [r["variant"]]])]
    env_rows = payload.get("env_alone", {}).get("rows", [])
    if env_rows:
        lines += ["\n## The env alone (one core, random actions, no policy)\n",
                  "Agent-steps/s, median of 3 interleaved rounds (each the best of 3 repetitions). The quick "
                  "baseline row steps its 512 agents the way training steps them: before as 4 separate sub-envs "
                  "(PufferLib's Serial backend calls each in turn), now as one batched env. `now, NumPy step`: "
                  "today's env stepped by its NumPy operations instead of its compiled loops (the same numbers).\n"]
        cases = list(dict.fromkeys(r["case"] for r in env_rows))
        with_numpy = any(r["impl"] == "numpy" for r in env_rows)
        erows = []
        for c in cases:
            b, a, n = (med([r["sps"] for r in env_rows if r["case"] == c and r["impl"] == impl]) if
                       any(r["case"] == c and r["impl"] == impl for r in env_rows) else None
                       for impl in ("before", "after", "numpy"))
            erows.append([c, f"{b:,.0f}", *([f"{n:,.0f}"] if with_numpy else []), f"{a:,.0f}", f"{a / b:.2f}x"])
        lines.append(md_table(["layout", "before", *(["now, NumPy step"] if with_numpy else []), "now", "speed-up"],
                              erows))
    if payload.get("notes"):
        lines += ["\n## Notes\n", payload["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke: 1 round of 500k steps, short env timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1_500_000)
    parser.add_argument("--mp-steps", type=int, default=300_000,
                        help="agent steps of the vec.num_workers 2 runs (they are slow on 2 cores)")
    parser.add_argument("--env-steps", type=int, default=1000)
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="before each run, wait until the 1-minute load average is below this")
    parser.add_argument("--max-wait", type=float, default=300, help="longest wait for that, seconds")
    parser.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' env and train.py")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--notes", default="", help="markdown appended to the report")
    parser.add_argument("--out", default=None, help="result name (default train_speed[_quick])")
    parser.add_argument("--out-dir", default=str(RESULTS), help="folder of the result files")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--env-alone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--before-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(MARK + json.dumps(one_run(args.one, args.steps, args.before_dir)), flush=True)
        os._exit(0)  # PuffeRL's utilisation thread is not a daemon
    if args.env_alone:
        print(MARK + json.dumps(env_alone(args.before_dir, args.env_steps)), flush=True)
        return

    if args.quick:
        args.rounds, args.steps, args.mp_steps, args.env_steps = 1, 500_000, 200_000, 200
    t0 = time.time()
    before_load = load()
    with tempfile.TemporaryDirectory() as tmp:
        before_dir = str(before_package(args.before, Path(tmp)))
        runs = []
        for r in range(args.rounds):
            for v in args.variants:
                steps = args.mp_steps if v == "drex_mp2" else args.steps
                waited = wait_for_quiet(args.max_load, args.max_wait)
                res = child(["--one", v, "--steps", str(steps), "--before-dir", before_dir])
                res["round"] = r + 1
                res["waited_s"] = round(waited, 1)
                runs.append(res)
                print(f"round {r + 1} {v:>12}: loop {res['loop_sps']:>9,.0f} SPS, PuffeRL {res['puffer_sps'] or 0:>9,.0f}"
                      f" (load {res['load_before'][0]}, waited {waited:.0f} s)", flush=True)
        wait_for_quiet(args.max_load, args.max_wait)
        env_res = child(["--env-alone", "--env-steps", str(args.env_steps), "--before-dir", before_dir], one_core=True)
    payload = {"before": args.before, "rounds": args.rounds, "steps": args.steps, "mp_steps": args.mp_steps, "runs": runs, "env_alone": env_res,
               "load_before": before_load, "load_after": load(), "wall_min": (time.time() - t0) / 60,
               "notes": args.notes}
    info = describe()
    payload["machine"] = info
    text = render(info, payload)
    payload["mode"] = "quick" if args.quick else "full"
    write_results(args.out or result_name("train_speed", args.quick), payload, text, out=Path(args.out_dir))
    print(text)


if __name__ == "__main__":
    main()
