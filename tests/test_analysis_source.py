"""The analysis a run's summary stores is the run's analysis; ``--recompute`` asks for drex-opt's rules.

Through the real console script (analyze, runs, study) and the planner, on a summary
written the way the owner's pipeline writes them, whose stored focus differs from the one
drex-opt's rules give for its metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from drex_opt.errors import UserError
from drex_opt.rules import behavior
from drex_opt.run.metrics import named_metrics
from drex_opt.search import dashboard, planning, spaces
from drex_opt.search import study as study_mod

from cli_helpers import one_line_error, run_cli

STORED = {
    "insights": ["Grips and delivers well enough: tune the whole space"],
    "severity": "ok",
    "next_focus": "optimize_performance",
    "grip_efficiency": 0.7,
    "metrics_summary": {"grip_success": "42.0%", "delivery_success": "5.0%", "end_to_end": "1.0%",
                        "collision_rate": "3.0%"},
}

# What drex-opt's rules read in the metrics below: grips, but no delivery.
RULES_INPUTS = {"grip_success": 0.42, "delivery_success": 0.05, "end_to_end_success": 0.01, "grip_attempts": 0.6,
                "delivery_attempts": 0.1, "hover_efficiency": 0.2, "collision_rate": 0.03, "oob_rate": 0.1}


def owner_run(root: Path, stored: dict | None = STORED, name: str = "2025-11-26T120000Z") -> Path:
    """A run folder as the owner's autopilot loop leaves it (named fields, trainer metrics)."""
    folder = root / name
    folder.mkdir(parents=True)
    summary = {
        "run_id": name, "timestamp": "2025-11-26T12:00:00Z", "seed": 1,
        "grip_success": 0.42, "delivery_success": 0.05, "end_to_end_success": 0.01,
        "mean_reward": 3.0, "episode_length": 800,
        "metrics_extended": {"grip_attempts": 0.6, "delivery_attempts": 0.1, "hover_efficiency": 0.2,
                             "SPS": 250000.0, "policy_loss": -0.01},
        "trainer_summary": {"metrics": {"environment/collision_rate": 0.03, "oob": 0.1}},
        "notes": "auto-generated run summary",
    }
    if stored is not None:
        summary["behavioral_analysis"] = stored
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def test_the_fixture_makes_the_rules_disagree():
    ours = behavior.analyze(RULES_INPUTS)
    assert (ours["severity"], ours["next_focus"]) == ("ok", "improve_carrying")
    assert STORED["next_focus"] != ours["next_focus"]


