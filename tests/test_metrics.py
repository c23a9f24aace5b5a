"""Reading runs: every input format of read_run, named_metrics, list_runs and run_history."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drex_opt.rules import behavior
from drex_opt.errors import UserError
from drex_opt.run import runner
from drex_opt.run.metrics import (NAMED_FROM_RAW, RunList, list_runs, named_metrics, read_run, run_analysis,
                                  run_history)

RAW = {
    "environment/perfect_grip": 0.42,
    "environment/perfect_deliv": 0.05,
    "environment/perfect_now": 0.01,
    "environment/to_pickup": 0.6,
    "environment/to_drop": 0.1,
    "environment/ho_pickup": 0.2,
    "environment/collision_rate": 0.03,
    "environment/oob": 0.7,
    "environment/episode_return": 12.5,
    "environment/episode_length": 800,
    "environment/score": 3.0,
    "losses/policy_loss": -0.01,
    "losses/value_loss": 0.5,
    "losses/entropy": 1.2,
    "losses/approx_kl": 0.002,
    "losses/clipfrac": 0.1,
    "losses/explained_variance": 0.8,
    "SPS": 250000.0,
    "agent_steps": 1048576,
}

EXPECTED_INPUTS = {
    "grip_success": 0.42,
    "delivery_success": 0.05,
    "end_to_end_success": 0.01,
    "grip_attempts": 0.6,
    "delivery_attempts": 0.1,
    "hover_efficiency": 0.2,
    "collision_rate": 0.03,
    "oob_rate": 0.7,
}


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def autopilot_summary(**changes) -> dict:
    """A summary shaped like the ones the owner's autopilot loop writes."""
    summary = {
        "run_id": "2025-11-26T120000Z",
        "timestamp": "2025-11-26T12:00:00Z",
        "seed": 1,
        "grip_success": 0.42,
        "delivery_success": 0.05,
        "end_to_end_success": 0.01,
        "mean_reward": 3.0,
        "episode_length": 800,
        "metrics_extended": {
            "grip_attempts": 0.6, "delivery_attempts": 0.1, "hover_efficiency": 0.2,
            "collision_rate": 0.03, "oob_rate": 0.7, "SPS": 250000.0, "policy_loss": -0.01,
        },
        "behavioral_analysis": {"insights": ["old"], "severity": "ok", "next_focus": "improve_carrying"},
        "trainer_summary": {"metrics": {}},
        "notes": "auto-generated run summary",
    }
    summary.update(changes)
    return summary


def test_named_from_raw():
    assert NAMED_FROM_RAW["grip_success"] == "environment/perfect_grip"
    assert NAMED_FROM_RAW["end_to_end_success"] == "environment/perfect_now"
    assert NAMED_FROM_RAW["oob_rate"] == "environment/oob"
    assert NAMED_FROM_RAW["mean_reward"] == "environment/episode_return"
    assert set(behavior.INPUTS) <= set(NAMED_FROM_RAW)


