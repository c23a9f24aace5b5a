"""``drex-opt analyze`` and ``drex-opt runs`` through typer's runner and the real console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drex_opt.rules import behavior
from drex_opt.cli import app

CONSOLE_SCRIPT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "drex-opt"

runner = CliRunner()

INPUTS = {
    "grip_success": 0.35,
    "delivery_success": 0.02,
    "end_to_end_success": 0.0,
    "grip_attempts": 0.6,
    "delivery_attempts": 0.1,
    "hover_efficiency": 0.2,
    "collision_rate": 0.03,
    "oob_rate": 0.1,
}


def summary(run_id: str, timestamp: str, grip: float, deliv: float, e2e: float, existing: dict | None = None) -> dict:
    extended = {k: INPUTS[k] for k in ("grip_attempts", "delivery_attempts", "hover_efficiency", "collision_rate", "oob_rate")}
    data = {
        "run_id": run_id, "timestamp": timestamp,
        "grip_success": grip, "delivery_success": deliv, "end_to_end_success": e2e,
        "mean_reward": 1.0, "episode_length": 900, "metrics_extended": extended,
    }
    if existing is not None:
        data["behavioral_analysis"] = existing
    return data


def write_run(root: Path, name: str, data: dict | str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return folder


def assert_one_line_error(result_code: int, stdout: str, stderr: str, *needles: str) -> None:
    assert result_code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0]


class TestAnalyze:
    def test_json_is_the_stored_analysis(self, tmp_path):
        stored = {"severity": "critical", "next_focus": "diagnostic_grip", "insights": ["stale"]}
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0, stored))
        result = runner.invoke(app, ["analyze", str(folder), "--json"])
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)
        ours = behavior.analyze(INPUTS)
        assert printed == {**stored, "analysis_source": "stored", "rules_analysis": ours,
                           "disagreement": behavior.disagreement(stored, ours)}
        assert ours["next_focus"] == "improve_carrying" and len(printed["disagreement"]) == 2

    def test_json_recompute_is_our_analysis(self, tmp_path):
        stored = {"severity": "critical", "next_focus": "diagnostic_grip", "insights": ["stale"]}
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0, stored))
        result = runner.invoke(app, ["analyze", str(folder), "--recompute", "--json"])
        assert result.exit_code == 0, result.output
        ours = behavior.analyze(INPUTS)
        assert json.loads(result.stdout) == {**ours, "analysis_source": "rules", "stored_analysis": stored,
                                             "disagreement": behavior.disagreement(stored, ours)}

    def test_json_without_a_stored_analysis(self, tmp_path):
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0))
        for extra in ([], ["--recompute"]):
            result = runner.invoke(app, ["analyze", str(folder), "--json", *extra])
            assert json.loads(result.stdout) == {**behavior.analyze(INPUTS), "analysis_source": "rules"}

    def test_human_view_with_disagreement(self, tmp_path):
        stored = {"severity": "critical", "next_focus": "diagnostic_grip"}
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0, stored))
        result = runner.invoke(app, ["analyze", str(folder)])
        assert result.exit_code == 0, result.output
        out = result.stdout
        # The stored analysis first, as the one used; the rules' reading after it.
        assert out.index("CRITICAL") < out.index("diagnostic_grip") < out.index("disagrees") < out.index("OK")
        assert "stored in the summary" in out and "--recompute" in out
        assert "improve_carrying" in out and "Can grip but cannot deliver" in out
        assert "35.0%" in out and "environment/perfect_grip" in out
        assert "'critical'" in out and "'diagnostic_grip'" in out

    def test_human_view_recomputed(self, tmp_path):
        stored = {"severity": "critical", "next_focus": "diagnostic_grip"}
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0, stored))
        out = runner.invoke(app, ["analyze", str(folder), "--recompute"]).stdout
        assert out.index("OK") < out.index("improve_carrying") < out.index("disagrees") < out.index("CRITICAL")
        assert "drex-opt's rules (--recompute" in out and "Stored analysis" in out

    def test_human_view_agreeing(self, tmp_path):
        stored = {"severity": "ok", "next_focus": "improve_carrying"}
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0, stored))
        out = runner.invoke(app, ["analyze", str(folder)]).stdout
        assert "agrees" in out and "disagrees" not in out

    def test_log_file(self, tmp_path):
        log = tmp_path / "train.log"
        raw = {"environment/perfect_grip": 0.0, "environment/to_pickup": 0.0}
        log.write_text("boot\n" + "12:00 " + json.dumps(raw) + "\n")
        result = runner.invoke(app, ["analyze", str(log), "--json"])
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)
        assert printed["severity"] == "critical" and printed["next_focus"] == "diagnostic_grip"

    def test_a_training_log_without_behaviour_statistics_is_explained_not_refused(self, tmp_path):
        # PuffeRL logged its own counters but the env never reported (a budget shorter than
        # its report interval): the drone was not observed, which is not a diagnosis.
        log = tmp_path / "train.log"
        log.write_text("boot\n" + json.dumps({"SPS": 3000.0, "agent_steps": 500_000, "losses/entropy": 1.1}) + "\n")
        result = runner.invoke(app, ["analyze", str(log), "--json"])
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)
        assert (printed["severity"], printed["next_focus"]) == ("not_observed", "train_longer")
        assert "not observed" in printed["insights"][0]

    def test_never_writes(self, tmp_path):
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0))
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        runner.invoke(app, ["analyze", str(folder)])
        runner.invoke(app, ["analyze", str(folder), "--json"])
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    @pytest.mark.parametrize(
        "content, needle",
        [("{not json", "not valid JSON"), ("", "empty"), ('{"foo": 1}', "no behaviour metrics"), ("[]", "JSON object")],
    )
    def test_bad_input_exit_2_one_line(self, tmp_path, content, needle):
        path = tmp_path / "summary.json"
        path.write_text(content)
        result = runner.invoke(app, ["analyze", str(path)])
        assert_one_line_error(result.exit_code, result.stdout, result.stderr, needle, str(path))

    def test_missing_path(self, tmp_path):
        result = runner.invoke(app, ["analyze", str(tmp_path / "nope"), "--json"])
        assert_one_line_error(result.exit_code, result.stdout, result.stderr, "not found")


class TestRuns:
    def make_history(self, root: Path) -> None:
        # Folder names sort opposite to time: the listing must follow the timestamps.
        write_run(root, "c", summary("c", "2025-11-26T10:00:00Z", 0.05, 0.0, 0.0))
        write_run(root, "b", summary("b", "2025-11-26T11:00:00Z", 0.35, 0.02, 0.0,
                                     {"severity": "ok", "next_focus": "tune_grip"}))
        write_run(root, "a", summary("a", "2025-11-26T12:00:00Z", 0.6, 0.4, 0.25))

    def test_step_columns_only_where_runs_have_them(self, tmp_path):
        self.make_history(tmp_path)
        plain = runner.invoke(app, ["runs", str(tmp_path)]).stdout
        assert "drone steps" not in plain and "run + study" not in plain
        data = json.loads((tmp_path / "a" / "summary.json").read_text())
        (tmp_path / "a" / "summary.json").write_text(json.dumps({**data, "drone_agent_steps": 3_500_000}))
        (tmp_path / "a" / "compute.json").write_text(json.dumps(
            {"run_agent_steps": 2_000_000, "study_agent_steps": 1_500_000, "loop_agent_steps": 7_000_000}))
        rows = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)
        assert rows[2]["drone_agent_steps"] == 3_500_000 and rows[2]["compute"]["study_agent_steps"] == 1_500_000
        assert rows[0]["compute"] is None and rows[0]["drone_agent_steps"] is None
        wide = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"}).stdout
        assert "drone steps" in wide and "3.50M" in wide and "2.00M + 1.50M = 7.00M" in wide

    def test_json_order_and_deltas(self, tmp_path):
        self.make_history(tmp_path)
        result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["run_id"] for r in rows] == ["c", "b", "a"]
        # b's summary stores tune_grip (the rules give improve_carrying): the stored one is shown.
        assert [r["next_focus"] for r in rows] == ["improve_grip", "tune_grip", "optimize_performance"]
        assert [r["analysis_source"] for r in rows] == ["rules", "stored", "rules"]
        assert [r["severity"] for r in rows] == ["warning", "ok", "ok"]
        assert rows[0]["delta"] == {"grip_success": None, "delivery_success": None, "end_to_end_success": None}
        assert rows[1]["delta"] == {"grip_success": 30.0, "delivery_success": 2.0, "end_to_end_success": 0.0}
        assert rows[2]["delta"] == {"grip_success": 25.0, "delivery_success": 38.0, "end_to_end_success": 25.0}
        assert set(rows[0]) >= {"run_id", "path", "timestamp", "grip_success", "delivery_success",
                                "end_to_end_success", "severity", "next_focus", "delta"}
        assert rows[2]["path"] == str(tmp_path / "a") and rows[2]["timestamp"] == "2025-11-26T12:00:00Z"
        assert rows[1]["disagreement"] and not rows[0]["disagreement"]
        recomputed = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--recompute", "--json"]).stdout)
        assert [r["next_focus"] for r in recomputed] == ["improve_grip", "improve_carrying", "optimize_performance"]
        assert recomputed[1]["disagreement"] == rows[1]["disagreement"]

    def test_human_table(self, tmp_path):
        self.make_history(tmp_path)
        result = runner.invoke(app, ["runs", str(tmp_path)])
        assert result.exit_code == 0, result.output
        out = result.stdout
        positions = [out.index(f"  {name} ") for name in ("c", "b *", "a")]
        assert positions == sorted(positions)
        assert "tune_grip" in out and "improve_carrying" not in out and "WARNING" in out
        assert "+30.0" in out and "+38.0" in out
        assert "the stored one is shown" in " ".join(out.split())
        out = runner.invoke(app, ["runs", str(tmp_path), "--recompute"]).stdout
        assert "improve_carrying" in out and "tune_grip" not in out and "rules are shown" in " ".join(out.split())

    def test_empty_dir(self, tmp_path):
        result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
        assert result.exit_code == 0 and json.loads(result.stdout) == []
        result = runner.invoke(app, ["runs", str(tmp_path)])
        assert result.exit_code == 0 and "No run folder" in result.stdout

    def test_missing_dir(self, tmp_path):
        result = runner.invoke(app, ["runs", str(tmp_path / "nope")])
        assert_one_line_error(result.exit_code, result.stdout, result.stderr, "not found")

    def test_default_dir(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        result = runner.invoke(app, ["runs", "--json"])
        assert_one_line_error(result.exit_code, result.stdout, result.stderr, "autopilot/runs")
        self.make_history(tmp_path / "autopilot" / "runs")
        result = runner.invoke(app, ["runs", "--json"])
        assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3

    def test_unreadable_run_is_a_warning_on_stderr(self, tmp_path):
        self.make_history(tmp_path)
        write_run(tmp_path, "broken", "{")
        result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
        assert result.exit_code == 0
        assert len(json.loads(result.stdout)) == 3
        assert result.stderr.startswith("warning: skipped") and "broken" in result.stderr


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="console script not installed")
class TestConsoleScript:
    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=60)

    @pytest.mark.parametrize(
        "content, needle", [("{\"grip_success\": 0.5,", "not valid JSON"), ("", "empty")]
    )
    def test_bad_file(self, tmp_path, content, needle):
        path = tmp_path / "summary.json"
        path.write_text(content)
        done = self.run("analyze", str(path))
        assert_one_line_error(done.returncode, done.stdout, done.stderr, needle, str(path))

    def test_missing_path(self, tmp_path):
        done = self.run("analyze", str(tmp_path / "missing"), "--json")
        assert_one_line_error(done.returncode, done.stdout, done.stderr, "not found")

    def test_missing_runs_dir(self, tmp_path):
        done = self.run("runs", str(tmp_path / "missing"))
        assert_one_line_error(done.returncode, done.stdout, done.stderr, "not found")

    def test_analyze_json_ok(self, tmp_path):
        folder = write_run(tmp_path, "r1", summary("r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0))
        done = self.run("analyze", str(folder), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {**behavior.analyze(INPUTS), "analysis_source": "rules"}
