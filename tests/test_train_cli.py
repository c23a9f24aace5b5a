"""`drex-opt train` through the real console script and real PufferLib training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drex_opt.rules import behavior
from drex_opt.run import metrics

from cli_helpers import ROOT, one_line_error as assert_one_line_error, run_cli as drex

QUICK = str(ROOT / "autopilot" / "configs" / "baseline_quick.json")






@pytest.mark.slow
def test_train_writes_a_complete_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = drex("train", "--config", QUICK, "--timesteps", "100000", "--seed", "3", "--run-dir", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert json.loads(proc.stdout) == summary
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["seed"] == 3 and summary["env"] == "drone_pp"
    assert summary["agent_steps"] >= 100_000
    assert summary["run_id"] == "run"
    for key in ("grip_success", "delivery_success", "end_to_end_success", "mean_reward", "episode_length"):
        assert isinstance(summary[key], float), key
    assert 0.0 <= summary["grip_success"] <= 1.0
    ext = summary["metrics_extended"]
    assert ext["SPS"] > 0 and ext["grip_attempts"] is not None and ext["value_loss"] is not None
    assert "environment/perfect_grip" in summary["metrics"] and "losses/policy_loss" in summary["metrics"]
    assert summary["history"] and summary["history"][-1]["agent_steps"] <= summary["agent_steps"]
    assert summary["behavioral_analysis"]["next_focus"] in behavior.FOCI
    # drex-opt's own runs carry drex-opt's analysis: read back, the rules give the same one.
    reading = metrics.run_analysis(metrics.read_run(run_dir))
    assert reading.source == "stored" and reading.rules == summary["behavioral_analysis"]
    assert Path(summary["checkpoint"]).is_file() and summary["checkpoint"].endswith("model.pt")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["total_timesteps"] == 100_000 and config["train"]["seed"] == 3
    log = (run_dir / "train.log").read_text()
    assert '@drex {"event": "start"' not in log or "progress" in log
    assert sum(1 for line in log.splitlines() if line.startswith("@drex ")) >= 2


@pytest.mark.slow
def test_train_honours_the_autopilot_environment(tmp_path):
    run_dir = tmp_path / "autopilot-run"
    copy = tmp_path / "elsewhere" / "summary.json"
    proc = drex("train", "--config", QUICK, "--timesteps", "30000",
                env={"PUFFER_AUTOPILOT_RUN_DIR": str(run_dir), "PUFFER_AUTOPILOT_SUMMARY": str(copy)})
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "summary.json").is_file()
    assert json.loads(copy.read_text())["run_id"] == "autopilot-run"


@pytest.mark.slow
def test_nan_weights_make_a_failed_run_with_a_partial_summary(tmp_path):
    run_dir = tmp_path / "nan"
    proc = drex("train", "--config", QUICK, "--timesteps", "2000000", "--run-dir", str(run_dir),
                env={"DREX_INJECT_FAULT": "nan"})
    assert proc.returncode == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "NaN" in summary["error"]
    assert summary["history"], "the progress before the failure is kept"
    assert summary["agent_steps"] < 2_000_000


@pytest.mark.slow
def test_a_crashing_child_is_a_failed_run(tmp_path):
    run_dir = tmp_path / "crash"
    proc = drex("train", "--config", QUICK, "--timesteps", "2000000", "--run-dir", str(run_dir),
                env={"DREX_INJECT_FAULT": "crash"})
    assert proc.returncode == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "injected crash" in summary["error"]
    assert "Traceback" in (run_dir / "train.log").read_text()  # the child's traceback is in the log


def test_a_run_that_fails_before_its_first_report_does_not_blame_the_drone(tmp_path):
    """A checkpoint that cannot be loaded stops the child before any metric: the summary says the
    run failed, not that the drone did; analyze shows it and a study refuses to take a focus from it."""
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a torch checkpoint")
    run_dir = tmp_path / "run"
    proc = drex("train", "--config", QUICK, "--timesteps", "5000", "--run-dir", str(run_dir),
                "--load-model-path", str(bad), "--json")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["agent_steps"] == 0 and summary["history"] == []
    analysis = summary["behavioral_analysis"]
    assert (analysis["severity"], analysis["next_focus"]) == ("failed", "fix_run")
    assert analysis["missing_metrics"] == list(behavior.INPUTS) and analysis["grip_efficiency"] == 0.0
    assert "failed before its first report" in analysis["insights"][0]
    assert summary["error"].split(":")[0] in analysis["insights"][0]
    assert "diagnostic_grip" not in json.dumps(summary)

    shown = drex("analyze", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert "FAILED" in shown.stdout and "fix_run" in shown.stdout and "stored in the summary" in shown.stdout
    as_json = json.loads(drex("analyze", str(run_dir), "--json").stdout)
    assert as_json == {**analysis, "analysis_source": "stored"}  # the rules read the run the same way

    db = tmp_path / "x.db"
    refused = drex("study", "--from-run", str(run_dir), "--storage", f"sqlite:///{db}", cwd=tmp_path, timeout=120)
    assert_one_line_error(refused, str(run_dir), "'fix_run'", "--focus")
    assert not db.exists() and not (tmp_path / "studies").exists()


# Long enough for the first progress report on a loaded two-core machine; the test waits for
# the kill, never for a clock, and a timeout that fires before the hang fails it loudly.
HANG_TIMEOUT_S = 45


def drex_events(log: str, kind: str) -> list[dict]:
    """The ``@drex`` events of ``kind`` in a train.log, in order."""
    events = [json.loads(line[len("@drex "):]) for line in log.splitlines() if line.startswith("@drex {")]
    return [event for event in events if event.get("event") == kind]


@pytest.mark.slow
def test_a_hung_child_is_killed_at_the_timeout(tmp_path):
    """The child reports progress, announces the hang, hangs; the parent kills it at --timeout."""
    run_dir = tmp_path / "hang"
    proc = drex("train", "--config", QUICK, "--timesteps", "2000000", "--run-dir", str(run_dir),
                "--timeout", str(HANG_TIMEOUT_S), env={"DREX_INJECT_FAULT": "hang"})
    assert proc.returncode == 1, proc.stderr
    log = (run_dir / "train.log").read_text()
    faults = drex_events(log, "fault")
    assert [f["fault"] for f in faults] == ["hang"], (
        f"the hang was never injected before the {HANG_TIMEOUT_S} s timeout; train.log ends:\n{log[-3000:]}")
    assert not drex_events(log, "final"), "a hung child never finishes"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "timeout"
    assert "timeout" in summary["error"] and f"{HANG_TIMEOUT_S} s" in summary["error"], summary["error"]
    assert summary["history"], "the progress before the hang is kept"
    assert summary["history"][-1]["agent_steps"] <= faults[0]["agent_steps"]
    import psutil

    leftover = [p for p in psutil.process_iter(["cmdline"]) if str(run_dir) in " ".join(p.info["cmdline"] or [])]
    assert leftover == [], "the child process group was stopped"


@pytest.mark.slow
def test_a_pufferlib_env_by_name(tmp_path):
    """--env trains an environment of the installed PufferLib with the same summary."""
    run_dir = tmp_path / "foreign"
    proc = drex("train", "--config", QUICK, "--timesteps", "3000", "--env", "puffer_pysquared",
                "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env"] == "puffer_pysquared"
    assert summary["agent_steps"] >= 3000
    assert summary["grip_success"] is None  # that env logs no drone statistics
    assert "grip_success" in summary["behavioral_analysis"]["missing_metrics"]
    # Completed, and the env reported, but nothing it reports is a behaviour input: not a
    # diagnosis ("critical: not attempting to grip"), and not "train longer" either.
    assert summary["logged"] == ["reward"] and "grip_attempts" in summary["not_logged"]
    assert summary["behavioral_analysis"]["severity"] == "not_observed"
    assert summary["behavioral_analysis"]["next_focus"] == "name_a_focus"
    assert "reward" in summary["behavioral_analysis"]["insights"][0]
    assert any("num_drones" in note for note in summary["notes"])


def test_missing_config(tmp_path):
    assert_one_line_error(drex("train", "--config", str(tmp_path / "nope.json")), "nope.json")


def test_malformed_config(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert_one_line_error(drex("train", "--config", str(bad)), "bad.json")


def test_invalid_override_names_the_key(tmp_path):
    override = tmp_path / "override.json"
    override.write_text(json.dumps({"train": {"learning_rate": 2.0}, "env": {"reward_grip": 1}}))
    run_dir = tmp_path / "run"
    proc = drex("train", "--config", QUICK, "--override", str(override), "--run-dir", str(run_dir))
    assert_one_line_error(proc, "train.learning_rate", "env.reward_grip")
    assert not run_dir.exists(), "nothing is written before the config validates"


def test_unknown_env(tmp_path):
    assert_one_line_error(drex("train", "--config", QUICK, "--env", "puffer_nonexistent", "--run-dir",
                               str(tmp_path / "r")), "puffer_nonexistent")


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(drex("train", "--config", QUICK, "--run-dir", str(blocker / "run")), "run dir")


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(drex("train", "--config", QUICK, "--load-model-path", str(tmp_path / "x.pt"),
                               "--run-dir", str(tmp_path / "r")), "x.pt")


def test_help_is_fast_and_lists_commands():
    proc = drex("--help")
    assert proc.returncode == 0
    for command in ("train", "analyze", "runs", "validate", "spaces"):
        assert command in proc.stdout
    # --help must not import the heavy libraries
    probe = subprocess.run([sys.executable, "-c", "import sys; from drex_opt import cli; "
                            "print(sorted(m for m in ('torch', 'pufferlib', 'optuna') if m in sys.modules))"],
                           capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_budget_below_one_batch_trains_one_batch(tmp_path):
    """The brief allows 1,000 steps; PufferLib needs at least one batch."""
    run_dir = tmp_path / "tiny"
    proc = drex("train", "--config", QUICK, "--timesteps", "1000", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["agent_steps"] >= 1000
    assert any("below one batch" in note for note in summary["notes"])