class TestAnalyze:
    def test_json_is_the_stored_analysis(self, tmp_path):
        proc = run_cli("analyze", str(owner_run(tmp_path)), "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        printed = json.loads(proc.stdout)
        assert printed["analysis_source"] == "stored"
        assert {k: printed[k] for k in STORED} == STORED
        assert printed["rules_analysis"] == behavior.analyze(RULES_INPUTS)
        assert printed["rules_analysis"]["next_focus"] == "improve_carrying"
        assert len(printed["disagreement"]) == 1
        assert "'optimize_performance'" in printed["disagreement"][0]
        assert "'improve_carrying'" in printed["disagreement"][0]
        assert "stored_analysis" not in printed

    def test_json_recompute_is_the_rules(self, tmp_path):
        proc = run_cli("analyze", str(owner_run(tmp_path)), "--recompute", "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        printed = json.loads(proc.stdout)
        assert printed["analysis_source"] == "rules" and printed["next_focus"] == "improve_carrying"
        assert {k: printed[k] for k in behavior.analyze(RULES_INPUTS)} == behavior.analyze(RULES_INPUTS)
        assert printed["stored_analysis"] == STORED and "rules_analysis" not in printed
        assert len(printed["disagreement"]) == 1

    def test_human_view_shows_both_readings(self, tmp_path):
        proc = run_cli("analyze", str(owner_run(tmp_path)), timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = " ".join(proc.stdout.split())
        assert "stored in the summary" in out and "--recompute" in out
        # The stored focus is the one used, shown first; the rules' one beside it.
        assert out.index("optimize_performance") < out.index("disagrees") < out.rindex("improve_carrying")
        assert "Grips and delivers well enough" in out and "Can grip but cannot deliver" in out

    def test_a_malformed_stored_analysis_falls_back_to_the_rules(self, tmp_path):
        folder = owner_run(tmp_path, stored={"severity": ["ok"], "next_focus": "optimize_performance"})
        proc = run_cli("analyze", str(folder), "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        printed = json.loads(proc.stdout)
        assert printed["analysis_source"] == "rules" and printed["next_focus"] == "improve_carrying"
        assert "severity" in printed["analysis_note"]

    def test_runs_lists_the_stored_focus(self, tmp_path):
        owner_run(tmp_path)
        rows = json.loads(run_cli("runs", str(tmp_path), "--json", timeout=60).stdout)
        assert [(r["next_focus"], r["analysis_source"]) for r in rows] == [("optimize_performance", "stored")]
        assert rows[0]["disagreement"]
        rows = json.loads(run_cli("runs", str(tmp_path), "--recompute", "--json", timeout=60).stdout)
        assert [(r["next_focus"], r["analysis_source"]) for r in rows] == [("improve_carrying", "rules")]


class TestStudyFromRun:
    def settings(self, tmp_path, run, **kw) -> planning.StudySettings:
        # Fabricated run folders hold no checkpoint: these plans train from fresh weights.
        return planning.StudySettings(from_run=run, storage=f"sqlite:///{tmp_path}/s.db",
                                      studies_dir=tmp_path / "studies", from_scratch=True, **kw)

    def test_the_stored_focus_selects_the_space(self, tmp_path):
        plan = planning.plan(self.settings(tmp_path, owner_run(tmp_path)))
        assert plan.focus == "optimize_performance" and plan.severity == "ok"
        assert plan.insights == STORED["insights"]
        assert plan.reading.source == "stored"
        assert plan.timesteps == spaces.load("optimize_performance").budget_for("quick").timesteps
        assert plan.study_name == "drex-optimize_performance-quick"

    def test_recompute_uses_the_rules_focus(self, tmp_path):
        plan = planning.plan(self.settings(tmp_path, owner_run(tmp_path), recompute=True))
        assert plan.focus == "improve_carrying" and plan.reading.source == "rules"
        assert plan.timesteps == spaces.load("improve_carrying").budget_for("quick").timesteps

    def test_the_stored_severity_selects_the_budget(self, tmp_path):
        stored = {**STORED, "severity": "critical", "next_focus": "improve_carrying"}
        plan = planning.plan(self.settings(tmp_path, owner_run(tmp_path, stored)))
        assert plan.focus == "improve_carrying" and plan.severity == "critical"
        assert plan.timesteps == spaces.load("diagnostic_grip").budget_for("quick").timesteps

    def test_the_study_records_which_analysis_it_used(self, tmp_path):
        plan = planning.plan(self.settings(tmp_path, owner_run(tmp_path)))
        study = study_mod.open_study(plan)
        attrs = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path}/s.db").user_attrs
        assert attrs["focus"] == "optimize_performance" and attrs["analysis_source"] == "stored"
        assert attrs["analysis"] == {"severity": "ok", "next_focus": "optimize_performance",
                                     "insights": STORED["insights"]}
        rules = behavior.analyze(RULES_INPUTS)
        assert attrs["rules_analysis"] == {"severity": "ok", "next_focus": "improve_carrying",
                                           "insights": rules["insights"]}
        assert attrs["analysis_disagreement"] == behavior.disagreement(STORED, rules)
        assert "stored in the run's summary" in dashboard.study_note(plan)

    def test_a_recomputed_study_records_the_stored_reading(self, tmp_path):
        plan = planning.plan(self.settings(tmp_path, owner_run(tmp_path), recompute=True))
        attrs = study_mod.open_study(plan).user_attrs
        assert attrs["analysis_source"] == "rules" and attrs["analysis"]["next_focus"] == "improve_carrying"
        assert attrs["stored_analysis"]["next_focus"] == "optimize_performance" and "rules_analysis" not in attrs

    def test_agreeing_or_focus_given_records_no_other_reading(self, tmp_path):
        agreeing = {**STORED, "next_focus": "improve_carrying"}
        attrs = study_mod.open_study(planning.plan(self.settings(tmp_path, owner_run(tmp_path, agreeing)))).user_attrs
        assert attrs["analysis_source"] == "stored"
        assert not {"rules_analysis", "stored_analysis", "analysis_disagreement"} & set(attrs)
        given = planning.plan(planning.StudySettings(focus="improve_grip", storage=f"sqlite:///{tmp_path}/t.db",
                                                     studies_dir=tmp_path / "studies"))
        assert study_mod.open_study(given).user_attrs["analysis_source"] is None

    def test_plan_refuses_an_unsearchable_focus_before_opening_storage(self, tmp_path):
        stored = {**STORED, "severity": "failed", "next_focus": "fix_run"}
        with pytest.raises(UserError, match="fix_run") as info:
            planning.plan(self.settings(tmp_path, owner_run(tmp_path, stored)))
        assert "--recompute" in str(info.value) and "'improve_carrying'" in str(info.value)
        assert not (tmp_path / "s.db").exists()

    def test_a_run_that_never_reported_has_no_focus_even_recomputed(self, tmp_path):
        folder = tmp_path / "failed"
        folder.mkdir()
        fields = named_metrics({}, status="failed", error="RuntimeError: no such device")
        (folder / "summary.json").write_text(json.dumps({"run_id": "failed", "status": "failed",
                                                         "error": "RuntimeError: no such device",
                                                         "metrics": {}, **fields}))
        for recompute in (False, True):
            with pytest.raises(UserError, match="'fix_run'") as info:
                planning.plan(self.settings(tmp_path, folder, recompute=recompute))
            assert "--focus" in str(info.value) and "--recompute" not in str(info.value)
        assert not (tmp_path / "s.db").exists()

    @pytest.mark.parametrize("focus, fragments", [
        ("fix_run", ("'fix_run'", "--focus", "--recompute", "'improve_carrying'")),
        ("tune_the_reward", ("'tune_the_reward'", "--focus", "--recompute")),
    ])
    def test_cli_refuses_in_one_line_and_writes_nothing(self, tmp_path, focus, fragments):
        folder = owner_run(tmp_path / "runs", {**STORED, "next_focus": focus})
        db = tmp_path / "x.db"
        proc = run_cli("study", "--from-run", str(folder), "--storage", f"sqlite:///{db}", "--trials", "1",
                       cwd=tmp_path, timeout=120)
        one_line_error(proc, str(folder), *fragments)
        assert not db.exists() and not (tmp_path / "studies").exists()

    def test_cli_recompute_needs_from_run(self, tmp_path):
        proc = run_cli("study", "--focus", "improve_grip", "--recompute", "--storage", f"sqlite:///{tmp_path}/x.db",
                       cwd=tmp_path, timeout=120)
        one_line_error(proc, "--recompute", "--from-run")
        assert not (tmp_path / "x.db").exists()
