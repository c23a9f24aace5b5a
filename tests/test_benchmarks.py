"""Cheap checks of the benchmark harness: no training runs."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import early_stopping  # noqa: E402
import search_efficiency as se  # noqa: E402

from drex_opt.rules import config
from drex_opt.rules import safety  # noqa: E402


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
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = se.whole_space(cores=2)
    study = optuna.create_study(directions=["maximize"] * 3, sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        overrides, _ = se.trial_overrides(se.suggest_optuna(trial, space), baseline, 300_000, 7)
        cfg = config.merge(baseline, overrides)
        assert safety.validate(cfg, complete=True) == []
        assert cfg["train"]["total_timesteps"] == 300_000 and cfg["train"]["seed"] == 7
        assert 128 <= cfg["train"]["batch_size"] <= 32 * 64 * 8 * 128
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_protein_suggest_observe_round_trip_through_clamp(baseline, monkeypatch):
    sweep = pytest.importorskip("pufferlib.sweep")
    train = sweep.gp.util.train
    # Protein fits its Gaussian processes for 1,000 steps per suggestion; a few prove the round trip.
    monkeypatch.setattr(sweep.gp.util, "train", lambda *a, **k: train(*a, **{**k, "num_steps": 20}))
    space = se.whole_space(cores=2)
    cfg = se.protein_config(space, baseline)
    assert cfg["train"]["learning_rate"]["distribution"] == "log_normal"
    assert cfg["train"]["optimizer"] == {"distribution": "int_uniform", "min": 0, "max": 2, "mean": 1, "scale": "auto"}
    with contextlib.redirect_stdout(io.StringIO()):
        protein = sweep.Protein(cfg)
        first, _ = protein.suggest(None)
    overrides, _ = se.trial_overrides(se.protein_decode(first, space), baseline, 300_000, 1)
    # The first suggestion is the search centre: the baseline itself, once clamped.
    used = config.merge(baseline, overrides)
    for p in space:
        section, name = p.key.split(".")
        assert used[section][name] == pytest.approx(baseline[section][name]), p.key
    protein.observe(se.protein_encode(overrides, space, baseline), 0.2, 12.0, is_failure=False)
    with contextlib.redirect_stdout(io.StringIO()):
        second, _ = protein.suggest(None)
    overrides, _ = se.trial_overrides(se.protein_decode(second, space), baseline, 300_000, 1)
    assert safety.validate(config.merge(baseline, overrides), complete=True) == []
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
    import transfer

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
    import transfer

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