class TestNamedMetrics:
    def test_full_log(self):
        fields = named_metrics(RAW)
        assert fields["grip_success"] == 0.42
        assert fields["delivery_success"] == 0.05
        assert fields["end_to_end_success"] == 0.01
        assert fields["mean_reward"] == 12.5
        assert fields["episode_length"] == 800
        ext = fields["metrics_extended"]
        assert ext["grip_attempts"] == 0.6 and ext["oob_rate"] == 0.7 and ext["hover_efficiency"] == 0.2
        assert ext["SPS"] == 250000.0 and ext["agent_steps"] == 1048576
        assert ext["policy_loss"] == -0.01 and ext["explained_variance"] == 0.8 and ext["clipfrac"] == 0.1

    def test_carries_the_analysis(self):
        fields = named_metrics(RAW)
        assert fields["behavioral_analysis"] == behavior.analyze(EXPECTED_INPUTS)
        assert fields["behavioral_analysis"]["next_focus"] == "improve_carrying"

    def test_absent_and_unusable_values_are_none(self):
        fields = named_metrics({"environment/perfect_grip": float("nan"), "environment/oob": True, "SPS": "fast"})
        assert fields["grip_success"] is None and fields["mean_reward"] is None
        assert fields["metrics_extended"]["oob_rate"] is None
        assert fields["metrics_extended"]["SPS"] is None
        assert fields["metrics_extended"]["value_loss"] is None
        assert fields["behavioral_analysis"]["missing_metrics"] == list(behavior.INPUTS)

    @pytest.mark.parametrize("status", ["failed", "timeout"])
    def test_nothing_observed_in_a_run_that_did_not_complete(self, status):
        fields = named_metrics({"SPS": 10.0}, status=status, error="RuntimeError: no such device")
        analysis = fields["behavioral_analysis"]
        assert (analysis["severity"], analysis["next_focus"]) == ("failed", "fix_run")
        assert "no such device" in analysis["insights"][0]
        assert analysis == behavior.unobserved(status, "RuntimeError: no such device")

    def test_nothing_observed_in_a_completed_run(self):
        analysis = named_metrics({"environment/score": 1.0}, status="completed")["behavioral_analysis"]
        assert (analysis["severity"], analysis["next_focus"]) == ("not_observed", "train_longer")

    def test_one_observed_input_in_a_failed_run_is_diagnosed(self):
        analysis = named_metrics({"environment/to_pickup": 0.0}, status="failed", error="x")["behavioral_analysis"]
        assert analysis == behavior.analyze({"grip_attempts": 0.0})
        assert (analysis["severity"], analysis["next_focus"]) == ("critical", "diagnostic_grip")

    def test_numpy_values_become_json_numbers(self):
        import numpy as np

        fields = named_metrics({"environment/perfect_grip": np.float32(0.5), "agent_steps": np.int64(7)})
        assert type(fields["grip_success"]) is float and type(fields["metrics_extended"]["agent_steps"]) is int
        json.dumps(fields, allow_nan=False)


class TestDrexSummary:
    def test_named_fields_with_raw_fallback(self, tmp_path):
        path = write(tmp_path / "run7" / "summary.json", {
            "run_id": "run7",
            "timestamp": "2025-11-26T10:00:00+00:00",
            "status": "completed",
            "grip_success": 0.42, "delivery_success": 0.05, "end_to_end_success": 0.01,
            "mean_reward": 12.5, "episode_length": 800,
            "metrics_extended": {"grip_attempts": 0.6, "delivery_attempts": 0.1, "hover_efficiency": 0.2,
                                 "collision_rate": 0.03, "oob_rate": None},
            "metrics": {"environment/oob": 0.7, "environment/perfect_grip": 0.99},
        })
        run = read_run(path)
        assert run.source == "drex_summary"
        assert run.inputs == EXPECTED_INPUTS  # oob from the raw metrics; named grip wins over raw
        assert run.run_id == "run7" and run.timestamp == "2025-11-26T10:00:00+00:00"
        assert run.extra == {"mean_reward": 12.5, "episode_length": 800, "status": "completed"}
        assert run.existing_analysis is None
        assert run.file == path


class TestAutopilotSummary:
    def test_reads_fields_and_existing_analysis(self, tmp_path):
        path = write(tmp_path / "summary.json", autopilot_summary())
        run = read_run(path)
        assert run.source == "autopilot_summary"
        assert run.inputs == EXPECTED_INPUTS
        assert run.existing_analysis == {"insights": ["old"], "severity": "ok", "next_focus": "improve_carrying"}
        assert run.run_id == "2025-11-26T120000Z"
        assert run.timestamp == "2025-11-26T12:00:00Z"
        assert run.extra["mean_reward"] == 3.0 and run.extra["SPS"] == 250000.0

    def test_trainer_metrics_fill_gaps(self, tmp_path):
        summary = autopilot_summary(grip_success=None, end_to_end_success=None)
        summary["metrics_extended"]["oob_rate"] = None
        del summary["metrics_extended"]["collision_rate"]
        summary["trainer_summary"] = {"metrics": {
            "environment/perfect_grip": 0.42,  # prefixed raw key
            "perfect_now": 0.01,               # bare raw key
            "oob_rate": 0.7,                   # named key
            "environment/collision_rate": 0.03,
        }}
        run = read_run(write(tmp_path / "summary.json", summary))
        assert run.inputs == EXPECTED_INPUTS

    def test_nan_literals_are_read_as_missing(self, tmp_path):
        path = write(tmp_path / "summary.json", json.dumps(autopilot_summary(grip_success=float("nan"))))
        assert "NaN" in path.read_text()
        run = read_run(path)
        assert "grip_success" in behavior.analyze(run.inputs)["missing_metrics"]

    def test_garbage_value_kept_for_the_analysis_to_report(self, tmp_path):
        run = read_run(write(tmp_path / "summary.json", autopilot_summary(delivery_success="n/a")))
        assert run.inputs["delivery_success"] == "n/a"
        assert behavior.analyze(run.inputs)["missing_metrics"] == ["delivery_success"]

    def test_reading_never_changes_the_file(self, tmp_path):
        path = write(tmp_path / "summary.json", autopilot_summary())
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        read_run(path)
        read_run(tmp_path)
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before


