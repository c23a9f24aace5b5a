"""The rivals benchmark's harness (benchmarks/versus_rivals.py): its accounting and one tiny real run.

The numbers it measures are not asserted here; what it counts and compares is.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import optuna
import pytest

from benchmarks import rivals, versus_rivals as vr
from drex_opt.rules import config


def cell(env, state, seed, budget, curves):
    """A measured cell: ``curves`` maps a method to its points (agent steps, end-to-end)."""
    return {"env": env, "seed": seed, "budget": budget, "state": {"name": state, "reached": True},
            "methods": {m: {"points": pts} for m, pts in curves.items()}}


def test_steps_to_a_level_is_the_first_measured_drone_at_or_above_it():
    points = [[0, 0.0], [2_000_000, 0.04], [4_000_000, None], [6_000_000, 0.3]]
    assert vr.steps_to_level(points, 0.05) == 6_000_000
    assert vr.steps_to_level(points, 0.04) == 2_000_000
    assert vr.steps_to_level(points, 0.5) == math.inf


def test_the_claim_compares_the_best_drex_path_with_the_best_rival_and_with_continuing():
    budget = 4_000_000
    cells = [cell("drone_pp", "quick_1m", seed, budget, {
        "continue unchanged": [[0, 0.0], [budget, 0.6]],
        "protein": [[0, 0.0], [budget, 0.2]],
        "drex-opt scratch": [[0, 0.0], [budget, 0.1]],
        "drex-opt warm loop": [[0, 0.0], [budget, 0.5]],
    }) for seed in (61, 62, 63)]
    summary = vr.summarize(cells, vr.METHODS)
    group = summary["drone_pp/quick_1m"]
    assert group["seeds"] == [61, 62, 63]
    assert group["methods"]["drex-opt warm loop"]["median_at_budget"] == 0.5
    [line] = vr.claim(summary)
    # 0.5 against continuing unchanged's 0.6: the best rival wins, and drex-opt is below continuing.
    assert "(drex-opt warm loop) 50.0%" in line and "(continue unchanged) 60.0%" in line
    assert ": loses" in line and "drex-opt below it" in line

    for c in cells[:2]:
        c["methods"]["drex-opt warm loop"]["points"][-1][1] = 0.8
    [line] = vr.claim(vr.summarize(cells, vr.METHODS))
    assert ": level or ahead (1.33×)" in line and "below it" not in line  # median 0.8 against 0.6
    for c in cells[:2]:
        c["methods"]["drex-opt warm loop"]["points"][-1][1] = 0.95
    [line] = vr.claim(vr.summarize(cells, vr.METHODS))
    assert ": wins (1.58×)" in line  # the bar: 1.5×

    # Nothing delivered anywhere: no side wins.
    for c in cells:
        for m in c["methods"].values():
            m["points"][-1][1] = 0.0
    [line] = vr.claim(vr.summarize(cells, vr.METHODS))
    assert ": level: no method delivered" in line and "wins" not in line


def test_across_states_pools_every_state_and_seed_and_counts_where_the_warm_loop_is_below_continuing():
    def at(value):
        return [[0, 0.0], [1_000, value]]
    cells = [cell("drone_pp", "broken", 61, 1_000, {"drex-opt warm loop": at(0.0), "drex-opt scratch": at(0.9),
                                                     "continue unchanged": at(0.1), "protein": at(0.3)}),
             cell("drone_pp", "broken", 62, 1_000, {"drex-opt warm loop": at(0.0), "drex-opt scratch": at(0.7),
                                                     "continue unchanged": at(0.0), "protein": at(0.2)}),
             cell("drone_pp", "gripping", 61, 1_000, {"drex-opt warm loop": at(1.0), "drex-opt scratch": at(0.1),
                                                       "continue unchanged": at(0.5), "protein": at(0.6)})]
    [line] = vr.across_states(vr.summarize(cells, vr.METHODS))
    # warm loop 0, 0, 1 -> 0%; best rival: protein on broken (0.3, 0.2), protein on gripping (0.6) -> 30%;
    # better path: scratch on broken (0.9, 0.7), warm loop on gripping (1.0) -> 90%; continuing 0.1, 0, 0.5 -> 10%.
    assert "(3 cells)" in line and "as shipped) 0.0% against the best rival of each state 30.0% (0.00×)" in line
    assert "better path of each state 90.0%" in line and "continuing unchanged 10.0%" in line
    assert line.endswith("below continuing unchanged in 1 of 3 (state, seed) cells")


def test_a_drone_measured_only_after_the_budget_does_not_count_at_it():
    cells = [cell("drone_pp", "broken", 61, 1_000, {"protein": [[0, 0.0], [1_001, 1.0]]})]
    assert vr.summarize(cells, vr.METHODS)["drone_pp/broken"]["methods"]["protein"]["at_budget"] == [0.0]


def test_a_search_runs_two_trials_then_those_that_fit():
    trained = lambda *steps: [{"agent_steps": x} for x in steps]
    assert vr.more_trials([], 500, 100) and vr.more_trials(trained(900), 500, 100)
    assert not vr.more_trials(trained(900, 900), 500, 1_000)
    assert vr.more_trials(trained(250, 250), 500, 1_000) and not vr.more_trials(trained(250, 251), 500, 1_000)


@pytest.mark.parametrize("focus", ["improve_carrying", "optimize_performance", "diagnostic_grip"])
def test_every_search_of_a_state_fits_two_trials_and_drex_opts_study_accepts_them(tmp_path, focus):
    """A 2M search budget: drex-opt's own study (its budget check) must run two trials of the
    length every search is given, and the focus's own length is kept where two fit."""
    from drex_opt.search import planning
    from drex_opt.errors import UserError

    def settings(**kw):
        return planning.StudySettings(focus=focus, storage=f"sqlite:///{tmp_path / 's.db'}",
                                      studies_dir=tmp_path / "studies", **kw)

    plan = planning.plan(settings())
    steps = vr.fitted_trial_steps(plan, 2_000_000)
    planning.plan(settings(budget=2_000_000, timesteps=steps))  # raises if two do not fit
    two_fit = 2 * planning.trial_steps_bound(plan) <= 2_000_000
    assert (steps == plan.timesteps) == two_fit
    if not two_fit:
        with pytest.raises(UserError):
            planning.plan(settings(budget=2_000_000))
        assert steps > 2_000_000 // 4  # shortened no more than whole batches need
    assert vr.fitted_trial_steps(plan, 100 * planning.trial_steps_bound(plan)) == plan.timesteps


