"""`drex-opt autopilot`: the owner's loop end to end with tiny budgets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drex_opt import autopilot
from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.run import checkpoint, metrics, runner

from cli_helpers import run_cli







def runs_of(root: Path) -> list[Path]:
    return sorted(p for p in (root / "autopilot" / "runs").iterdir() if p.is_dir())


def start_event(run_dir: Path) -> dict:
    for line in (run_dir / "train.log").read_text().splitlines():
        if line.startswith("@drex ") and '"event": "start"' in line:
            return json.loads(line[6:])
    raise AssertionError("no start event")


@pytest.mark.slow
def test_two_iterations_with_optimize(pilot):
    proc = run_cli("autopilot", "--mode", "quick", "--runs", "2", "--optimize", "--timesteps", "150000",
                   "--study-trials", "2", "--study-timesteps", "120000",
                   "--storage", f"sqlite:///{pilot}/s.db", "--json", cwd=pilot)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == 2
    runs = runs_of(pilot)
    assert [r.name for r in runs] == [r["run_id"] for r in results]
    base = config.load_baseline(pilot / "autopilot" / "configs" / "baseline_quick.json")
    for run, result in zip(runs, results):
        for name in ("config.json", "override.json", "summary.json", "train.log", "notes.txt", "model.pt"):
            assert (run / name).is_file(), name
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["behavioral_analysis"]["next_focus"]
        assert (pilot / "autopilot" / "logs" / f"{run.name}.log").read_text() == (run / "train.log").read_text()
        env = start_event(run)["autopilot_env"]
        assert env["PUFFER_AUTOPILOT_RUN_ID"] == run.name
        assert Path(env["PUFFER_AUTOPILOT_SUMMARY"]) == (run / "summary.json").resolve()
        text = (run / "notes.txt").read_text()
        assert f"run {run.name}" in text and "Behaviour: severity" in text and "What won: trial" in text
        assert result["study"]["states"] and result["export"]["out"].endswith("next_config.json")
    # the first run's exported winner is what the second run trained with, and its entry says why
    assert json.loads((runs[1] / "override.json").read_text()) == results[0]["export"]["overrides"]
    assert "Why: no notes came with the proposal." in (runs[0] / "notes.txt").read_text()
    second_entry = re.split(r"^=== ", (runs[1] / "notes.txt").read_text(), flags=re.M)[1]
    assert "Why (the proposal's notes):" in second_entry
    assert "| === " in second_entry and f"study {results[0]['study']['study_name']}" in second_entry
    # the second run's export is the proposal now waiting, with its own notes
    why = pilot / "autopilot" / "proposals" / "next_config.notes.md"
    assert f"study {results[1]['study']['study_name']}" in why.read_text()
    second = json.loads((runs[1] / "config.json").read_text())
    assert second == safety.merge(base, {**results[0]["export"]["overrides"],
                                         "train": {**results[0]["export"]["overrides"]["train"],
                                                   "total_timesteps": 150000}})
    proposal = json.loads((pilot / "autopilot" / "proposals" / "next_config.json").read_text())
    assert proposal == results[1]["export"]["overrides"] and safety.validate(proposal, base) == []
    assert (pilot / "autopilot" / "runs" / "best.json").is_file()
    assert (pilot / "autopilot" / "models" / "best.pt").is_file()


@pytest.mark.slow
def test_resume_from_best_and_save_all(pilot):
    proposals = pilot / "autopilot" / "proposals"
    proposals.mkdir(parents=True)
    (proposals / "next_config.json").write_text(json.dumps({"autopilot": {"save_strategy": "all"}}))
    assert run_cli("autopilot", "--timesteps", "120000", cwd=pilot).returncode == 0
    assert json.loads((proposals / "next_config.json").read_text()) == {}, "reset when the run starts"
    first = runs_of(pilot)[0]
    models = pilot / "autopilot" / "models"
    kept = {"best.pt", "latest.pt", f"{first.name}.pt"}
    # Each checkpoint travels with its optimizer state and lineage (how far the drone has trained).
    assert {p.name for p in models.iterdir()} == kept | {
        p.replace(".pt", suffix) for p in kept for suffix in (".optimizer.pt", ".lineage.json")}
    assert checkpoint.steps_seen(models / "best.pt") == json.loads((first / "summary.json").read_text())["agent_steps"]
    best = json.loads((pilot / "autopilot" / "runs" / "best.json").read_text())
    assert best["run_id"] == first.name
    (proposals / "next_config.json").write_text(json.dumps({"autopilot": {"resume_mode": "continue",
                                                                           "resume_from": "best"}}))
    proc = run_cli("autopilot", "--timesteps", "120000", cwd=pilot)
    assert proc.returncode == 0, proc.stderr
    second = runs_of(pilot)[1]
    assert Path(start_event(second)["load_model"]).resolve() == (models / "best.pt").resolve()


def test_missing_checkpoint_stops_before_running(pilot):
    proposals = pilot / "autopilot" / "proposals"
    proposals.mkdir(parents=True)
    proposal = json.dumps({"autopilot": {"resume_mode": "continue", "resume_from": "best"}})
    (proposals / "next_config.json").write_text(proposal)
    proc = run_cli("autopilot", "--timesteps", "120000", cwd=pilot)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert not (pilot / "autopilot" / "runs").exists()
    assert (proposals / "next_config.json").read_text() == proposal


@pytest.mark.parametrize("proposal, fragment", [
    ('{"train": {"learning_rate": 2.0}}', "train.learning_rate: 2.0 is above the maximum 1.0"),
    ('{"env": {"reward_grip": 1}}', "env.reward_grip"),
    ('{"train": {"anneal_lr": "true"}}', "train.anneal_lr"),
    ('{"train": ', "not valid JSON"),
])
def test_an_invalid_proposal_stops_the_loop_with_exit_2(pilot, proposal, fragment):
    proposals = pilot / "autopilot" / "proposals"
    proposals.mkdir(parents=True)
    (proposals / "next_config.json").write_text(proposal)
    proc = run_cli("autopilot", "--runs", "3", "--timesteps", "120000", cwd=pilot)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "next_config.json" in lines[0]
    assert not (pilot / "autopilot" / "runs").exists(), "nothing ran"
    assert (proposals / "next_config.json").read_text() == proposal, "the user's file is untouched"


def test_unknown_mode_and_missing_baseline(pilot, tmp_path):
    proc = run_cli("autopilot", "--mode", "medium", cwd=pilot)
    assert proc.returncode == 2 and "--mode" in proc.stderr
    proc = run_cli("autopilot", "--autopilot-dir", str(tmp_path / "nowhere"), cwd=pilot)
    assert proc.returncode == 2 and "baseline not found" in proc.stderr


@pytest.mark.parametrize("optimize", [False, True])
def test_a_completed_run_whose_drone_was_not_observed_gets_no_study(pilot, monkeypatch, optimize):
    """No statistic arrived (an env that reports none, a budget below its report interval):
    the next step says so instead of sending the user to study focus train_longer."""
    def train_without_statistics(cfg, run_dir, *args, **kwargs):
        summary = {"run_id": run_dir.name, "status": "completed", "error": None, "agent_steps": 3000,
                   "wall_time_s": 1.0, "checkpoint": None, "metrics": {"SPS": 1.0},
                   **metrics.named_metrics({"SPS": 1.0}, status="completed")}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return runner.TrainResult(run_dir=run_dir, summary=summary, summary_path=run_dir / "summary.json")

    monkeypatch.setattr(autopilot.runner, "run_training", train_without_statistics)
    settings = autopilot.AutopilotSettings(autopilot_dir=pilot / "autopilot", optimize=optimize,
                                           storage=f"sqlite:///{pilot}/s.db")
    result = autopilot.run_iteration(autopilot.Autopilot(settings.autopilot_dir, "quick"), settings, 0)
    assert result.summary["behavioral_analysis"]["next_focus"] == "train_longer"
    notes = " ".join(Path(result.note).read_text().split())
    assert "Behaviour: severity not_observed, next focus train_longer" in notes
    next_step = notes[notes.index("Next step:"):]
    assert "no study" in next_step and "not observed" in next_step and "total_timesteps" in next_step
    assert "drex-opt study" not in next_step and "search focus" not in next_step
    assert result.study is None and not (pilot / "s.db").exists()
    assert bool(result.problems) == optimize


def test_a_run_is_clearly_behind_only_beyond_noise_on_the_first_objective_that_differs():
    from drex_opt.rules.objectives import clearly_behind
    best = {"grip_success": 1.0, "delivery_success": 0.99, "end_to_end_success": 0.96}
    # The owner's product is a drone that delivers: end-to-end success decides first.
    assert clearly_behind({**best, "end_to_end_success": 0.58}, best)
    assert not clearly_behind({**best, "end_to_end_success": 0.93}, best), "3 points is noise"
    assert not clearly_behind({"grip_success": 0.9, "delivery_success": 0.9, "end_to_end_success": 0.85},
                              {"grip_success": 1.0, "delivery_success": 1.0, "end_to_end_success": 0.70}), \
        "ahead on end to end: the later objectives do not matter"
    # Both at ~0% end to end: delivery, then grip, decide.
    carrying = {"grip_success": 0.95, "delivery_success": 0.30, "end_to_end_success": 0.0}
    assert clearly_behind({**carrying, "delivery_success": 0.10}, carrying)
    assert clearly_behind({**carrying, "grip_success": 0.40}, carrying)
    assert not clearly_behind(carrying, {**carrying, "grip_success": 0.97})
    # A run without a measured objective trails one that has it; missing on the other side decides nothing.
    assert clearly_behind({}, carrying)
    assert not clearly_behind(carrying, {})


def fake_training(results: list[dict]):
    """run_training stand-in: each call writes the next summary of ``results`` and a checkpoint file."""
    calls = iter(results)

    def train(cfg, run_dir, *args, **kwargs):
        values = next(calls)
        (run_dir / "model.pt").write_bytes(b"weights of " + run_dir.name.encode())
        (run_dir / "config.json").write_text(json.dumps(cfg))
        summary = {"run_id": run_dir.name, "status": "completed", "error": None, "agent_steps": 16384,
                   "wall_time_s": 1.0, "checkpoint": str(run_dir / "model.pt"), "metrics": {"SPS": 1.0},
                   **values, "behavioral_analysis": {"next_focus": "improve_carrying", "severity": "warning"}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return runner.TrainResult(run_dir=run_dir, summary=summary, summary_path=run_dir / "summary.json")
    return train


@pytest.mark.parametrize("second_e2e, second_env, goes_back",
                         [(0.40, "drone_pp", True), (0.87, "drone_pp", False), (0.40, "drone_pp_hard", False)])
def test_the_loop_continues_its_best_drone_when_a_run_falls_behind_it(pilot, monkeypatch, second_e2e, second_env,
                                                                       goes_back):
    """A generation that fell behind the best kept drone of its env beyond noise is not built
    on: the study (here a stand-in) and the kept proposal continue the best run's drone."""
    good = {"grip_success": 1.0, "delivery_success": 0.99, "end_to_end_success": 0.90, "env": "drone_pp"}
    monkeypatch.setattr(autopilot.runner, "run_training",
                        fake_training([good, {**good, "end_to_end_success": second_e2e, "env": second_env}]))
    studied: list = []
    monkeypatch.setattr(autopilot, "optimize_after",
                        lambda pilot_, settings_, run_dir, out, ledger=None, drone_dir=None, drone=None:
                        studied.append((run_dir, drone_dir, drone["end_to_end_success"])))
    settings = autopilot.AutopilotSettings(autopilot_dir=pilot / "autopilot", optimize=True)
    ap = autopilot.Autopilot(settings.autopilot_dir, "quick")
    first = autopilot.run_iteration(ap, settings, 0)
    second = autopilot.run_iteration(ap, settings, 1)
    first_dir, second_dir = Path(first.run_dir), Path(second.run_dir)
    assert studied[0] == (first_dir, first_dir, 0.90)
    proposal = json.loads(ap.proposal_path.read_text())
    entry = " ".join((second_dir / "notes.txt").read_text().split())
    if goes_back:
        assert studied[1] == (second_dir, first_dir, 0.90)
        assert second.went_back_to == str(first_dir)
        assert proposal["autopilot"]["resume_from"] == str((first_dir / "model.pt").resolve())
        assert f"fell behind the best kept drone, run {first_dir.name} (90.0%)" in entry
        assert f"continues the drone of run {first_dir.name}, the best kept," in entry
    else:
        assert studied[1] == (second_dir, second_dir, second_e2e)
        assert second.went_back_to is None and "fell behind" not in entry
        assert proposal["autopilot"]["resume_from"] == str((second_dir / "model.pt").resolve())


