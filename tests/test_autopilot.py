"""`drex-opt autopilot`: the owner's loop end to end with tiny budgets."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from drex_opt import autopilot
from drex_opt.rules import config
from drex_opt.rules import safety
from drex_opt.run import checkpoint, metrics, runner

from cli_helpers import ROOT, run_cli







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
    assert f"| === " in second_entry and f"study {results[0]['study']['study_name']}" in second_entry
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