def test_what_is_left_after_whole_runs_is_one_shorter_run_of_whole_batches_if_an_eighth_of_one():
    assert vr.last_run_steps(1_000_000, 2_015_232, 16_384) == 999_424  # 61 whole batches
    assert vr.last_run_steps(2_015_232 // 8 - 16_384, 2_015_232, 16_384) == 0
    assert vr.last_run_steps(2_015_232 // 8 + 16_384, 2_015_232, 16_384) == 262_144
    assert vr.last_run_steps(0, 2_015_232, 16_384) == 0 and vr.last_run_steps(-5, 2_015_232, 16_384) == 0


def test_rl_zoo3_tpe_proposes_what_its_random_sampler_does_during_start_up():
    """Why the harness trains such a configuration once for both rl-zoo3 rows."""
    base = config.load_baseline("quick")
    proposals = {}
    for name, sampler in (("tpe", rivals.rlzoo_sampler(7)), ("random", rivals.rlzoo_random_sampler(7))):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        out = []
        for i in range(rivals.RLZOO_STARTUP_TRIALS):
            trial = study.ask()
            out.append(rivals.suggest_rlzoo_ppo(trial, base)[0])
            study.tell(trial, float(i % 3))
        proposals[name] = out
    assert proposals["tpe"] == proposals["random"]


def test_seeds_used_elsewhere_are_refused():
    with pytest.raises(SystemExit, match="used elsewhere"):
        vr.main(["--seeds", "41", "62"])


def test_cells_measured_with_other_sizes_are_refused_not_mixed_in(tmp_path):
    cells = tmp_path / "out" / "versus_rivals_cells"
    vr.save_cell(cells / "drone_pp-quick_1m-seed7.json", {"env": "drone_pp", "seed": 7},
                 {"sizes": asdict(vr.Sizes(budget=2_000_000)), "methods": list(vr.METHODS)})
    assert list(vr.load_cells(cells, vr.Sizes(budget=2_000_000), vr.METHODS)) == [
        cells / "drone_pp-quick_1m-seed7.json"]
    with pytest.raises(SystemExit, match="drone_pp-quick_1m-seed7.json was measured with sizes"):
        vr.main(["--envs", "drone_pp", "--states", "quick_1m", "--seeds", "7", "--budget", "3000000",
                 "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists(), "refused before anything trained"


@pytest.mark.slow
def test_the_harness_runs_every_method_within_its_budget(tmp_path):
    budget = 600_000
    payload = vr.main(["--envs", "drone_pp", "--states", "quick_1m", "--seeds", "7", "--budget", str(budget),
                       "--start-steps", "100000", "--run-steps", "100000", "--trial-steps", "200000", "--jobs", "1",
                       "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    [one] = payload["cells"]
    assert set(one["methods"]) == set(vr.METHODS)
    # Two 200k trials of the focus's largest batch would not fit the 300k search share: shortened.
    assert one["trial_timesteps"] < one["focus_trial_timesteps"] == 200_000
    one_run = 7 * 16_384  # 100k steps in whole batches of the quick baseline's 16,384
    for method, rec in one["methods"].items():
        runs = sum(r["agent_steps"] for r in rec["runs"])
        # A search may overrun its share by part of a trial (whole batches); the runs after it never overrun.
        assert rec["search_agent_steps"] + runs <= max(budget, rec["search_agent_steps"]), method
        assert rec["search_agent_steps"] + runs > 0, method
        assert rec["points"][0] == [0, one["state"]["e2e"]], method  # every method starts from the state's drone
        if rec["runs"] and method != "drex-opt warm loop":  # nothing worth a (shorter) run is left untrained
            assert budget - rec["search_agent_steps"] - runs < one_run / 8 + 16_384, method
    assert one["methods"]["continue unchanged"]["search_agent_steps"] == 0
    assert one["methods"]["continue unchanged"]["runs"], "continuing trains at least one run"
    for method in ("protein", "rl-zoo3 tpe", "drex-opt scratch", "focus space, random sampler"):
        rec = one["methods"][method]
        assert len(rec["search"]) >= 2 and rec["winner"] is not None, method
    for method, rec in one["methods"].items():
        # A proposal with a longer horizon trains larger whole batches and may spend the budget;
        # whatever a search leaves that holds a whole batch of its winner is trained on.
        if not rec.get("search") or rec.get("winner") is None:
            continue
        [won] = [r for r in rec["search"] if r["number"] == rec["winner"]]
        left = budget - rec["search_agent_steps"]
        if left >= max(won["overrides"]["train"]["batch_size"], one_run / 8 + 16_384):
            assert rec["runs"], f"{method}: {left:,} agent steps left after the search and no run trained them"
    assert one["methods"]["drex-opt scratch"]["runs"], "drex-opt's trials fit its share: its winner is trained on"
    # rl-zoo3's two rows share their start-up trials (trained once, by the first of them).
    assert all(r.get("shared_with") == "rl-zoo3 tpe" for r in one["methods"]["rl-zoo3 random"]["search"])
    assert one["methods"]["rl-zoo3 random"]["runs_shared_with"] == "rl-zoo3 tpe"  # the same winner, continued once
    stored = json.loads((tmp_path / "out" / "versus_rivals.json").read_text())
    assert stored["settings"]["seeds"] == [7]
    text = (tmp_path / "out" / "versus_rivals.md").read_text()
    assert "## The claim" in text and "## drone_pp/quick_1m" in text
    assert (tmp_path / "out" / "versus_rivals_drone_pp_quick_1m.png").is_file()
    # The cell was kept as it finished; the same invocation again trains nothing and reports it.
    cell_file = tmp_path / "out" / "versus_rivals_cells" / "drone_pp-quick_1m-seed7.json"
    assert json.loads(cell_file.read_text())["cell"] == json.loads(json.dumps(one))
    again = vr.main(["--envs", "drone_pp", "--states", "quick_1m", "--seeds", "7", "--budget", str(budget),
                     "--start-steps", "100000", "--run-steps", "100000", "--trial-steps", "200000", "--jobs", "1",
                     "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work-again")])
    assert not (tmp_path / "work-again").exists() or not any((tmp_path / "work-again").rglob("summary.json"))
    assert json.loads(json.dumps(again["cells"])) == json.loads(json.dumps(payload["cells"]))


def test_protein_is_charged_puffers_unrounded_uptime_so_tied_costs_never_leave_it_without_a_point(monkeypatch):
    """Protein's Pareto filter drops every point of tied least cost. Seen in a real search:
    nine trials, all at 0% end to end, two at the same rounded wall time; the tenth suggestion
    failed. ``puffer sweep`` observes PuffeRL's own uptime, which does not tie."""
    import contextlib
    import io

    sweep = pytest.importorskip("pufferlib.sweep")
    train = sweep.gp.util.train
    monkeypatch.setattr(sweep.gp.util, "train", lambda *a, **k: train(*a, **{**k, "num_steps": 20}))
    base = config.load_baseline("quick")
    walls = [1.918, 1.825, 1.764, 1.564, 2.106, 1.662, 1.778, 1.787, 1.564]  # that search's, rounded to ms
    records = [{"wall_time_s": w, "uptime_s": w - 0.07 + i * 1e-4} for i, w in enumerate(walls)]

    def search(cost) -> None:
        protein = rivals.make_protein(base, seed=61)
        for rec in records:
            with contextlib.redirect_stdout(io.StringIO()):
                suggestion, _ = protein.suggest(None)
            overrides, _ = vr.trial_overrides(rivals.protein_proposal(suggestion), base, 327_680, 61)
            protein.observe(rivals.protein_observation(overrides, base), 0.0, cost(rec), is_failure=False)
        with contextlib.redirect_stdout(io.StringIO()):
            protein.suggest(None)

    with pytest.raises(ValueError):
        search(lambda rec: rec["wall_time_s"])
    search(vr.protein_cost)
    assert vr.protein_cost({"uptime_s": None, "wall_time_s": 2.5}) == 2.5


def test_rl_zoo3_searches_stop_at_its_ten_start_up_trials_and_drex_opts_sampler_on_its_space_does_not(
        monkeypatch, tmp_path):
    """rl-zoo3's median pruner starts pruning after --n-startup-trials (rl-zoo3's default: 10)
    on evaluations the harness does not model, so rl-zoo3 runs as --n-trials 10; the
    ablation with drex-opt's sampler has no such pruner and fills its search budget."""
    steps = 100_000

    def fake_train(cfg, run_dir, env, launch, threads, load_model=None):
        return {"status": "completed", "agent_steps": steps, "wall_time_s": 1.0, "run_dir": str(run_dir),
                "grip_success": 0.1, "delivery_success": 0.0, "end_to_end_success": 0.0}

    monkeypatch.setattr(vr, "train", fake_train)
    base = config.load_baseline("quick")
    sampler = optuna.samplers.RandomSampler(seed=1)
    counts = {m: len(vr.ask_tell(m, base, 61, 20 * steps, steps, "drone_pp", tmp_path / m.replace(" ", "_"),
                                  None, 1, {}, sampler))
              for m in ("rl-zoo3 tpe", "rl-zoo3 random", "rl-zoo3 space, drex-opt sampler")}
    assert counts == {"rl-zoo3 tpe": 10, "rl-zoo3 random": 10, "rl-zoo3 space, drex-opt sampler": 20}


def test_the_every_seed_table_gives_each_searchs_trials_and_best_trial():
    search = [{"end_to_end_success": 0.25}, {"end_to_end_success": None}, {"end_to_end_success": 0.5}]
    assert vr.best_trial(search) == (3, "50.0%")
    assert vr.best_trial([{"end_to_end_success": None}]) == (1, "-")  # every trial failed
    assert vr.best_trial(None) == ("", "") and vr.best_trial([]) == ("", "")  # no search: continuing unchanged