@pytest.mark.slow
def test_a_generation_behind_the_best_kept_drone_studies_that_drone(pilot):
    """Through real runs and a real study: the first run is recorded as a 90% drone, the
    second (a fresh 120k-step drone) trails it, so the study's trials continue the first."""
    assert run_cli("autopilot", "--timesteps", "120000", cwd=pilot).returncode == 0
    first = runs_of(pilot)[0]
    for path in (first / "summary.json", pilot / "autopilot" / "runs" / "best.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "grip_success": 1.0, "delivery_success": 0.95,
                                    "end_to_end_success": 0.9}))
    storage = f"sqlite:///{pilot}/s.db"
    proc = run_cli("autopilot", "--optimize", "--timesteps", "120000", "--study-trials", "2",
                   "--study-timesteps", "100000", "--storage", storage, "--json", cwd=pilot)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    second = runs_of(pilot)[1]
    assert result["run_id"] == second.name and result["summary"]["end_to_end_success"] < 0.85
    assert (pilot / result["went_back_to"]).resolve() == first.resolve()
    import optuna
    study = optuna.load_study(study_name=result["study"]["study_name"], storage=storage)
    assert Path(study.user_attrs["from_run"]) == first.resolve()
    started = {Path(t.user_attrs["warm_start"]).resolve() for t in study.trials if t.user_attrs.get("warm_start")}
    assert started == {(first / "model.pt").resolve()}
    proposal = json.loads((pilot / "autopilot" / "proposals" / "next_config.json").read_text())
    assert proposal["autopilot"]["resume_mode"] == "continue"
    assert Path(proposal["autopilot"]["resume_from"]).resolve() in {
        Path(t.user_attrs["checkpoint"]).resolve() for t in study.trials if t.user_attrs.get("checkpoint")}
    assert f"fell behind the best kept drone, run {first.name}" in " ".join((second / "notes.txt").read_text().split())