class TestStoredAnalysis:
    def test_a_stored_analysis_alone_is_enough(self, tmp_path):
        stored = {"severity": "failed", "next_focus": "fix_run", "insights": ["Run failed before its first report"]}
        path = write(tmp_path / "r" / "summary.json", {"run_id": "r", "status": "failed", "error": "boom",
                                                       "grip_success": None, "behavioral_analysis": stored})
        run = read_run(path)
        assert all(value is None for value in run.inputs.values())
        assert run.existing_analysis == stored and run.extra == {"status": "failed", "error": "boom"}
        reading = run_analysis(run)
        assert reading.source == "stored" and reading.analysis == stored
        assert reading.rules == behavior.unobserved("failed", "boom") and reading.disagreement == []

    @pytest.mark.parametrize("stored", [{"severity": "ok"}, "ok", None])
    def test_no_metric_and_no_usable_stored_analysis_is_refused(self, tmp_path, stored):
        path = write(tmp_path / "summary.json", {"grip_success": None, "behavioral_analysis": stored})
        with pytest.raises(UserError, match="no behaviour metrics"):
            read_run(path)

    def test_owner_summary_uses_the_stored_focus(self, tmp_path):
        summary = autopilot_summary(behavioral_analysis={"severity": "ok", "next_focus": "optimize_performance"})
        run = read_run(write(tmp_path / "summary.json", summary))
        reading = run_analysis(run)
        assert reading.source == "stored" and reading.analysis["next_focus"] == "optimize_performance"
        assert reading.rules == behavior.analyze(EXPECTED_INPUTS)
        assert reading.rules["next_focus"] == "improve_carrying"
        assert run_analysis(run, recompute=True).analysis == reading.rules

    def test_a_malformed_stored_analysis_is_not_used(self, tmp_path):
        run = read_run(write(tmp_path / "summary.json", autopilot_summary(behavioral_analysis=["ok"])))
        reading = run_analysis(run)
        assert reading.source == "rules" and reading.analysis == behavior.analyze(EXPECTED_INPUTS)
        assert "list, not an object" in reading.note


def finish(tmp_path: Path, name: str, state: dict) -> Path:
    """The summary ``runner._finish`` writes for a follower that saw ``state``."""
    from types import SimpleNamespace

    run_dir = tmp_path / name
    run_dir.mkdir()
    follower = SimpleNamespace(state={"status": None, "error": None, "final": None, "last": {}, "start": {}, **state},
                               history=[], timestamp="2025-11-26T10:00:00+00:00", started=0.0)
    runner._finish(run_dir, {"train": {"seed": 1, "total_timesteps": 1000}}, "drone_pp", follower, None)
    return run_dir


