"""Early stopping: compute saved by behavioural early stopping, and what it cost.

Run from the repository root:
    .venv/bin/python -m benchmarks.early_stopping [--quick] [--seeds 1 2] [--focus F] [--trials N] [--timesteps T]

Runs a real study with early stopping as shipped, then re-trains every pruned trial's
exact configuration (``trial.user_attrs["overrides"]``: same values, budget and seed)
to its full budget without early stopping, and asks of each: where would it have ranked
among the study's completed trials, would it have been on the Pareto front, would it
have been the best by end-to-end success? Writes
``benchmarks/results/early_stopping[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import md_table, pct, result_name, steps_text, write_results
from benchmarks.machine import command_line, describe, header_markdown
from drex_opt.rules import safety
from drex_opt.rules.early_stop import curve_of, value_at
from drex_opt.rules.objectives import OBJECTIVES, rank_key
from drex_opt.run import runner
from drex_opt.search import planning, study

# A trial's values are in the study's order (OBJECTIVES); ``rank_key`` orders them as drex-opt
# picks: end-to-end, then delivery, then grip.
E2E = OBJECTIVES.index("end_to_end_success")
TOP_SHARE = 0.25  # "among the best": the top quarter of the completed trials by the pick order


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def top_ranks(completed: int) -> int:
    """How many ranks count as "among the best" beside ``completed`` trials (at least 1)."""
    return max(1, round(TOP_SHARE * completed))


def judge(rerun: tuple[float, ...], completed: list[tuple[float, ...]]) -> dict:
    """Rank (1 = best, by end-to-end then delivery then grip) of a re-trained pruned trial
    among the completed ones, whether that is in their top quarter, whether it is on their
    Pareto front and whether it beats the best end-to-end."""
    rank = 1 + sum(1 for c in completed if rank_key(c) > rank_key(rerun))
    best_e2e = max((c[E2E] for c in completed), default=0.0)
    return {"rank": rank, "of": len(completed) + 1, "top": rank <= top_ranks(len(completed)),
            "pareto": not any(dominates(c, rerun) for c in completed),
            "beats_best_e2e": rerun[E2E] > best_e2e, "best_e2e_completed": best_e2e}


def curve_gap(pruned_curve: list, rerun_curve: list) -> float | None:
    """Largest grip difference between the pruned run and its re-run up to the prune point
    (0 means the re-run replayed the pruned run exactly)."""
    if not pruned_curve:
        return None
    gaps = []
    for fraction, grip, *_ in pruned_curve:
        other = value_at(rerun_curve, fraction, 1)
        if other is not None:
            gaps.append(abs(other - grip))
    return max(gaps) if gaps else None


def run_seed(seed: int, focus: str, trials: int, timesteps: int | None, work: Path) -> dict:
    """One study with early stopping, then the pruned trials re-trained to the end."""
    t0 = time.time()
    plan = planning.plan(planning.StudySettings(
        focus=focus, storage=f"sqlite:///{work / 'es.db'}", study_name=f"bench-es-s{seed}", trials=trials,
        timesteps=timesteps, seed=seed, repeats=0, studies_dir=work / "studies", command=command_line()))
    if study.run(plan).interrupted:
        raise KeyboardInterrupt
    study_wall = time.time() - t0
    st = optuna.load_study(study_name=plan.study_name, storage=plan.storage)
    records = []
    for t in st.get_trials(deepcopy=False):
        a = t.user_attrs
        records.append({"number": t.number, "state": t.state.name, "agent_steps": a.get("agent_steps") or 0,
                        "wall_time_s": a.get("wall_time_s"), "reason": a.get("prune_reason") or a.get("fail_reason"),
                        "values": list(t.values) if t.state == TrialState.COMPLETE else None,
                        "overrides": a.get("overrides"), "curve": a.get("curve") or []})
    completed = [tuple(r["values"]) for r in records if r["state"] == "COMPLETE"]
    reruns = []
    for r in records:
        if r["state"] != "PRUNED":
            continue
        cfg = safety.merge(plan.baseline, r["overrides"])
        res = runner.run_training(cfg, work / f"rerun-{r['number']}", timeout=plan.trial_timeout,
                                  threads=plan.threads_per_trial())
        s = res.summary
        row = {"number": r["number"], "reason": r["reason"], "pruned_at": r["agent_steps"], "status": s["status"],
               "agent_steps": s.get("agent_steps"), "wall_time_s": s.get("wall_time_s"),
               "pruned_wall_time_s": r["wall_time_s"]}
        if s["status"] == "completed":
            values = tuple(float(s.get(k) or 0.0) for k in OBJECTIVES)
            row.update(values=list(values), **judge(values, completed),
                       curve_gap=curve_gap(r["curve"], curve_of(res.history, plan.timesteps)))
        reruns.append(row)
        print(f"  seed {seed} trial {r['number']} pruned at {r['agent_steps']:,}: re-run "
              + (f"e2e {pct(row['values'][E2E])}, rank {row['rank']}/{row['of']}" if "values" in row else s["status"]),
              flush=True)
    for r in records:
        r.pop("curve", None)
    return {"seed": seed, "focus": plan.focus, "timesteps": plan.timesteps, "trials": records, "reruns": reruns,
            "study_wall_time_s": study_wall}


def totals(run: dict) -> dict:
    """Agent steps the study spent against what it would have spent without early stopping."""
    trained = [r for r in run["trials"] if r["state"] in ("COMPLETE", "PRUNED")]
    pruned = [r for r in trained if r["state"] == "PRUNED"]
    spent = sum(r["agent_steps"] for r in trained)
    full = sum(r["agent_steps"] for r in trained if r["state"] == "COMPLETE") + sum(
        (x.get("agent_steps") or run["timesteps"]) for x in run["reruns"])
    wall_saved = sum((x.get("wall_time_s") or 0) - (x.get("pruned_wall_time_s") or 0) for x in run["reruns"])
    return {"trials": len(run["trials"]), "completed": len(trained) - len(pruned), "pruned": len(pruned),
            "failed": sum(r["state"] == "FAIL" for r in run["trials"]), "spent": spent, "without": full,
            "saved": full - spent, "saved_share": (full - spent) / full if full else 0.0, "wall_saved_s": wall_saved,
            "top": sum(bool(x.get("top")) for x in run["reruns"]),
            "pareto": sum(bool(x.get("pareto")) for x in run["reruns"]),
            "best": sum(bool(x.get("beats_best_e2e")) for x in run["reruns"])}


def markdown(info: dict, settings: dict, runs: list[dict]) -> str:
    lines = ["# Early stopping: compute saved and trials lost\n", header_markdown(info),
             f"- mode: {'quick (smoke)' if settings['quick'] else 'full'}; focus `{settings['focus']}`, "
             f"{settings['trials']} trials of {settings['timesteps']:,} agent steps per seed; "
             f"seeds {settings['seeds']}; "
             f"wall time {settings['wall_time_min']:.1f} min\n",
             "A real study with early stopping as shipped (`drex_opt/rules/early_stop.py`); then every pruned "
             "trial's exact configuration (values, budget, seed) re-trained to its full budget without early stopping. "
             "`without` is what the study would have spent with every pruned trial run to the end (their re-runs). "
             f"`top {TOP_SHARE:.0%}`: a re-run that would have ranked in the top {TOP_SHARE:.0%} of the completed "
             "trials (at least first place) by end-to-end, then delivery, then grip success; `Pareto`: not "
             "dominated by any completed trial; `best`: above the "
             "best completed end-to-end success. Agent steps do not depend on the machine's load; the wall time "
             "saved does.\n",
             "## Compute saved\n"]
    rows = []
    for run in runs:
        t = totals(run)
        rows.append([run["seed"], t["trials"], t["completed"], t["pruned"], t["failed"], steps_text(t["spent"]),
                     steps_text(t["without"]), f"{steps_text(t['saved'])} ({t['saved_share']:.0%})",
                     f"{t['wall_saved_s']:.0f}", t["top"], t["pareto"], t["best"]])
    lines += [md_table(["seed", "trials", "completed", "pruned", "failed", "agent steps spent", "without",
                        "saved", "wall s saved", f"pruned in top {TOP_SHARE:.0%}", "pruned on Pareto",
                        "pruned best"], rows), ""]
    lines += ["## Pruned trials re-trained to the end\n"]
    rows = []
    for run in runs:
        for x in run["reruns"]:
            values = dict(zip(OBJECTIVES, x.get("values") or ()))
            rows.append([run["seed"], x["number"], f"{x['pruned_at']:,}", x["reason"] or "-",
                         pct(values["end_to_end_success"]) if values else x["status"],
                         pct(values["delivery_success"]) if values else "-",
                         pct(values["grip_success"]) if values else "-",
                         f"{x['rank']}/{x['of']}" if values else "-", "yes" if x.get("pareto") else "no",
                         pct(x.get("best_e2e_completed")),
                         "-" if x.get("curve_gap") is None else f"{x['curve_gap']:.3f}"])
    if rows:
        lines += [md_table(["seed", "trial", "pruned at", "reason", "re-run e2e", "delivery", "grip", "rank",
                            "Pareto", "best completed e2e", "curve gap"], rows,
                           [True, True, True, False, True, True, True, True, False, True, True]),
                  "\n`curve gap`: the largest grip difference between the pruned run and its re-run up to the prune "
                  "point (0: the re-run replayed the pruned run exactly, so the comparison is of the same run).\n"]
    else:
        lines.append("No trial was pruned, so nothing was saved and nothing was lost.\n")
    t_all = [totals(run) for run in runs]
    pruned = sum(t["pruned"] for t in t_all)
    saved = sum(t["saved"] for t in t_all)
    without = sum(t["without"] for t in t_all)
    lines += ["## Answer\n",
              f"- {pruned} trials pruned across {len(runs)} seed(s), saving {steps_text(saved)} of "
              f"{steps_text(without)} agent steps ({saved / without if without else 0:.0%}).",
              f"- Pruned trials that would have been in the top {TOP_SHARE:.0%}: {sum(t['top'] for t in t_all)}; "
              "on the Pareto "
              f"front: {sum(t['pareto'] for t in t_all)}; the best by end-to-end: {sum(t['best'] for t in t_all)}."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.early_stopping", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 8 trials")
    parser.add_argument("--seeds", type=int, nargs="+", help="study seeds (default: 1 quick, 1 2 full)")
    parser.add_argument("--focus", default="optimize_performance",
                        help="the space searched (default optimize_performance: wide PPO ranges, so some trials "
                             "learn slowly and the rule has something to judge)")
    parser.add_argument("--trials", type=int, help="trials per study (default: 8 quick, 20 full)")
    parser.add_argument("--timesteps", type=int, default=1_000_000, help="agent steps per trial")
    parser.add_argument("--render", type=Path, help="rewrite the .md of this results .json; train nothing")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([1] if args.quick else [1, 2])
    args.trials = args.trials or (8 if args.quick else 20)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    started = time.time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="drex-bench-es-") as tmp:
        for seed in args.seeds:
            work = Path(tmp) / f"s{seed}"
            work.mkdir()
            print(f"seed {seed}: study of {args.trials} trials ({args.focus})", flush=True)
            runs.append(run_seed(seed, args.focus, args.trials, args.timesteps, work))
            t = totals(runs[-1])
            print(f"  {t['pruned']} pruned, saved {steps_text(t['saved'])} of {steps_text(t['without'])}", flush=True)
    settings = {"quick": args.quick, "seeds": args.seeds, "focus": args.focus, "trials": args.trials,
                "timesteps": args.timesteps, "top_share": TOP_SHARE, "wall_time_min": (time.time() - started) / 60}
    info = describe()
    name = result_name("early_stopping", args.quick)
    payload = {"machine": info, "settings": settings, "runs": runs, "totals": [totals(r) for r in runs]}
    write_results(name, payload, markdown(info, settings, runs))
    print(f"wrote benchmarks/results/{name}.{{json,md}}")


def render(path: Path) -> None:
    """Re-judge a stored result's re-runs and rewrite its markdown (after a change to the report)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for run in data["runs"]:
        completed = [tuple(t["values"]) for t in run["trials"] if t["state"] == "COMPLETE"]
        for x in run["reruns"]:
            if x.get("values"):
                x.update(judge(tuple(x["values"]), completed))
    data["settings"].pop("top", None)
    data["settings"]["top_share"] = TOP_SHARE
    data["totals"] = [totals(r) for r in data["runs"]]
    write_results(path.stem, data, markdown(data["machine"], data["settings"], data["runs"]), out=path.parent)
    print(f"rewrote {path.parent / path.stem}.{{json,md}}")


if __name__ == "__main__":
    main()
