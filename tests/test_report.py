"""`drex-opt report`: images and report.md from a real tiny study, and from planted studies
that reach the cases a tiny budget cannot (varied objectives, repeats, one parameter)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from cli_helpers import one_line_error, run_cli

NAME = "drex-improve_grip-quick"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANALYSIS = {"severity": "ok", "next_focus": "improve_carrying", "insights": ["drops the box while carrying"]}






def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"


@pytest.fixture(scope="module")
def real_study(tmp_path_factory):
    """Two real trials (baseline + one sampled): (working dir, storage URL)."""
    cwd = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{cwd}/s.db"
    proc = run_cli("study", "--focus", "improve_grip", "--timesteps", "120000", "--trials", "2", "--storage", url,
                   "--no-early-stopping", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, url


def plant_study(url: str, name: str, n: int = 12, params: tuple = ("lr", "horizon", "drones"), seed: int = 1):
    """A study shaped like drex-opt's, with objectives that depend on the learning rate."""
    rng = random.Random(seed)
    dists = {"train.learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
             "train.bptt_horizon": CategoricalDistribution([16, 32, 64]), "env.num_drones": IntDistribution(1, 8)}
    keys = {"lr": "train.learning_rate", "horizon": "train.bptt_horizon", "drones": "env.num_drones"}
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize"] * 3)
    for key, value in {"focus": "improve_carrying", "theory": "Carrying fails because\nthe box adds mass.",
                       "timesteps": 2_000_000, "trials_planned": n}.items():
        study.set_user_attr(key, value)
    for i in range(n):
        p = {"train.learning_rate": 10 ** rng.uniform(-4, -2), "train.bptt_horizon": rng.choice([16, 32, 64]),
             "env.num_drones": rng.randint(1, 8)}
        p = {keys[k]: p[keys[k]] for k in params}
        grip = min(1.0, 0.1 + 60 * p.get("train.learning_rate", 0.005) + rng.random() * 0.1)
        deliv = grip * rng.uniform(0.2, 0.6)
        values = [grip, deliv, deliv * rng.uniform(0.5, 0.9)]
        state = TrialState.PRUNED if i % 5 == 4 else TrialState.COMPLETE
        attrs = {"behavioral_analysis": ANALYSIS, **({"role": "baseline"} if i == 0 else {})}
        study.add_trial(optuna.trial.create_trial(
            params=p, distributions={k: dists[k] for k in p}, state=state, user_attrs=attrs,
            values=values if state == TrialState.COMPLETE else None))
    return study


# ---------------------------------------------------------------- a real study
@pytest.mark.slow
def test_report_of_a_real_study_writes_images_and_markdown(real_study):
    cwd, url = real_study
    proc = run_cli("report", "--storage", url, "--json", cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    out = cwd / "studies" / NAME / "report"  # the default folder
    assert result["study_name"] == NAME and Path(result["out_dir"]) == Path("studies") / NAME / "report"
    assert set(result["files"]) == {"pareto", "history", "report"}, "2 trials: no importance image"
    for key in ("pareto", "history"):
        assert_png(cwd / result["files"][key])
    assert (out / "pareto.png").is_file() and (out / "history.png").is_file()
    assert not list(out.glob(".*.tmp")), "no temporary file left behind"

    study = optuna.load_study(study_name=NAME, storage=url)
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t["number"] for t in result["top"]] == [t.number for t in sorted(
        completed, key=lambda t: (t.values[2], t.values[1], t.values[0], -t.number), reverse=True)]
    assert result["states"] == {"COMPLETE": 2} and result["completed"] == 2
    assert "not enough trials" in result["importance_note"]

    md = (out / "report.md").read_text()
    assert f"# Study report: {NAME}" in md and "improve_grip" in md and "120,000 agent steps per trial" in md
    assert study.user_attrs["theory"].splitlines()[0] in md and "complete 2" in md
    assert "![Pareto front: grip × delivery](pareto.png)" in md and "(history.png)" in md
    assert "importance.png" not in md and "not enough trials" in md
    for top in result["top"]:
        trial = study.trials[top["number"]]
        assert f"### Trial {top['number']}" in md
        assert top["behavioral_analysis"] == trial.user_attrs["behavioral_analysis"]
        assert f"next focus **{trial.user_attrs['behavioral_analysis']['next_focus']}**" in md
        for name in trial.params:
            assert f"`{name}`" in md
    assert "### Trial 0 (baseline)" in md