class TestDrexSummariesCarryOurAnalysis:
    """A summary drex-opt wrote holds the analysis its rules give again when read back."""

    @pytest.mark.parametrize("state", [
        {"status": "completed", "final": {"event": "final", "checkpoint": "m.pt", **RAW}},
        {"status": "failed", "error": "RuntimeError: no such device"},
        {"status": "completed", "final": {"event": "final", "SPS": 1.0, "agent_steps": 10}},
        {"status": "timeout", "error": "killed after the 5 s timeout", "last": {"event": "progress", **RAW}},
    ], ids=["completed", "failed-at-start", "completed-unobserved", "timeout-after-reports"])
    def test_stored_equals_recomputed(self, tmp_path, state):
        run_dir = finish(tmp_path, "run", state)
        stored = json.loads((run_dir / "summary.json").read_text())["behavioral_analysis"]
        run = read_run(run_dir)
        assert run.source == "drex_summary"
        reading = run_analysis(run)
        assert reading.source == "stored" and reading.analysis == stored
        assert reading.rules == stored and reading.disagreement == []
        assert run_analysis(run, recompute=True).analysis == stored

    def test_a_run_that_failed_at_start_is_not_diagnosed(self, tmp_path):
        run_dir = finish(tmp_path, "run", {"status": "failed", "error": "RuntimeError: no such device"})
        analysis = json.loads((run_dir / "summary.json").read_text())["behavioral_analysis"]
        assert (analysis["severity"], analysis["next_focus"]) == ("failed", "fix_run")
        assert "no such device" in analysis["insights"][0]


class TestRunFolder:
    def test_uses_summary_json(self, tmp_path):
        folder = tmp_path / "myrun"
        write(folder / "summary.json", autopilot_summary(run_id=None))
        write(folder / "train.log", '{"environment/perfect_grip": 0.9}\n')
        run = read_run(folder)
        assert run.source == "autopilot_summary" and run.inputs["grip_success"] == 0.42
        assert run.run_id == "myrun" and run.path == folder

    def test_falls_back_to_train_log(self, tmp_path):
        folder = tmp_path / "myrun"
        write(folder / "train.log", json.dumps(RAW) + "\n")
        write(folder / "other.log", '{"environment/perfect_grip": 0.9}\n')
        run = read_run(folder)
        assert run.source == "log" and run.inputs == EXPECTED_INPUTS
        assert run.run_id == "myrun" and run.file == folder / "train.log"

    def test_falls_back_to_newest_log(self, tmp_path):
        folder = tmp_path / "myrun"
        old = write(folder / "a.log", '{"environment/perfect_grip": 0.1}\n')
        write(folder / "b.log", '{"environment/perfect_grip": 0.2}\n')
        os.utime(old, (2_000_000_000, 2_000_000_000))
        assert read_run(folder).inputs["grip_success"] == 0.1

    def test_nothing_to_read(self, tmp_path):
        write(tmp_path / "notes.txt", "hello")
        with pytest.raises(UserError, match="no summary.json or \\*.log"):
            read_run(tmp_path)

    def test_malformed_summary_is_an_error_not_a_fallback(self, tmp_path):
        write(tmp_path / "summary.json", "{oops")
        write(tmp_path / "train.log", json.dumps(RAW))
        with pytest.raises(UserError, match="not valid JSON"):
            read_run(tmp_path)


class TestLog:
    def test_prefixed_lines_latest_value_wins(self, tmp_path):
        path = write(tmp_path / "train.log", "\n".join([
            "starting training {config} ...",
            '2025-11-26 12:00:01 INFO {"environment/perfect_grip": 0.1, "environment/to_pickup": 0.6, "SPS": 1}',
            "\x1b[32m dashboard line with { braces } and junk \x1b[0m",
            '[epoch 2] {"environment/perfect_grip": 0.42, "environment/perfect_deliv": 0.05} tail text',
            '{"losses/entropy": 1.0}',
            "",
        ]))
        run = read_run(path)
        assert run.source == "log"
        assert run.inputs["grip_success"] == 0.42
        assert run.inputs["grip_attempts"] == 0.6
        assert run.inputs["delivery_success"] == 0.05
        assert run.inputs["oob_rate"] is None
        assert run.extra == {"SPS": 1}
        assert run.run_id == tmp_path.name

    def test_nested_objects_and_nan(self, tmp_path):
        path = write(tmp_path / "out.txt", 'x {"environment": {"perfect_grip": 0.3, "oob": NaN}}\n')
        run = read_run(path)
        assert run.inputs["grip_success"] == 0.3
        assert run.run_id == "out"
        assert "oob_rate" in behavior.analyze(run.inputs)["missing_metrics"]

    def test_jsonl_whole_file(self, tmp_path):
        lines = [json.dumps({"environment/perfect_grip": g}) for g in (0.1, 0.2, 0.3)]
        assert read_run(write(tmp_path / "m.jsonl", "\n".join(lines))).inputs["grip_success"] == 0.3

    def test_undecodable_bytes_are_tolerated(self, tmp_path):
        path = tmp_path / "train.log"
        path.write_bytes(b"\xff\xfe garbage\n" + json.dumps(RAW).encode() + b"\n")
        assert read_run(path).inputs == EXPECTED_INPUTS


