"""Envs that log only part of the task: partial objectives and unknown rule inputs.

An env may log grip and delivery but no ``perfect_now`` (drone_delivery versions,
``tiny_envs:GripDeliverOnly``), or none of the pick-and-place statistics at all (PufferLib's
C ``drone``: ``perf``, ``score``, ...). Then a study optimises what the env measures and says
so; the behavioural analysis treats an input the env does not log as unknown (a rule comparing
it does not fire) instead of the contract's 0, and keeps the contract's outcome wherever only
logged inputs decide; a run with statistics but no rule input is "not observed", never
"critical / diagnostic_grip".

Expected outcomes are worked out by hand from ``/work/shared/spec/behavior-rules.md`` (rows
1-9 and severity, first matching row wins), never read from drex-opt's own tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from drex_opt.envs import puffer
from drex_opt.errors import UserError
from drex_opt.rules import behavior, objectives
from drex_opt.rules.objectives import OBJECTIVES
from drex_opt.run import env_metrics, metrics
from drex_opt.search import export as export_mod
from drex_opt.search import planning

from cli_helpers import one_line_error, run_cli
# The C drone's skip-or-fail rule and the tests folder on PYTHONPATH, shared with the
# foreign-env tests rather than copied.
from test_puffer_envs import TESTS, TINY, require_built

GRIP, DELIV, E2E = OBJECTIVES
INPUTS = ("grip_success", "delivery_success", "end_to_end_success", "grip_attempts", "delivery_attempts",
          "hover_efficiency", "collision_rate", "oob_rate")  # the rules file's input table, in order
# What GripDeliverOnly does not log: every input but grip and delivery.
NOT_GRIP_DELIV = INPUTS[2:]
TINY_ENV = "tiny_envs:GripDeliverOnly"


def ini(tmp_path: Path, text: str, name: str = "env.ini") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def focus_and_severity(result: dict) -> tuple[str, str]:
    return result["next_focus"], result["severity"]


def cli_json(proc) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def two_objective_study() -> optuna.Study:
    """An in-memory study of grip and delivery: baseline trial 0, then a better deliverer and a better gripper."""
    study = optuna.create_study(directions=["maximize"] * 2)
    study.set_user_attr("objectives", [GRIP, DELIV])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for values, attrs in (((0.9, 0.2), {"role": objectives.BASELINE_ROLE}), ((0.5, 0.4), {}), ((0.95, 0.1), {})):
        study.add_trial(optuna.trial.create_trial(params={"x": values[0]}, distributions=dist, values=list(values),
                                                  user_attrs=attrs))
    return study


# ---------------------------------------------------------------- the rules with unknown inputs
# (id, logged inputs, inputs the env does not log, contract outcome when they are merely
# missing (counted 0), outcome when they are listed in not_logged (unknown)).
ROWS = [
    # Row 1 compares grip and delivery only: e2e's absence changes nothing; grip_attempts is
    # merely missing (not declared unlogged), so the contract's 0 still makes it critical.
    ("row1-kept-attempts-missing", {GRIP: 0.6, DELIV: 0.5}, (E2E,),
     ("optimize_performance", "critical"), ("optimize_performance", "critical")),
    ("row1-kept", {GRIP: 0.6, DELIV: 0.5, "grip_attempts": 0.5}, (E2E,),
     ("optimize_performance", "ok"), ("optimize_performance", "ok")),
    # Row 5 (delivery > 0.3 and e2e < 0.1): e2e counted 0 fires it; unknown e2e falls through
    # rows 6 and 7 to row 8 (grip 0.2 < 0.3) ...
    ("row5-to-row8", {GRIP: 0.2, DELIV: 0.5, "grip_attempts": 0.5}, (E2E,),
     ("improve_coordination", "ok"), ("tune_grip", "ok")),
    # ... or, with grip 0.4, to row 9.
    ("row5-to-row9", {GRIP: 0.4, DELIV: 0.5, "grip_attempts": 0.5}, (E2E,),
     ("improve_coordination", "ok"), ("continue", "ok")),
    # Row 2 (hover > 0.5 and grip < 0.2) and the warning (grip < 0.1) on an unlogged grip.
    ("row2-grip-unknown", {"hover_efficiency": 0.8, "grip_attempts": 0.5, DELIV: 0.4, E2E: 0.3,
                           "collision_rate": 0.0}, (GRIP,),
     ("fix_grip_activation", "warning"), ("continue", "ok")),
    # Row 2 with an unlogged hover cannot fire either way (0 is not > 0.5): row 8 decides.
    ("row2-hover-unknown", {GRIP: 0.15, DELIV: 0.0, "grip_attempts": 0.5}, ("hover_efficiency",),
     ("tune_grip", "ok"), ("tune_grip", "ok")),
    # Row 3 and the warning on a logged collision rate, whatever else is unknown.
    ("row3-logged", {"collision_rate": 0.6, GRIP: 0.4, DELIV: 0.4, "grip_attempts": 0.5},
     (E2E, "delivery_attempts", "hover_efficiency", "oob_rate"),
     ("fix_stability", "warning"), ("fix_stability", "warning")),
    # Row 4 (grip > 0.3 and delivery < 0.1) on an unlogged delivery.
    ("row4-delivery-unknown", {GRIP: 0.4, "grip_attempts": 0.5}, (DELIV, E2E),
     ("improve_carrying", "ok"), ("continue", "ok")),
    # GripDeliverOnly-like: row 4 decides both ways; only severity changes (attempts unknown).
    ("row4-grip-deliver-only", {GRIP: 0.94, DELIV: 0.05}, NOT_GRIP_DELIV,
     ("improve_carrying", "critical"), ("improve_carrying", "ok")),
    # Row 6 and critical (grip_attempts < 0.001) on unlogged attempts: row 8 decides ...
    ("row6-to-row8", {GRIP: 0.2, DELIV: 0.2}, NOT_GRIP_DELIV,
     ("diagnostic_grip", "critical"), ("tune_grip", "ok")),
    # ... or row 7 and the warning, on a logged grip below 10%.
    ("row6-to-row7", {GRIP: 0.05, DELIV: 0.0}, NOT_GRIP_DELIV,
     ("diagnostic_grip", "critical"), ("improve_grip", "warning")),
    # Row 7 and the warning (grip < 0.1) on an unlogged grip.
    ("row7-grip-unknown", {DELIV: 0.5, E2E: 0.4, "grip_attempts": 0.5}, (GRIP,),
     ("improve_grip", "warning"), ("continue", "ok")),
    # Logged inputs decide: unknown others leave the contract's outcome as it was.
    ("logged-decide", {GRIP: 0.05, DELIV: 0.0, "grip_attempts": 0.5},
     (E2E, "delivery_attempts", "hover_efficiency", "collision_rate", "oob_rate"),
     ("improve_grip", "warning"), ("improve_grip", "warning")),
]


@pytest.mark.parametrize("logged, unlogged, contract, unknown", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_an_unlogged_input_fires_no_rule_where_a_missing_one_counts_as_0(logged, unlogged, contract, unknown):
    missing = behavior.analyze(logged)
    assert focus_and_severity(missing) == contract
    assert "not_logged" not in missing  # merely missing: the contract exactly
    assert set(unlogged) <= set(missing["missing_metrics"])

    result = behavior.analyze(logged, not_logged=unlogged)
    assert focus_and_severity(result) == unknown
    assert result["not_logged"] == [name for name in INPUTS if name in unlogged]
    assert set(unlogged) <= set(result["missing_metrics"])
    assert any(line.startswith("Not logged") and all(n in line for n in unlogged) for line in result["insights"])
    # Unknown is shown as such, never as 0%.
    shown = {GRIP: "grip_success", DELIV: "delivery_success", E2E: "end_to_end", "collision_rate": "collision_rate"}
    for name, key in shown.items():
        if name in unlogged:
            assert result["metrics_summary"][key] == "n/a"
    json.dumps(result, allow_nan=False)  # no NaN leaks into the summary


def test_a_value_present_is_used_even_if_declared_unlogged():
    # The env's declaration is wrong about e2e here: the number that arrived decides (row 5).
    result = behavior.analyze({GRIP: 0.2, DELIV: 0.5, E2E: 0.05, "grip_attempts": 0.5}, not_logged=(E2E,))
    assert focus_and_severity(result) == ("improve_coordination", "ok")
    assert "not_logged" not in result
    assert result["metrics_summary"]["end_to_end"] == "5.0%"


def test_unknown_inputs_give_no_grip_efficiency_and_no_oob_insight():
    result = behavior.analyze({GRIP: 0.9, DELIV: 0.5}, not_logged=NOT_GRIP_DELIV)
    assert result["grip_efficiency"] == 0.0
    assert not any("out-of-bounds" in line for line in result["insights"])


@pytest.mark.parametrize("logged, focus", [
    (["perf", "score", "episode_return", "episode_length", "n"], "name_a_focus"),  # the C drone
    ([], "train_longer"),  # nothing reported at all: too short a budget
])
def test_a_run_without_any_rule_input_is_not_observed_never_critical(logged, focus):
    result = behavior.analyze_run({}, "completed", None, (), logged)
    assert focus_and_severity(result) == (focus, "not_observed")
    assert result == behavior.unobserved("completed", None, logged)
    assert set(result["metrics_summary"].values()) == {"n/a"}


# ---------------------------------------------------------------- summaries of foreign envs
GRIP_DELIVER_RAW = {"environment/perfect_grip": 0.9, "environment/perfect_deliv": 0.2, "environment/n": 100.0,
                    "SPS": 1000.0, "agent_steps": 65536}


def test_a_foreign_summary_lists_the_inputs_its_env_does_not_log():
    s = metrics.named_metrics(GRIP_DELIVER_RAW, "completed", None, metric_map={})
    assert (s[GRIP], s[DELIV], s[E2E]) == (0.9, 0.2, None)
    assert s["not_logged"] == list(NOT_GRIP_DELIV)
    assert s["logged"] == ["n", "perfect_deliv", "perfect_grip"]
    a = s["behavioral_analysis"]
    # grip 0.9, delivery 0.2, the rest unknown: rows 1-8 do not hold → row 9, severity ok.
    assert focus_and_severity(a) == ("continue", "ok")
    assert a["not_logged"] == list(NOT_GRIP_DELIV)


def test_a_built_in_summary_keeps_the_contract_on_the_same_logs():
    s = metrics.named_metrics(GRIP_DELIVER_RAW, "completed", None)
    assert "not_logged" not in s and "logged" not in s
    # grip_attempts missing counts 0: row 6, critical.
    assert focus_and_severity(s["behavioral_analysis"]) == ("diagnostic_grip", "critical")


def test_a_metric_map_names_the_envs_own_keys():
    raw = {"environment/my_grip": 0.7, "environment/perfect_deliv": 0.4, "environment/perfect_grip": 0.1}
    s = metrics.named_metrics(raw, "completed", None, metric_map={GRIP: "my_grip"})
    assert s[GRIP] == 0.7 and s[DELIV] == 0.4
    assert GRIP not in s["not_logged"] and DELIV not in s["not_logged"]
    assert E2E in s["not_logged"]
    # grip 0.7, delivery 0.4: row 1.
    assert s["behavioral_analysis"]["next_focus"] == "optimize_performance"


@pytest.mark.parametrize("raw, metric_map, focus", [
    ({"environment/score": 0.3, "environment/perf": 0.1}, {}, "name_a_focus"),
    ({"environment/score": 0.3, "environment/perf": 0.1}, None, "train_longer"),  # built in: not yet observed
    ({"SPS": 1000.0, "agent_steps": 4096}, {}, "train_longer"),
    ({"SPS": 1000.0, "agent_steps": 4096}, None, "train_longer"),
])
def test_statistics_that_are_no_rule_input(raw, metric_map, focus):
    s = metrics.named_metrics(raw, "completed", None, metric_map=metric_map)
    assert focus_and_severity(s["behavioral_analysis"]) == (focus, "not_observed")
    if "environment/score" in raw:
        assert s["score"] == 0.3


@pytest.mark.parametrize("raw, metric_map, expected", [
    (GRIP_DELIVER_RAW, {}, ("continue", "ok")),
    ({"environment/score": 0.3, "environment/perf": 0.1}, {}, ("name_a_focus", "not_observed")),
])
def test_a_recompute_reads_what_the_env_did_and_did_not_log_back(tmp_path, raw, metric_map, expected):
    """Without not_logged/logged read back, a recompute would count the unlogged inputs as 0."""
    summary = {"run_id": "r", "status": "completed", "error": None, "metrics": raw,
               **metrics.named_metrics(raw, "completed", None, metric_map=metric_map)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    run = metrics.read_run(tmp_path)
    for recompute in (False, True):
        reading = metrics.run_analysis(run, recompute=recompute)
        assert focus_and_severity(reading.analysis) == expected
        assert reading.disagreement == []


# ---------------------------------------------------------------- which objectives a study has
def test_a_built_in_env_optimises_all_three():
    assert env_metrics.objectives_of("drone_pp") == (OBJECTIVES, None)
    assert env_metrics.objectives_of("drone_pp_hard") == (OBJECTIVES, None)


def test_the_c_drone_optimises_its_score():
    names, note = env_metrics.objectives_of("puffer_drone")
    assert names == ("score",)
    assert note and "score" in note


def test_a_declared_metric_map_without_end_to_end(tmp_path):
    path = ini(tmp_path, "[drex.metrics]\ngrip_success = perfect_grip\ndelivery_success = perfect_deliv\n")
    env = puffer.make_env_id("puffer_drone", path)
    assert env_metrics.declared(env) == {GRIP: "perfect_grip", DELIV: "perfect_deliv"}
    names, note = env_metrics.objectives_of(env)
    assert names == (GRIP, DELIV)
    assert E2E in note


@pytest.mark.parametrize("name", ["puffer_drone_delivery", TINY_ENV])
def test_a_run_that_shows_no_end_to_end_leaves_it_out(tmp_path, name):
    env = puffer.make_env_id(name, ini(tmp_path, "[env]\nreport_interval = 64\n"))
    if name == TINY_ENV:  # nothing declared and no run yet: no guess (see the --focus refusal below)
        with pytest.raises(UserError, match="cannot tell"):
            env_metrics.objectives_of(env)
    else:  # drone_delivery declares the brief's three keys
        assert env_metrics.objectives_of(env)[0] == OBJECTIVES
    run = {"not_logged": list(NOT_GRIP_DELIV), "logged": ["n", "perfect_deliv", "perfect_grip"]}
    names, note = env_metrics.objectives_of(env, run)
    assert names == (GRIP, DELIV)
    assert E2E in note and "run shows" in note


def test_an_unknown_name_in_the_metric_map_is_refused_by_name(tmp_path):
    env = puffer.make_env_id("puffer_drone", ini(tmp_path, "[drex.metrics]\ngrip_sucess = perfect_grip\n"))
    with pytest.raises(UserError, match="grip_sucess"):
        env_metrics.objectives_of(env)


def test_nothing_measurable_is_refused(tmp_path):
    path = ini(tmp_path, "[drex.metrics]\ngrip_success = none\ndelivery_success = none\nend_to_end_success = none\n")
    with pytest.raises(UserError, match=r"drex\.metrics"):
        env_metrics.objectives_of(puffer.make_env_id("puffer_drone", path))
    # A run that logged none of the three and no score either.
    env = puffer.make_env_id(TINY_ENV, ini(tmp_path, "[env]\n", "plain.ini"))
    with pytest.raises(UserError):
        env_metrics.objectives_of(env, {"not_logged": list(INPUTS), "logged": ["perf"]})
    # The same run with a score is a score study.
    assert env_metrics.objectives_of(env, {"not_logged": list(INPUTS), "logged": ["perf", "score"]})[0] == ("score",)


def test_early_stopping_needs_a_grip_objective(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the env check imports PufferLib, which links resources here
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # and finds tiny_envs there
    storage = f"sqlite:///{tmp_path}/p.db"
    for section, names, stopping in (
        ("grip_success = perfect_grip\ndelivery_success = perfect_deliv\n", (GRIP, DELIV), True),
        ("delivery_success = perfect_deliv\nend_to_end_success = perfect_now\n", (DELIV, E2E), False),
    ):
        env = puffer.make_env_id(TINY_ENV, ini(tmp_path, f"[drex.metrics]\n{section}", f"{len(names)}{stopping}.ini"))
        plan = planning.plan(planning.StudySettings(focus="improve_grip", env=env, storage=storage,
                                                    studies_dir=tmp_path / "studies", command=["drex-opt"]))
        assert plan.objectives == names
        assert plan.early_stopping is stopping


# ---------------------------------------------------------------- ranking fewer objectives
def test_ranking_two_objectives():
    names = (GRIP, DELIV)
    assert objectives.ranked(names) == (DELIV, GRIP)  # the default: e2e, then delivery, then grip
    assert objectives.rank_key((0.9, 0.2), names) == (0.2, 0.9)
    assert objectives.rank_key((0.9, 0.2), names, objectives.RANKINGS["grip"]) == (0.9, 0.2)
    # Delivery decides first, whatever grip does.
    assert objectives.rank_key((0.1, 0.3), names) > objectives.rank_key((0.9, 0.2), names)


def test_ranking_one_objective():
    assert objectives.ranked(("score",)) == ("score",)
    assert objectives.rank_key((3.5,), ("score",)) == (3.5,)
    assert objectives.show("score", 0.00661) == "0.00661" and objectives.show(GRIP, 0.375) == "37.5%"


def test_from_summary_reads_only_the_studys_objectives():
    summary = {GRIP: 0.9, DELIV: 0.2, E2E: None, "score": None}
    assert objectives.from_summary(summary, (GRIP, DELIV)) == (0.9, 0.2)
    with pytest.raises(ValueError, match="missing metrics: end_to_end_success"):
        objectives.from_summary(summary)  # all three: e2e was not logged
    assert objectives.from_summary({"score": 12.5, GRIP: None}, ("score",)) == (12.5,)
    with pytest.raises(ValueError, match="missing metrics: score"):
        objectives.from_summary({"score": True}, ("score",))


def test_an_old_study_without_the_attribute_has_all_three():
    study = optuna.create_study(directions=["maximize"] * 3)
    assert objectives.study_objectives(study) == OBJECTIVES


def test_a_two_objective_study_ranks_compares_and_exports_on_its_own_objectives():
    study = two_objective_study()
    assert objectives.study_objectives(study) == (GRIP, DELIV)
    best = objectives.best_trial(study)
    assert best.number == 1  # best delivery
    versus = objectives.versus_baseline(study, best)
    assert set(versus["values"]) == {GRIP, DELIV} and versus["beat"] is True
    assert versus["gain"][DELIV] == pytest.approx(0.2)
    sentence = objectives.describe_versus(versus)
    assert "delivery" in sentence and "end-to-end" not in sentence
    chosen, why = export_mod.pick_trial(study, "grip")
    assert chosen.number == 2 and "end-to-end" not in why
    chosen, why = export_mod.pick_trial(study, "balanced")
    assert "end-to-end" not in why


def test_a_study_is_not_reopened_with_other_objectives(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="old", storage=storage, directions=["maximize"] * 3)  # before objectives varied
    other = optuna.create_study(study_name="other", storage=storage, directions=["maximize"] * 2)
    other.set_user_attr("objectives", [GRIP, E2E])
    path = ini(tmp_path, "[drex.metrics]\ngrip_success = perfect_grip\ndelivery_success = perfect_deliv\n")
    for name in ("old", "other"):
        proc = run_cli("study", "--focus", "improve_grip", "--env", TINY_ENV, "--env-config", str(path),
                       "--study-name", name, "--storage", storage, "--trials", "1", "--timesteps", "65536",
                       cwd=tmp_path, env=TINY, timeout=300)
        one_line_error(proc, "other objectives")
        assert optuna.load_study(study_name=name, storage=storage).trials == []


# ---------------------------------------------------------------- real runs
@pytest.mark.slow
def test_a_study_of_an_env_without_end_to_end_optimises_grip_and_delivery(tmp_path):
    env_ini = ini(tmp_path, "[env]\nreport_interval = 64\n", "tiny.ini")
    env_args = ("--env", TINY_ENV, "--env-config", str(env_ini))
    storage = f"sqlite:///{tmp_path}/s.db"

    train = cli_json(run_cli("train", *env_args, "--timesteps", "200000", "--run-dir", str(tmp_path / "run"),
                             "--json", cwd=tmp_path, env=TINY, timeout=900))
    assert train["status"] == "completed", train["error"]
    assert train[E2E] is None and E2E in train["not_logged"] and "grip_attempts" in train["not_logged"]
    assert (train["behavioral_analysis"]["severity"], train["behavioral_analysis"]["next_focus"]) \
        != ("critical", "diagnostic_grip")

    # A warm study: the focus comes from the run, every trial continues its drone.
    study = cli_json(run_cli("study", "--from-run", "run", *env_args, "--trials", "2", "--timesteps", "65536",
                             "--storage", storage, "--json", cwd=tmp_path, env=TINY, timeout=1200))
    assert study["objectives"] == [GRIP, DELIV]
    assert E2E in study["objectives_note"]
    assert study["states"] == {"COMPLETE": 2}, study["states"]  # none failed for "missing metrics"
    assert study["pareto"]
    for entry in study["pareto"]:
        assert set(entry["values"]) == {GRIP, DELIV}
    assert study["warm_start"] == str((tmp_path / "run" / "model.pt").resolve())

    stored = optuna.load_study(study_name=study["study_name"], storage=storage)
    assert len(stored.directions) == 2
    assert stored.user_attrs["objectives"] == [GRIP, DELIV]
    assert stored.user_attrs["objectives_note"] == study["objectives_note"]
    assert all(len(t.values) == 2 for t in stored.trials)

    out = tmp_path / "proposals" / "next_config.json"
    exported = cli_json(run_cli("export", "--study-name", study["study_name"], "--storage", storage, "--out", str(out),
                                "--json", cwd=tmp_path, env=TINY, timeout=300))
    assert set(exported["values"]) == {GRIP, DELIV}
    assert out.is_file()
    for note in (Path(exported["why"]), Path(exported["notes"])):  # the sidecar and the lab note
        text = note.read_text()
        assert "Objectives:" in text and E2E in text, text

    report = cli_json(run_cli("report", "--study-name", study["study_name"], "--storage", storage,
                              "--out", str(tmp_path / "report"), "--json", cwd=tmp_path, env=TINY, timeout=300))
    assert report["objectives"] == [GRIP, DELIV]
    assert report["objectives_note"] == study["objectives_note"]
    assert all(set(top["values"]) == {GRIP, DELIV} for top in report["top"])
    assert study["objectives_note"] in (tmp_path / "report" / "report.md").read_text()

    # The run's analysis: unlogged attempts make it neither critical nor diagnostic_grip.
    for extra in ((), ("--recompute",)):
        shown = cli_json(run_cli("analyze", "run", *extra, "--json", cwd=tmp_path, timeout=120))
        assert shown["severity"] != "critical" and shown["next_focus"] != "diagnostic_grip", shown
        assert {E2E, "grip_attempts"} <= set(shown["not_logged"])
        assert shown["metrics_summary"]["end_to_end"] == "n/a"
        human = run_cli("analyze", "run", *extra, cwd=tmp_path, timeout=120)
        assert human.returncode == 0, human.stderr
        assert "Not logged" in human.stdout
        assert "CRITICAL" not in human.stdout and "diagnostic_grip" not in human.stdout


def test_a_focus_study_of_an_env_nobody_described_is_refused_not_run_to_failure(tmp_path):
    """The issue: an env that does not log perfect_now gets a study of what it can measure.
    With --focus there is no run to show what this env logs and no metric map: guessing all
    three would fail every trial on end-to-end, so the study is refused before anything runs,
    saying how to give the evidence (a run of the env, or a metric map)."""
    env_ini = ini(tmp_path, "[env]\nreport_interval = 64\n", "tiny.ini")
    storage = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--env", TINY_ENV, "--env-config", str(env_ini),
                   "--trials", "2", "--timesteps", "65536", "--storage", storage, "--json",
                   cwd=tmp_path, env=TINY, timeout=300)
    one_line_error(proc, "cannot tell which of grip, delivery and end-to-end", "--from-run", "[drex.metrics]")
    assert not (tmp_path / "s.db").exists() or optuna.get_all_study_summaries(storage) == []


@pytest.mark.slow
def test_a_study_of_the_c_drone_optimises_its_score(tmp_path):
    require_built("drone")
    storage = f"sqlite:///{tmp_path}/s.db"
    study = cli_json(run_cli("study", "--focus", "improve_grip", "--env", "puffer_drone", "--trials", "2",
                             "--timesteps", "65536", "--storage", storage, "--json", cwd=tmp_path, timeout=1200))
    assert study["objectives"] == ["score"]
    assert study["states"] == {"COMPLETE": 2}, study["states"]  # none failed for "missing metrics"
    assert all(set(entry["values"]) == {"score"} for entry in study["pareto"])

    stored = optuna.load_study(study_name=study["study_name"], storage=storage)
    assert len(stored.directions) == 1 and stored.user_attrs["objectives"] == ["score"]
    for trial in stored.trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["score"] == trial.values[0]
        a = summary["behavioral_analysis"]
        assert (a["severity"], a["next_focus"]) == ("not_observed", "name_a_focus")
        assert "score" in summary["logged"]
    # Recomputed from the summary, the trial's run is still not observed, not critical.
    shown = cli_json(run_cli("analyze", str(run_dir), "--recompute", "--json", cwd=tmp_path, timeout=120))
    assert (shown["severity"], shown["next_focus"]) == ("not_observed", "name_a_focus")

    out = tmp_path / "autopilot" / "proposals" / "next_config.json"
    exported = cli_json(run_cli("export", "--study-name", study["study_name"], "--storage", storage, "--out", str(out),
                                "--json", cwd=tmp_path, timeout=300))
    assert set(exported["values"]) == {"score"}
    assert "Objectives:" in Path(exported["why"]).read_text()
    report = cli_json(run_cli("report", "--study-name", study["study_name"], "--storage", storage,
                              "--out", str(tmp_path / "report"), "--json", cwd=tmp_path, timeout=300))
    assert report["objectives"] == ["score"]
    assert all(set(top["values"]) == {"score"} for top in report["top"])


@pytest.mark.slow
def test_trials_whose_drone_was_never_observed_fail_saying_so(tmp_path):
    """An env reporting less often than a trial's budget (and taking no report interval):
    every trial fails as "not observed", never as a drone that cannot grip."""
    env_ini = ini(tmp_path, "[drex.metrics]\ngrip_success = perfect_grip\ndelivery_success = perfect_deliv\n"
                            "end_to_end_success = none\n", "rare.ini")
    storage = f"sqlite:///{tmp_path}/s.db"
    study = cli_json(run_cli("study", "--focus", "improve_grip", "--env", "tiny_envs:ReportsRarely",
                             "--env-config", str(env_ini), "--trials", "2", "--timesteps", "65536",
                             "--storage", storage, "--json", cwd=tmp_path, env=TINY, timeout=1200))
    assert study["states"] == {"FAIL": 2}, study["states"]
    stored = optuna.load_study(study_name=study["study_name"], storage=storage)
    for trial in stored.trials:
        assert trial.user_attrs["fail_reason"].startswith("not observed: no behaviour statistic arrived")
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        analysis = summary["behavioral_analysis"]
        assert (analysis["severity"], analysis["next_focus"]) == ("not_observed", "train_longer")

