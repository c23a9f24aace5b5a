"""Transfer: does each search method's winner make a better *next run*?

Run from the repository root: .venv/bin/python -m benchmarks.transfer [--quick] [--seeds 101] [--timesteps N]

A search trial is short (the focus's quick budget); what the user gets is the next
autopilot run, trained for the quick baseline's whole budget with the exported winner.
For every method and search seed of ``benchmarks/results/search_efficiency.json`` this
takes the best completed trial (end-to-end, then delivery, then grip, as ``drex-opt
export`` picks), trains its configuration for the baseline's ``train.total_timesteps``
with held-out training seeds (not used by any search), and trains the baseline itself
the same way. Writes ``benchmarks/results/transfer[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import search_efficiency as se
from benchmarks.common import RESULTS, md_table, pct, result_name, write_results
from benchmarks.machine import describe, header_markdown
from drex_opt.rules import config, objectives

OBJECTIVE_KEYS = tuple(key for key, _ in se.OBJECTIVES)  # end-to-end, delivery, grip: export's pick order
HELD_OUT_SEEDS = (101,)  # no search trial trains with these


def winner(records: list[dict]) -> dict | None:
    """The best completed trial by end-to-end, then delivery, then grip (``objectives.rank_key``,
    as ``drex-opt export`` ranks); None if none completed."""
    done = [r for r in records if r.get("state") == "COMPLETE"
            and all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in objectives.OBJECTIVES)]
    return max(done, key=lambda r: objectives.rank_key([r[k] for k in objectives.OBJECTIVES]), default=None)


def run_all(search: dict, seeds: list[int], timesteps: int, timeout: float, work: Path, quick: bool) -> list[dict]:
    """One row per (method, search seed) plus the baseline; each with one run per held-out seed."""
    baseline = config.load_baseline("quick")
    threads = max(1, os.cpu_count() or 1)
    jobs: list[tuple[str, str | None, dict | None]] = [("baseline", None, {})]
    for method, by_seed in search["runs"].items():
        for search_seed, records in sorted(by_seed.items(), key=lambda kv: int(kv[0])):
            if quick and int(search_seed) != min(int(s) for s in by_seed):
                continue
            best = winner(records)
            jobs.append((method, search_seed, None if best is None else best["overrides"]))
    rows = []
    trained: dict[str, dict] = {}  # configuration (JSON) -> record: TPE's winner is often random's
    for method, search_seed, overrides in jobs:
        row = {"method": method, "search_seed": search_seed, "runs": []}
        if overrides is None:
            row["note"] = "no completed trial"
            rows.append(row)
            continue
        for seed in seeds:
            # The next run's budget and seed, not the trial's.
            effective, adjustments = se.trial_overrides(overrides, baseline, timesteps, seed)
            key = json.dumps(effective, sort_keys=True)
            if key in trained:
                rec = {**trained[key], "shared": True}
            else:
                run_dir = work / f"{method}-s{search_seed or 0}-seed{seed}"
                rec = trained[key] = se.train_trial(effective, adjustments, baseline, run_dir, timeout, threads)
            rec["seed"] = seed
            row["runs"].append(rec)
            print(f"  {method:<8} search seed {search_seed or '-'} seed {seed}: {rec['state']:<8} "
                  f"{rec.get('wall_time_s') or 0:6.1f}s e2e {pct(rec.get('end_to_end_success'))} "
                  f"grip {pct(rec.get('grip_success'))}" + (f" ({rec['error']})" if rec.get("error") else ""),
                  flush=True)
        rows.append(row)
    return rows


def row_value(row: dict, key: str) -> float | None:
    """Mean over the held-out seeds; a failed or timed-out run counts as 0 (the user got nothing)."""
    if not row["runs"]:
        return None
    return statistics.fmean(r.get(key) or 0.0 for r in row["runs"])


def markdown(info: dict, settings: dict, rows: list[dict]) -> str:
    lines = ["# Transfer: each search method's winner trained as the next run\n", header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; next-run budget "
             f"{settings['timesteps']:,} agent steps (the quick baseline's); held-out seeds {settings['seeds']}; "
             f"timeout {settings['timeout']:.0f} s per run; search results from `{settings['source']}` "
             f"(trials of {settings['search_timesteps']:,} steps)\n",
             "Each method's best trial per search seed (end-to-end, then delivery, then grip) trained again "
             "for the whole next-run budget with seeds no search used; a failed or timed-out run counts as 0. "
             "Wall time depends on the configuration (small batches with many epochs train more slowly per "
             "agent step) and on the machine's load.\n",
             md_table(["method", "search seed", "end-to-end", "delivery", "grip", "wall s", "status"],
                      [[r["method"], r["search_seed"] or "-",
                        *(pct(row_value(r, k)) if r["runs"] else "-" for k in OBJECTIVE_KEYS),
                        f"{statistics.fmean(x.get('wall_time_s') or 0 for x in r['runs']):.0f}" if r["runs"] else "-",
                        ", ".join(x["status"] for x in r["runs"]) or r.get("note", "")] for r in rows]),
             "", "## Median over search seeds\n"]
    by_method: dict[str, list[float]] = {}
    for r in rows:
        value = row_value(r, "end_to_end_success")
        by_method.setdefault(r["method"], []).append(0.0 if value is None else value)
    lines.append(md_table(["method", "end-to-end, median [min–max]"],
                          [[m, f"{pct(statistics.median(v))} [{pct(min(v))}–{pct(max(v))}]"]
                           for m, v in by_method.items()]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="first search seed only, 500,000-step next runs")
    parser.add_argument("--source", type=Path, help="search results .json (default: search_efficiency[_quick].json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS), help="held-out training seeds")
    parser.add_argument("--timesteps", type=int, help="next-run budget (default: the quick baseline's)")
    # The owner's loop allows a run at least 15 minutes.
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run is killed")
    parser.add_argument("--work", type=Path, help="keep the runs here; the same --work again reuses finished runs")
    args = parser.parse_args(argv)
    source = args.source or RESULTS / f"{result_name('search_efficiency', args.quick)}.json"
    search = json.loads(source.read_text(encoding="utf-8"))
    timesteps = args.timesteps or (500_000 if args.quick else config.load_baseline("quick")["train"]["total_timesteps"])
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="drex-bench-transfer-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = run_all(search, args.seeds, timesteps, args.timeout, work, args.quick)
    settings = {"quick": args.quick, "seeds": args.seeds, "timesteps": timesteps, "timeout": args.timeout,
                "source": str(source.relative_to(RESULTS.parent.parent) if source.is_relative_to(RESULTS.parent.parent)
                              else source),
                "search_timesteps": search["settings"]["timesteps"], "wall_time_min": (time.time() - started) / 60}
    info = describe()
    name = result_name("transfer", args.quick)
    write_results(name, {"machine": info, "settings": settings, "rows": rows}, markdown(info, settings, rows))
    print(f"wrote {RESULTS / name}.{{json,md}} in {settings['wall_time_min']:.1f} min")


if __name__ == "__main__":
    main()