@pytest.mark.slow
def test_report_terminal_table_and_out_folder(real_study, tmp_path):
    cwd, url = real_study
    out = tmp_path / "elsewhere"
    proc = run_cli("report", "--storage", url, "--study-name", NAME, "--out", str(out), cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "Top trials (end-to-end, then delivery, then grip)" in text
    for header in ("trial", "grip", "deliv.", "e2e", "behaviour", "params"):
        assert header in text
    study = optuna.load_study(study_name=NAME, storage=url)
    for trial in study.trials:
        row = next(line for line in text.splitlines() if line.strip().startswith(f"{trial.number} "))
        assert f"{trial.values[0]:.1%}" in row and f"{trial.values[2]:.1%}" in row
    assert "not enough trials" in text and f"wrote report: {out / 'report.md'}" in text
    assert_png(out / "pareto.png")


# ---------------------------------------------------------------- planted studies (no training)
def test_importance_repeats_and_ranking_by_means(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = plant_study(url, "planted")
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best_raw = max(completed, key=lambda t: t.values[2])
    # repeated seeds pull the raw winner below the runner-up: the report ranks by the means
    runner_up = sorted(completed, key=lambda t: t.values[2])[-2]
    mean = [v * 0.999 for v in runner_up.values]
    study.set_user_attr(f"repeats:{best_raw.number}", {"seeds": [1, 2], "values": [best_raw.values, [0, 0, 0]],
                                                       "mean": mean, "stdev": [0.05, 0.02, 0.01]})
    proc = run_cli("report", "--storage", url, "--out", "rep", "--json", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["files"]) == {"pareto", "history", "importance", "report"}
    for key in ("pareto", "history", "importance"):
        assert_png(tmp_path / result["files"][key])
    assert result["importance_note"] is None
    for name in ("grip_success", "delivery_success", "end_to_end_success"):
        ranked = sorted(result["importances"][name].items(), key=lambda kv: kv[1], reverse=True)
        assert ranked[0][0] == "train.learning_rate", "the only parameter the objectives depend on"
    top = result["top"]
    assert len(top) == 5 and [t["number"] for t in top[:2]] == [runner_up.number, best_raw.number]
    repeated = top[1]
    assert repeated["seeds"] == 2 and repeated["means"]["grip_success"] == pytest.approx(mean[0])
    assert repeated["values"]["grip_success"] == pytest.approx(best_raw.values[0])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "![Parameter importance](importance.png)" in md and "- grip: `train.learning_rate`" in md
    assert f"{mean[0]:.1%} ± 5.0%" in md
    assert result["states"] == {"COMPLETE": 10, "PRUNED": 2} and "pruned 2" in md


@pytest.mark.parametrize("n, params", [(1, ("lr", "horizon", "drones")), (2, ("lr", "horizon")), (6, ("lr",))])
def test_few_trials_or_one_parameter_do_not_crash(tmp_path, n, params):
    url = f"sqlite:///{tmp_path}/s.db"
    plant_study(url, "small", n=n, params=params)
    proc = run_cli("report", "--storage", url, "--json", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "importance" not in result["files"] and result["importances"] == {}
    expected = "not enough trials" if n < 4 else "only 1 searched parameter"
    assert expected in result["importance_note"]
    assert expected in (tmp_path / result["files"]["report"]).read_text()
    assert_png(tmp_path / result["files"]["pareto"])


# ---------------------------------------------------------------- refusals
def test_no_completed_trial_is_an_error_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="empty", storage=url, directions=["maximize"] * 3)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    proc = run_cli("report", "--storage", url, cwd=tmp_path, timeout=60)
    assert "has no completed trial" in one_line_error(proc) and "fail 1" in proc.stderr
    assert not (tmp_path / "studies").exists()


def test_study_name_is_needed_when_the_storage_holds_several(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    plant_study(url, "alpha", n=2)
    plant_study(url, "beta", n=2)
    line = one_line_error(run_cli("report", "--storage", url, cwd=tmp_path, timeout=60))
    assert "choose one with --study-name" in line and "alpha, beta" in line
    line = one_line_error(run_cli("report", "--storage", url, "--study-name", "gamma", cwd=tmp_path, timeout=60))
    assert "no study 'gamma'" in line and "alpha, beta" in line
    proc = run_cli("report", "--storage", url, "--study-name", "beta", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "studies" / "beta" / "report" / "report.md").is_file()


@pytest.mark.parametrize("storage, fragment", [
    ("postgresql://nobody@127.0.0.1:1/none", "cannot open storage"),
    ("sqlite:///{tmp}/missing.db", "no storage at"),
    ("journal:{tmp}/missing.log", "no storage at"),
])
def test_unreachable_or_missing_storage(tmp_path, storage, fragment):
    line = one_line_error(run_cli("report", "--storage", storage.format(tmp=tmp_path), cwd=tmp_path, timeout=60))
    assert fragment in line
    assert list(tmp_path.iterdir()) == []


def test_empty_storage(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.storages.RDBStorage(url)  # the tables, no study
    assert "holds no study" in one_line_error(run_cli("report", "--storage", url, cwd=tmp_path, timeout=60))
