"""Cheap checks of the benchmark harness: no training runs."""

from __future__ import annotations

import contextlib
import io
import json
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from benchmarks import common, early_stopping, search_efficiency as se, transfer
from drex_opt.rules import config, safety


@pytest.fixture(scope="module")
def baseline() -> dict:
    return config.load_baseline("quick")


def test_whole_space_covers_the_searchable_keys():
    space = {p.key: p for p in se.whole_space(cores=2)}
    assert not set(space) & se.EXCLUDED
    assert "train.total_timesteps" not in space and "train.seed" not in space
    assert not any(safety.SPEC_BY_KEY[k].derived for k in space)
    assert space["train.learning_rate"].log and space["train.adam_eps"].log
    assert not space["train.gamma"].log
    assert space["train.optimizer"].choices == ("muon", "adam", "adamw")
    assert space["vec.num_workers"].high == 2
    for key, p in space.items():
        spec = safety.SPEC_BY_KEY[key]
        if p.kind != "categorical":
            assert spec.low <= p.low < p.high <= spec.high, key


def test_random_proposals_over_the_whole_space_clamp_to_valid_configs(baseline):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = se.whole_space(cores=2)
    study = optuna.create_study(directions=["maximize"] * 3, sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        overrides, _ = se.trial_overrides(se.suggest_optuna(trial, space), baseline, 300_000, 7)
        cfg = safety.merge(baseline, overrides)
        assert safety.validate(cfg, complete=True) == []
        assert cfg["train"]["total_timesteps"] == 300_000 and cfg["train"]["seed"] == 7
        assert 128 <= cfg["train"]["batch_size"] <= 32 * 64 * 8 * 128
        study.tell(trial, state=TrialState.FAIL)


def test_protein_suggest_observe_round_trip_through_clamp(baseline, monkeypatch):
    sweep = pytest.importorskip("pufferlib.sweep")
    train = sweep.gp.util.train
    # Protein fits its Gaussian processes for 1,000 steps per suggestion; a few prove the round trip.
    monkeypatch.setattr(sweep.gp.util, "train", lambda *a, **k: train(*a, **{**k, "num_steps": 20}))
    space = se.whole_space(cores=2)
    cfg = se.protein_config(space, baseline)
    assert cfg["train"]["learning_rate"]["distribution"] == "log_normal"
    assert cfg["train"]["optimizer"] == {"distribution": "int_uniform", "min": 0, "max": 2, "mean": 1, "scale": "auto"}
    protein = se.new_protein(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        first, _ = protein.suggest(None)
    overrides, _ = se.trial_overrides(se.protein_decode(first, space), baseline, 300_000, 1)
    # The first suggestion is the search centre: the baseline itself, once clamped.
    used = safety.merge(baseline, overrides)
    for p in space:
        section, name = p.key.split(".")
        assert used[section][name] == pytest.approx(baseline[section][name]), p.key
    protein.observe(se.protein_encode(overrides, space, baseline), 0.2, 12.0, is_failure=False)
    with contextlib.redirect_stdout(io.StringIO()):
        second, _ = protein.suggest(None)
    overrides, _ = se.trial_overrides(se.protein_decode(second, space), baseline, 300_000, 1)
    assert safety.validate(safety.merge(baseline, overrides), complete=True) == []
    protein.observe(se.protein_encode(overrides, space, baseline), 0.0, 9.0, is_failure=True)


def test_best_so_far_and_steps_to_target():
    trials = [{"agent_steps": 100, "e2e": None}, {"agent_steps": 50, "e2e": 0.2}, {"agent_steps": 100, "e2e": 0.1},
              {"agent_steps": 100, "e2e": 0.5}]
    curve = common.best_so_far(trials, "e2e")
    assert curve == [(0.0, 0.0), (100.0, 0.0), (150.0, 0.2), (250.0, 0.2), (350.0, 0.5)]
    assert common.steps_to(curve, 0.2) == 150
    assert common.steps_to(curve, 0.6) == common.NOT_REACHED
    assert common.value_at(curve, 249) == 0.2
    med, low, high = common.band([curve, common.best_so_far(trials[:2], "e2e")], [0, 200, 400])
    assert med == [0.0, 0.2, 0.35] and low == [0.0, 0.2, 0.2] and high == [0.0, 0.2, 0.5]


def _records(values: list[float | None], steps: int = 100) -> list[dict]:
    return [{"number": i, "state": "COMPLETE" if v is not None else "PRUNED", "agent_steps": steps,
             "wall_time_s": 1.0, "grip_success": v, "delivery_success": v, "end_to_end_success": v,
             "adjustments": []} for i, v in enumerate(values)]


def test_summary_verdict_and_markdown_from_a_fake_result_set(tmp_path):
    runs = {"drex-opt": {1: _records([0.0, 0.5, None, 0.6]), 2: _records([0.4, 0.6, 0.6, 0.6])},
            "random": {1: _records([0.0, 0.0, 0.0, 0.55]), 2: _records([0.0, 0.0, 0.0, 0.0])},
            "protein": {1: _records([0.0, 0.3, 0.5, 0.5]), 2: _records([0.0, 0.0, 0.2, 0.5])}}
    summary = se.summarize(runs)
    e2e = summary["objectives"]["end_to_end_success"]
    assert e2e["target"] == pytest.approx(0.48)
    assert e2e["methods"]["drex-opt"]["steps_to_target"] == [200, 200]
    assert e2e["methods"]["random"]["seeds_reached"] == 1
    assert math.isinf(e2e["methods"]["random"]["median_steps_to_target"])
    assert e2e["methods"]["protein"]["median_steps_to_target"] == 350
    text = " ".join(summary["verdict"])
    assert "random search did not within the 0.00M it spent (ratio above 2.0x): the 2x target is met" in text
    assert "drex-opt is ahead of Protein" in text
    assert summary["states"]["drex-opt"] == {"COMPLETE": 7, "PRUNED": 1}

    info = {"date": "d", "cpu": "c", "cores": 2, "platform": "p", "python": "3", "versions": {"x": "1"},
            "command": "cmd"}
    settings = {"quick": True, "seeds": [1, 2], "trials": 4, "timesteps": 100, "trial_timeout": 1.0,
                "space_focus": "improve_grip", "wall_time_min": 0.1}
    state = {"steps": 1000, "seed": 1, "grip_success": 0.1, "delivery_success": 0.0, "end_to_end_success": 0.0,
             "focus": "improve_grip", "severity": "ok", "insights": ["grip failing"]}
    md = se.markdown(info, settings, state, se.whole_space(cores=2), summary, runs, "x")
    assert "| drex-opt | 60.0% [60.0%–60.0%] | 0.00M | 2/2 |" in md
    assert "| random | 27.5% [0.0%–55.0%] | not reached | 1/2 |" in md
    paths = common.write_results("x", {"summary": summary}, md, out=tmp_path)
    data = json.loads(paths[0].read_text())  # strict JSON: infinities became null
    assert data["summary"]["objectives"]["end_to_end_success"]["methods"]["random"]["median_steps_to_target"] is None


def test_verdict_says_when_nothing_was_found():
    runs = {"drex-opt": {1: _records([0.0, 0.0])}, "random": {1: _records([0.0, 0.0])}}
    for r in runs["drex-opt"][1] + runs["random"][1]:
        r["grip_success"] = 0.3
    verdict = se.summarize(runs)["verdict"]
    assert verdict[0].startswith("No method found any end-to-end success")
    assert "On grip" in verdict[-1]


def test_early_stopping_judge():
    completed = [(0.9, 0.5, 0.4), (0.8, 0.6, 0.3), (0.5, 0.1, 0.1)]
    weak = early_stopping.judge((0.2, 0.0, 0.0), completed)
    assert weak == {"rank": 4, "of": 4, "top": False, "pareto": False, "beats_best_e2e": False,
                    "best_e2e_completed": 0.4}
    strong = early_stopping.judge((0.1, 0.2, 0.5), completed)
    assert strong["rank"] == 1 and strong["pareto"] and strong["beats_best_e2e"]
    assert early_stopping.curve_gap([(0.5, 0.2, 0.1)], [(0.25, 0.1, 0.0), (0.5, 0.25, 0.0)]) == pytest.approx(0.05)


def test_transfer_picks_the_winner_as_export_does_and_swaps_budget_and_seed(baseline):
    def rec(state, e2e, delivery, grip, lr):
        return {"state": state, "end_to_end_success": e2e, "delivery_success": delivery, "grip_success": grip,
                "overrides": {"train": {"learning_rate": lr, "total_timesteps": 300_000, "seed": 3}}}

    records = [rec("COMPLETE", 0.2, 0.3, 0.9, 1e-3), rec("COMPLETE", 0.2, 0.4, 0.5, 2e-3),
               rec("FAIL", None, None, None, 3e-3), rec("COMPLETE", 0.1, 0.9, 0.9, 4e-3),
               {"state": "COMPLETE", "end_to_end_success": float("nan"), "delivery_success": 1.0,
                "grip_success": 1.0, "overrides": {}}]
    best = transfer.winner(records)
    assert best["overrides"]["train"]["learning_rate"] == 2e-3  # tie on e2e broken by delivery
    assert transfer.winner([records[2]]) is None

    effective, _ = se.trial_overrides(best["overrides"], baseline, 2_000_000, 101)
    assert effective["train"]["total_timesteps"] == 2_000_000 and effective["train"]["seed"] == 101
    assert effective["train"]["learning_rate"] == 2e-3
    assert best["overrides"]["train"]["total_timesteps"] == 300_000  # the search record is not changed
    assert safety.validate(effective, baseline) == []


def test_transfer_counts_a_failed_next_run_as_zero():
    row = {"runs": [{"end_to_end_success": 0.8}, {"end_to_end_success": None}]}
    assert transfer.row_value(row, "end_to_end_success") == pytest.approx(0.4)
    assert transfer.row_value({"runs": []}, "end_to_end_success") is None


def test_ladder_counts_steps_to_fixed_levels_and_judges_them():
    def recs(*values):
        return [{"agent_steps": 100, "state": "COMPLETE", "end_to_end_success": v} for v in values]

    runs = {"drex-opt": {1: recs(0.0, 0.6), 2: recs(0.3, 0.9), 3: recs(0.0, 0.0)},
            "random": {1: recs(0.06, 0.0), 2: recs(0.07, 0.0), 3: recs(0.0, 0.0)},
            "protein": {1: recs(0.0, 0.0), 2: recs(0.0, 0.0), 3: recs(0.0, 0.0)}}
    lad = se.ladder(runs, "end_to_end_success", levels=(0.05, 0.5))
    assert lad["drex-opt"]["0.05"] == {"steps": [200, 100, math.inf], "median": 200, "seeds_reached": 2}
    assert lad["random"]["0.05"]["steps"] == [100, 100, math.inf] and lad["random"]["0.05"]["median"] == 100
    assert lad["random"]["0.5"]["median"] == math.inf
    lines = se.ladder_verdict(lad)
    assert "vs random" in lines[0] and "at least 2x fewer at 50%" in lines[0] and "NOT at 5%" in lines[0]
    assert "NOT at" not in lines[1] and "5%" in lines[1]


# ---------------------------------------------------------------- search efficiency: accounting
def _frozen(number: int, state: str, steps: int | None, reason: str | None = None, values=None):
    """An Optuna trial as drex-opt's study stores it (user attributes as ``TrialRunner`` sets them)."""
    attrs = {"overrides": {"train": {"learning_rate": 1e-3}}}
    if steps is not None:  # set once training returned: a trial killed mid-run has none
        attrs.update(status="completed" if state == "COMPLETE" else "failed", agent_steps=steps, wall_time_s=3.0)
    if reason:
        attrs["prune_reason" if state == "PRUNED" else "fail_reason"] = reason
    st = TrialState[state]
    trial = optuna.trial.create_trial(
        state=st, values=values if st == TrialState.COMPLETE else None, user_attrs=attrs,
        params={"train.learning_rate": 1e-3}, distributions={"train.learning_rate": FloatDistribution(1e-4, 1e-2)})
    trial.number = number
    return trial


def test_a_resumed_drex_study_counts_real_trials_only():
    # Trial 2 was running when the benchmark was killed: on resume the study engine fails it
    # ("worker process gone", no agent steps). Trial 4 was stopped by Ctrl-C (partial steps).
    # Trial 5 failed on its own (NaN weights) and counts with the steps it consumed.
    done = (0.5, 0.2, 0.1)
    stored = [_frozen(0, "COMPLETE", 311_296, values=done), _frozen(1, "PRUNED", 163_840, "grip below median"),
              _frozen(2, "FAIL", None, "worker process gone (killed or crashed)"),
              _frozen(3, "COMPLETE", 301_056, values=done), _frozen(4, "FAIL", 120_000, "interrupted"),
              _frozen(5, "FAIL", 77_868, "failed: policy weights became NaN/inf"),
              _frozen(6, "COMPLETE", 303_104, values=done), _frozen(7, "COMPLETE", 301_056, values=done)]
    records = [se.drex_record(t, t.number < 6, "drex.db") for t in stored]
    assert records[2]["agent_steps"] == 0 and se.killed(records[2]) and se.killed(records[4])
    assert not any(se.killed(r) for r in records if r["number"] not in (2, 4))

    # Before the resume (trials 0-5 stored, 6 trials wanted): 4 are real, so 2 new trials run
    # (counting every finished state would have run 0 and kept two killed ones).
    assert se.trials_missing(records[:6], 6) == 2
    counted = se.counted_trials(records, 6)
    # The killed trials neither take the place of the real trials 6 and 7 nor count twice.
    assert [r["number"] for r in counted] == [0, 1, 3, 5, 6, 7]
    assert sum(r["agent_steps"] for r in counted) == 311_296 + 163_840 + 301_056 + 77_868 + 303_104 + 301_056
    assert [r["resumed"] for r in counted] == [True, True, True, True, False, False]
    assert counted[0]["reused_from"]["study"] == "drex.db" and counted[0]["end_to_end_success"] == 0.1
    assert se.trials_missing(records, 6) == 0


def test_finished_run_trains_an_interrupted_run_again(tmp_path):
    cfg = {"train": {"total_timesteps": 1000, "seed": 1}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    summary = {"status": "failed", "error": "interrupted", "agent_steps": 400, "timestamp": "t"}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert se.finished_run(tmp_path, cfg) is None  # killed with the benchmark: not a trial outcome
    summary.update(status="timeout", error="killed after the 300 s timeout")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert se.finished_run(tmp_path, cfg)["agent_steps"] == 400  # the configuration's own failure: reused
    assert se.finished_run(tmp_path, {"train": {"total_timesteps": 2000, "seed": 1}}) is None


def test_the_baseline_state_run_is_charged_to_drex_opt_only():
    runs = {"drex-opt": {1: _records([0.0, 0.6])}, "random": {1: _records([0.0, 0.55])}}
    state = {"steps": 1_000, "wall_time_s": 5.0}
    charged = se.baseline_state_charge(state, runs)
    assert charged == {"drex-opt": {"agent_steps": 1_000.0, "wall_time_s": 5.0}}
    before, after = se.summarize(runs), se.summarize(runs, charged)
    e2e = after["objectives"]["end_to_end_success"]["methods"]
    assert before["objectives"]["end_to_end_success"]["methods"]["drex-opt"]["steps_to_target"] == [200]
    assert e2e["drex-opt"]["steps_to_target"] == [1_200] and e2e["random"]["steps_to_target"] == [200]
    assert e2e["drex-opt"]["wall_s_to_target"] == [7.0]
    assert after["spent"] == {"drex-opt": [1_200], "random": [200]}
    assert after["charged"] == {"drex-opt": 1_000.0, "random": 0.0}
    assert after["ladder"]["drex-opt"]["0.5"]["median"] == 1_200
    assert after["ladder"]["random"]["0.5"]["median"] == 200


def test_reuse_is_opt_in_and_stated_per_method_and_seed(tmp_path):
    work = tmp_path / "work"
    assert se.prepare_work(work, False, {"command": "first"}) == []
    with pytest.raises(SystemExit, match="--resume"):
        se.prepare_work(work, False, {"command": "second"})
    assert se.prepare_work(work, True, {"command": "third"}) == [{"command": "first"}]
    with pytest.raises(SystemExit):
        se.parse_args(["--resume"])  # nothing to resume from

    recs = _records([0.0, 0.1, 0.2, 0.3])
    for r in recs[:3]:
        r.update(resumed=True, reused_from={"run_dir": str(work / "random-s1" / f"trial-{r['number']}"),
                                            "trained_at": f"2026-01-0{r['number'] + 1}T00:00:00+00:00"})
    recs[3]["resumed"] = False
    tpe = [{**recs[0], "shared_with": "random"}, {**_records([0.0])[0], "resumed": False}]
    runs = {"random": {1: recs}, "tpe": {1: tpe}}
    table = se.reuse_summary(runs)
    assert table["random"]["1"] == {"trials": 4, "reused": 3, "trained_now": 1, "unknown": 0, "shared": 0,
                                    "trained_at": ["2026-01-01T00:00:00+00:00", "2026-01-03T00:00:00+00:00"],
                                    "sources": [str(work / "random-s1")]}
    assert table["tpe"]["1"]["reused"] == 1 and table["tpe"]["1"]["shared"] == 1
    # An older result without the flag: trained now when it ran in a fresh temporary folder.
    assert se.reuse_summary({"random": {1: _records([0.0])}}, work_given=False)["random"]["1"]["trained_now"] == 1

    summary = se.summarize(runs)
    settings = {"quick": True, "seeds": [1], "trials": 4, "timesteps": 100, "trial_timeout": 1.0,
                "space_focus": "improve_grip", "wall_time_min": 0.1, "reuse": {"work": str(work)}}
    state = {"steps": 1000, "seed": 1, "grip_success": 0.1, "delivery_success": 0.0, "end_to_end_success": 0.0,
             "focus": "improve_grip", "severity": "ok", "insights": ["grip failing"]}
    info = {"date": "d", "cpu": "c", "cores": 2, "platform": "p", "python": "3", "versions": {}, "command": "cmd"}
    md = se.markdown(info, settings, state, se.whole_space(cores=2), summary, runs, "x")
    assert "**4 of the 6 counted trials were not trained by the invocation that wrote this result**" in md
    assert (f"| random | 1 | 4 | 3 | 1 | - | 2026-01-01T00:00:00+00:00 – 2026-01-03T00:00:00+00:00 | "
            f"`{work / 'random-s1'}` |") in md


def test_recompute_of_an_earlier_result_keeps_the_old_numbers_beside_the_new(tmp_path):
    def recs(*values):
        return [{**r, "resumed": i < 1} for i, r in enumerate(_records(list(values), steps=100_000))]

    data = {"machine": {"date": "2026-11-26T17:28:35+00:00", "cpu": "c", "cores": 2, "platform": "p", "python": "3",
                        "versions": {}, "command": "python -m benchmarks.search_efficiency --work /tmp/w"},
            "settings": {"quick": False, "seeds": [1], "trials": 3, "timesteps": 100, "trial_timeout": 1.0,
                         "space_focus": "fix_grip_activation", "wall_time_min": 30.0},
            "baseline_state": {"steps": 1_000_000, "seed": 1, "wall_time_s": 5.0, "grip_success": 0.1,
                               "delivery_success": 0.0, "end_to_end_success": 0.0, "focus": "fix_grip_activation",
                               "severity": "ok", "insights": ["i"]},
            "whole_space": [{"key": "train.gamma", "kind": "float", "low": 0.0, "high": 1.0, "log": False,
                             "choices": []}],
            "runs": {"drex-opt": {"1": recs(0.0, 0.9, None)}, "random": {"1": recs(0.0, 0.0, 0.0)}}}
    path = tmp_path / "search_efficiency.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        se.recompute(path)
    out = json.loads(path.read_text())
    old = out["summary_previous_accounting"]["objectives"]["end_to_end_success"]["methods"]["drex-opt"]
    new = out["summary"]["objectives"]["end_to_end_success"]["methods"]["drex-opt"]
    assert old["steps_to_target"] == [200_000] and new["steps_to_target"] == [1_200_000]
    assert out["summary"]["spent"]["drex-opt"] == [1_300_000] and out["summary"]["spent"]["random"] == [300_000]
    assert out["reuse"]["drex-opt"]["1"]["reused"] == 1 and out["settings"]["reuse"]["work"] == "/tmp/w"
    md = (tmp_path / "search_efficiency.md").read_text()
    assert "| drex-opt | 90.0% | 1.20M (was 0.20M) | 1/1 |" in md
    assert "| random | 0.30M | - |" in md  # only changed figures carry a "was"
    assert "| drex-opt | 1.30M (was 0.30M) | 1.00M |" in md
    assert "ended before this invocation started (about 2026-11-26T16:58+00:00)" in md
    assert (tmp_path / "search_efficiency.png").exists()
    with contextlib.redirect_stdout(io.StringIO()):
        se.recompute(path)  # idempotent: the earlier accounting is kept, not replaced by the new one
    assert json.loads(path.read_text())["summary_previous_accounting"]["spent"]["drex-opt"] == [300_000]


# ---------------------------------------------------------------- warm_loop
def test_warm_loop_charges_each_study_before_the_run_after_it():
    from benchmarks import warm_loop

    start = {"agent_steps": 1_000, "e2e": 0.01}
    runs = [{"agent_steps": 2_000, "e2e": 0.5, "status": "completed", "study_agent_steps": 3_000},
            {"agent_steps": 2_000, "e2e": None, "status": "failed", "study_agent_steps": 0},
            {"agent_steps": 2_000, "e2e": 0.9, "status": "completed", "study_agent_steps": 0}]
    points = warm_loop.timeline(start, 500, runs)
    # start 1k; first study 0.5k; run 2k -> 3.5k; its study 3k; a failed run 2k -> 8.5k; run -> 10.5k
    assert points == [[1_000, 0.01], [3_500, 0.5], [8_500, None], [10_500, 0.9]]
    assert warm_loop.at(points, 3_499) == 0.01, "a run counts only once it has ended"
    assert warm_loop.at(points, 9_000) == 0.5, "a failed run leaves the drone the method had"
    assert warm_loop.at(points, 10_500) == 0.9
    assert warm_loop.at(points, 999) is None


def test_warm_loop_refuses_the_design_seeds():
    from benchmarks import warm_loop

    with pytest.raises(SystemExit, match="shaped the warm spaces"):
        warm_loop.main(["--seeds", str(warm_loop.DESIGN_SEEDS[0])])


def test_hard_calibration_windows_weigh_episodes_and_judge_the_last_third():
    from benchmarks import hard_calibration as hc

    key = "environment/perfect_now"
    history = [{"agent_steps": 400_000, key: 0.0, "environment/n": 1},
               {"agent_steps": 900_000, key: 1.0, "environment/n": 3},
               {"agent_steps": 950_000, key: 0.5},  # no episodes: carries no weight
               {"agent_steps": 1_500_000, key: 0.2, "environment/n": 2}]
    curve = hc.windows(history)
    assert [w["agent_steps"] for w in curve] == [1_000_000, 2_000_000]
    assert curve[0][key] == pytest.approx(0.75) and curve[0]["episodes"] == 4
    assert curve[1][key] == pytest.approx(0.2)
    def run(values):
        return [{"agent_steps": (i + 1) * hc.WINDOW, key: v} for i, v in enumerate(values)]

    slow_then_flat = run([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.31, 0.3, 0.32])
    rising = run([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert hc.plateau(slow_then_flat)["flat"] is True, "a climb before the last third does not count"
    assert hc.plateau(rising)["flat"] is False and hc.plateau(rising)["change"] == pytest.approx(0.2)
    assert hc.plateau(slow_then_flat)["last"] == pytest.approx(0.31)
    assert hc.plateau(rising[:4])["flat"] is None, "too short a run to judge"


def test_hard_calibration_refuses_the_design_seeds():
    from benchmarks import hard_calibration as hc

    with pytest.raises(SystemExit):
        hc.main(["--seeds", str(hc.DESIGN_SEEDS[0])])


def _study(start: str, jobs: int, seed: int, wall: float, inside: float) -> dict:
    return {"start": start, "jobs": jobs, "seed": seed, "trials": 12, "wall_s": wall, "trials_per_hour": 12 / wall * 3600,
            "inside_training_s": inside, "inside_share": inside / (wall * jobs), "overhead_per_trial_s": 0.1,
            "first_trial_start_s": 0.8, "first_trial_overhead_s": 2.0, "load_before": [0.5, 0.5, 0.5]}


def test_warm_trials_ceilings_from_the_studies_and_the_replays(tmp_path, monkeypatch):
    from benchmarks import warm_trials as wt

    # Replays: a config alone trains 4 s; two copies at once train 5 s and 6 s each.
    seconds = {"alone": 4.0, "pair0": 5.0, "pair1": 6.0}
    threads = {}

    def replay(config, run_dir, n):
        threads[run_dir.name] = n
        return seconds[run_dir.name]

    monkeypatch.setattr(wt, "_replay", replay)
    monkeypatch.setattr(wt, "usable_cpus", lambda: 2)
    rows = []
    for i in range(3):
        (tmp_path / f"t{i}").mkdir()
        (tmp_path / f"t{i}" / "config.json").write_text("{}")
        rows.append({"run_dir": str(tmp_path / f"t{i}")})
    rows.append({"run_dir": None})  # a trial without a run folder is not replayed
    ceiling = wt.jobs_ceiling({"seed": 1, "trial_rows": rows}, tmp_path)
    assert (ceiling["threads_alone"], ceiling["threads_pair"]) == (2, 1)
    assert threads == {"alone": 2, "pair0": 1, "pair1": 1}
    assert len(ceiling["rows"]) == 3
    assert ceiling["ceiling"] == pytest.approx(2 * 12.0 / 16.5)

    # Before: 60 s a study; warm: 30 s of which 24 s inside training -> 2.0x now, 2.5x at most.
    runs = [_study("before", 1, 1, 60.0, 30.0), _study("warm", 1, 1, 30.0, 24.0),
            _study("before", 2, 1, 40.0, 30.0), _study("warm", 2, 1, 25.0, 30.0)]
    info = {"date": "d", "cpu": "c", "cores": 2, "platform": "p", "python": "3", "versions": {"x": "1"},
            "command": "cmd"}
    settings = {"quick": False, "rounds": 1, "seeds": [1], "trials": 12, "timesteps": 300_000,
                "wall_time_min": 1.0, "before": "abc"}
    md = wt.markdown(info, settings, runs, [ceiling])
    assert "| warm against before (abc), `--jobs 1` | 2.00x |" in md
    assert "| `--jobs 2` against `--jobs 1`, warm | 1.20x |" in md
    assert "| ceiling: warm with nothing outside training against before, `--jobs 1` | 2.50x |" in md
    assert "| ceiling: `--jobs 2` against `--jobs 1`, both with nothing outside training | 1.45x |" in md
    assert "| 1 | 3 | 12.0 | 16.5 | 1.45x |" in md
