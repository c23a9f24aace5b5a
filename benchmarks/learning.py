"""Learning curves of real PufferLib runs on drone_pp: do hyperparameters matter?

Run from the repository root: .venv/bin/python -m benchmarks.learning [--quick]
Trains the quick baseline (several seeds), the full baseline, and two bad configurations
(learning rate 0.5; entropy 0.9) and writes benchmarks/results/learning.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.machine import describe, header_markdown
from drex_opt.rules import config, safety
from drex_opt.run import runner


def cases(quick: bool) -> list[dict]:
    """Seeds and budgets: the quick baseline over three seeds, two bad settings at the
    same budget and (full mode) five times longer, and the full baseline at 20M steps."""
    steps = 600_000 if quick else 2_000_000
    seeds = [1] if quick else [1, 2, 3]
    out = [{"name": f"quick baseline (seed {s})", "baseline": "quick", "steps": steps, "seed": s, "over": {}}
           for s in seeds]
    bad = [("learning rate 0.5", {"train": {"learning_rate": 0.5}}), ("entropy 0.9", {"train": {"ent_coef": 0.9}})]
    out += [{"name": name, "baseline": "quick", "steps": steps, "seed": 1, "over": over} for name, over in bad]
    if not quick:
        out += [{"name": f"{name}, 10M steps", "baseline": "quick", "steps": 10_000_000, "seed": 1, "over": over}
                for name, over in bad]
        out.append({"name": "quick baseline, 10M steps", "baseline": "quick", "steps": 10_000_000, "seed": 1,
                    "over": {}})
        out.append({"name": "full baseline (seed 1)", "baseline": "full", "steps": 20_000_000, "seed": 1, "over": {}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes, for smoke")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases(args.quick)):
            extra = safety.merge(case["over"], {"train": {"total_timesteps": case["steps"], "seed": case["seed"]}})
            cfg = config.resolve(case["baseline"], None, extra)
            res = runner.run_training(cfg, Path(tmp) / f"run{i}")
            s = res.summary
            row = {"name": case["name"], "baseline": case["baseline"], "overrides": case["over"],
                   "seed": case["seed"], "steps": s["agent_steps"], "status": s["status"],
                   "wall_time_s": s["wall_time_s"], "error": s.get("error"), "sps": (s.get("metrics_extended") or {}).get("SPS"),
                   "grip": s.get("grip_success"), "delivery": s.get("delivery_success"),
                   "e2e": s.get("end_to_end_success"), "focus": s["behavioral_analysis"]["next_focus"],
                   "curve": [{k: h.get(k) for k in ("agent_steps", "environment/perfect_grip",
                                                    "environment/perfect_deliv", "environment/perfect_now")}
                             for h in s.get("history", [])]}
            results.append(row)
            print(f"{row['name']:<28} {row['status']:<9} grip {row['grip'] or 0:.2f} deliv {row['delivery'] or 0:.2f} "
                  f"e2e {row['e2e'] or 0:.2f} {row['wall_time_s']:.0f}s", flush=True)
    info = describe()
    out = RESULTS
    out.mkdir(exist_ok=True)
    name = "learning_quick" if args.quick else "learning"
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    lines = ["# Learning on drone_pp (real PufferLib PPO runs)\n", header_markdown(info),
             "\nFinal metrics average the last 15% of each run's steps.\n",
             "| run | status | steps | grip | delivery | end-to-end | focus | wall s | SPS |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['status']} | {r['steps']:,} | {r['grip'] or 0:.3f} | {r['delivery'] or 0:.3f} | "
                     f"{r['e2e'] or 0:.3f} | {r['focus']} | {r['wall_time_s']:.0f} | {r['sps'] or 0:,.0f} |")
    failed = [f"{r['name']}: {r['error']}" for r in results if r.get("error")]
    if failed:
        lines += ["", "Runs that did not complete: " + "; ".join(failed)]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    plot(results, out / f"{name}.png")


def plot(results: list[dict], path: Path) -> None:
    # Only the picture needs matplotlib, with its file backend chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, key, title in zip(axes, ("environment/perfect_grip", "environment/perfect_deliv", "environment/perfect_now"),
                              ("grip success", "delivery success", "end-to-end success")):
        for r in results:
            xs = [c["agent_steps"] for c in r["curve"] if c.get(key) is not None]
            ys = [c[key] for c in r["curve"] if c.get(key) is not None]
            ax.plot(xs, ys, label=r["name"])
        ax.set_title(title)
        ax.set_xlabel("agent steps")
        ax.set_xscale("log")
    axes[0].set_ylabel("share of episodes")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