class TestMetricsJson:
    def test_flat_raw_object(self, tmp_path):
        run = read_run(write(tmp_path / "metrics.json", RAW))
        assert run.source == "metrics_json"
        assert run.inputs == EXPECTED_INPUTS
        assert run.extra["mean_reward"] == 12.5 and run.extra["agent_steps"] == 1048576
        assert run.existing_analysis is None


class TestErrors:
    @pytest.mark.parametrize(
        "name, content, message",
        [
            ("summary.json", "", "empty"),
            ("summary.json", "  \n\t", "empty"),
            ("train.log", "", "empty"),
            ("summary.json", '{"grip_success": 0.5,', "not valid JSON"),
            ("summary.json", "[1, 2]", "JSON object"),
            ("metrics.json", '{"foo": 1, "environment/unrelated": 2}', "no behaviour metrics"),
            ("train.log", "no json here\nat all\n", "no behaviour metrics"),
            ("train.log", '{"losses/entropy": 1}\n', "no behaviour metrics"),
            ("summary.json", json.dumps({"grip_success": None, "metrics_extended": {}}), "no behaviour metrics"),
        ],
    )
    def test_bad_files(self, tmp_path, name, content, message):
        path = write(tmp_path / name, content)
        with pytest.raises(UserError, match=message) as info:
            read_run(path)
        text = str(info.value)
        assert str(path) in text and "\n" not in text

    def test_missing_path(self, tmp_path):
        with pytest.raises(UserError, match="not found") as info:
            read_run(tmp_path / "nope")
        assert str(tmp_path / "nope") in str(info.value)


def make_run(root: Path, name: str, timestamp: str | None, grip, deliv, e2e, existing=None) -> Path:
    summary = autopilot_summary(run_id=name, grip_success=grip, delivery_success=deliv, end_to_end_success=e2e)
    summary.pop("behavioral_analysis")
    if existing is not None:
        summary["behavioral_analysis"] = existing
    if timestamp is None:
        summary.pop("timestamp")
    else:
        summary["timestamp"] = timestamp
    return write(root / name / "summary.json", summary).parent


