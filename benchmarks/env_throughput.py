"""Env-only throughput of drone_pp: agent-steps per second against the number of drones.

Run from the repository root: .venv/bin/python -m benchmarks.env_throughput [--steps N]
Writes benchmarks/results/env_throughput.{json,md}. One process, one core (BLAS threads
pinned to 1), random actions, seed 0.
"""

from __future__ import annotations

import argparse
import json
import os

# One core: pinned before numpy loads its BLAS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402 - after the thread pinning above

from benchmarks.common import RESULTS, env_steps_per_s  # noqa: E402
from benchmarks.machine import describe, header_markdown  # noqa: E402
from drex_opt.envs.drone_pp import DronePP  # noqa: E402

TOPOLOGIES = [(1, 16), (4, 16), (8, 16), (16, 16), (16, 64), (64, 16), (32, 64), (64, 64)]


def measure(num_envs: int, num_drones: int, steps: int) -> float:
    env = DronePP(num_envs=num_envs, num_drones=num_drones, seed=0)
    env.reset(0)
    actions = np.random.default_rng(0).uniform(-1, 1, (16, env.num_agents, 3)).astype(np.float32)
    return env_steps_per_s(env, actions, steps)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.env_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    for e, d in TOPOLOGIES:
        sps = measure(e, d, args.steps)
        rows.append({"num_envs": e, "num_drones": d, "agents": e * d, "agent_steps_per_s": round(sps)})
        print(f"{e:>3} x {d:>3} = {e * d:>5} drones: {sps:>12,.0f} agent-steps/s", flush=True)
    info = describe()
    out = RESULTS
    out.mkdir(exist_ok=True)
    (out / "env_throughput.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    lines = ["# drone_pp env throughput (one core, random actions, seed 0)\n", header_markdown(info),
             "\n| arenas x drones | drones | agent-steps/s |\n|---|---:|---:|"]
    lines += [f"| {r['num_envs']} x {r['num_drones']} | {r['agents']} | {r['agent_steps_per_s']:,} |" for r in rows]
    (out / "env_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