class TestListRuns:
    def test_oldest_first_by_timestamp_not_name(self, tmp_path):
        make_run(tmp_path, "c", "2025-11-26T10:00:00Z", 0.1, 0.0, 0.0)
        make_run(tmp_path, "a", "2025-11-26T12:00:00Z", 0.2, 0.0, 0.0)
        make_run(tmp_path, "b", "2025-11-26T11:00:00+00:00", 0.3, 0.0, 0.0)
        runs = list_runs(tmp_path)
        assert [r.run_id for r in runs] == ["c", "b", "a"]
        assert isinstance(runs, RunList) and runs.skipped == []

    def test_untimestamped_after_by_folder_name(self, tmp_path):
        make_run(tmp_path, "z", None, 0.1, 0.0, 0.0)
        make_run(tmp_path, "y", None, 0.1, 0.0, 0.0)
        make_run(tmp_path, "x", "2025-11-26T10:00:00", 0.1, 0.0, 0.0)
        assert [r.run_id for r in list_runs(tmp_path)] == ["x", "y", "z"]

    def test_epoch_timestamps(self, tmp_path):
        make_run(tmp_path, "late", None, 0.1, 0.0, 0.0)
        make_run(tmp_path, "early", None, 0.1, 0.0, 0.0)
        for name, epoch in (("late", 1_800_000_000), ("early", 1_700_000_000)):
            path = tmp_path / name / "summary.json"
            write(path, {**json.loads(path.read_text()), "timestamp": epoch})
        runs = list_runs(tmp_path)
        assert [r.run_id for r in runs] == ["early", "late"]
        assert runs[0].timestamp == "2023-11-14T22:13:20Z"

    def test_skips_and_reports_unreadable(self, tmp_path):
        make_run(tmp_path, "good", "2025-11-26T10:00:00Z", 0.1, 0.0, 0.0)
        write(tmp_path / "broken" / "summary.json", "{")
        write(tmp_path / "nosummary" / "train.log", json.dumps(RAW))
        write(tmp_path / "stray.json", "{}")
        runs = list_runs(tmp_path)
        assert [r.run_id for r in runs] == ["good"]
        assert [(folder.name, "not valid JSON" in reason) for folder, reason in runs.skipped] == [("broken", True)]

    def test_empty(self, tmp_path):
        assert list_runs(tmp_path) == []

    def test_missing_or_not_a_folder(self, tmp_path):
        with pytest.raises(UserError, match="not found"):
            list_runs(tmp_path / "nope")
        with pytest.raises(UserError, match="not a folder"):
            list_runs(write(tmp_path / "file", "x"))


class TestRunHistory:
    def test_deltas_in_points(self, tmp_path):
        make_run(tmp_path, "r1", "2025-11-26T10:00:00Z", 0.10, 0.05, None)
        make_run(tmp_path, "r2", "2025-11-26T11:00:00Z", 0.35, 0.02, 0.01)
        make_run(tmp_path, "r3", "2025-11-26T12:00:00Z", 0.30, 0.02, 0.04)
        rows = run_history(list_runs(tmp_path))
        assert [r["run_id"] for r in rows] == ["r1", "r2", "r3"]
        assert rows[0]["delta"] == {"grip_success": None, "delivery_success": None, "end_to_end_success": None}
        assert rows[1]["delta"] == {"grip_success": 25.0, "delivery_success": -3.0, "end_to_end_success": None}
        assert rows[2]["delta"] == {"grip_success": -5.0, "delivery_success": 0.0, "end_to_end_success": 3.0}
        assert rows[0]["end_to_end_success"] is None
        assert rows[1]["next_focus"] == "improve_carrying" and rows[1]["severity"] == "ok"
        assert rows[0]["severity"] == "ok" and rows[0]["next_focus"] == "tune_grip"
        assert rows[2]["path"] == str(tmp_path / "r3")
        assert rows[2]["timestamp"] == "2025-11-26T12:00:00Z"

    def test_disagreement_with_stored_analysis(self, tmp_path):
        make_run(tmp_path, "r1", "2025-11-26T10:00:00Z", 0.35, 0.02, 0.0,
                 existing={"severity": "ok", "next_focus": "tune_grip"})
        make_run(tmp_path, "r2", "2025-11-26T11:00:00Z", 0.35, 0.02, 0.0,
                 existing={"severity": "ok", "next_focus": "improve_carrying"})
        make_run(tmp_path, "r3", "2025-11-26T12:00:00Z", 0.35, 0.02, 0.0)
        rows = run_history(list_runs(tmp_path))
        assert len(rows[0]["disagreement"]) == 1 and "next_focus" in rows[0]["disagreement"][0]
        assert rows[1]["disagreement"] == [] and rows[2]["disagreement"] == []
        # The columns show the effective analysis: the stored one, unless recomputed.
        assert [r["next_focus"] for r in rows] == ["tune_grip", "improve_carrying", "improve_carrying"]
        assert [r["analysis_source"] for r in rows] == ["stored", "stored", "rules"]
        rows = run_history(list_runs(tmp_path), recompute=True)
        assert [r["next_focus"] for r in rows] == ["improve_carrying"] * 3
        assert [r["analysis_source"] for r in rows] == ["rules"] * 3
        assert len(rows[0]["disagreement"]) == 1

    def test_empty(self):
        assert run_history([]) == []
