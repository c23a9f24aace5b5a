"""`drex-opt export`: picks from the Pareto front, proposals, atomic writes, lab notes."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from drex_opt import notes
from drex_opt.rules import config
from drex_opt.search import export
from drex_opt.rules import safety
from drex_opt.errors import UserError

from cli_helpers import ROOT, run_cli





def synthetic_study(url: str, rows, repeats=None, name="s"):
    """A study of hand-made completed trials: rows of (values, learning_rate)."""
    base = config.load_baseline("quick")
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize"] * 3)
    study.set_user_attr("baseline", "quick")
    dist = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    for i, (values, lr) in enumerate(rows):
        overrides = safety.with_derived({"train": {"learning_rate": lr, "total_timesteps": 1000, "seed": 7}}, base)
        attrs = {"overrides": overrides}
        if i == 0:
            attrs["role"] = "baseline"
        study.add_trial(optuna.trial.create_trial(values=list(values), params={"train.learning_rate": lr},
                                                  distributions={"train.learning_rate": dist}, user_attrs=attrs))
    for number, record in (repeats or {}).items():
        study.set_user_attr(f"repeats:{number}", record)
    return study


ROWS = [((0.5, 0.1, 0.05), 0.003), ((0.9, 0.2, 0.1), 0.01), ((0.6, 0.6, 0.2), 0.001), ((0.4, 0.5, 0.3), 0.02)]


@pytest.mark.parametrize("pick, expected", [("e2e", 3), ("delivery", 2), ("grip", 1), ("balanced", 2)])
def test_pick_orders(tmp_path, pick, expected):
    study = synthetic_study(f"sqlite:///{tmp_path}/s.db", ROWS)
    trial, why = export.pick_trial(study, pick)
    assert trial.number == expected
    assert f"trial {expected}" in why


def test_repeated_seed_means_decide_the_pick(tmp_path):
    record = {"seeds": [1, 2], "values": [[0.6, 0.6, 0.2], [0.6, 0.6, 0.6]], "mean": [0.6, 0.6, 0.4],
              "stdev": [0.0, 0.0, 0.28]}
    study = synthetic_study(f"sqlite:///{tmp_path}/s.db", ROWS, repeats={2: record})
    trial, why = export.pick_trial(study, "e2e")
    assert trial.number == 2 and "mean of 2 seeds" in why


def test_no_completed_trial_is_an_error(tmp_path):
    study = optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path}/s.db", directions=["maximize"] * 3)
    with pytest.raises(UserError, match="no completed trial"):
        export.pick_trial(study, "e2e")


def test_proposal_holds_only_changes_and_derived_sizes(tmp_path):
    study = synthetic_study(f"sqlite:///{tmp_path}/s.db", ROWS)
    base = config.load_baseline("quick")
    proposal = export.proposal_for(study.trials[3], base, base)
    assert proposal["train"]["learning_rate"] == 0.02
    assert "total_timesteps" not in proposal["train"] and "seed" not in proposal["train"]
    size = base["env"]["num_envs"] * base["env"]["num_drones"] * base["vec"]["num_envs"] * base["train"]["bptt_horizon"]
    assert proposal["train"]["batch_size"] == proposal["train"]["minibatch_size"] == size
    assert safety.validate(proposal, base) == []
    flat = {f"{s}.{k}" for s, vals in proposal.items() for k in vals}
    assert flat <= safety.ALLOWED_KEYS


def test_export_writes_atomically_and_appends_notes(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    synthetic_study(url, ROWS)
    out = tmp_path / "autopilot" / "proposals" / "next_config.json"
    out.parent.mkdir(parents=True)
    notebook = tmp_path / "notes.txt"
    notebook.write_text("earlier entry\n")
    result = export.export("s", url, out=out, notes=notebook)
    assert json.loads(out.read_text()) == result.overrides
    text = notebook.read_text()
    assert text.startswith("earlier entry\n"), "notes are appended, never truncated"
    assert "study s" in text and "What won: trial 3" in text and "Against the baseline trial" in text
    assert "Parameters that mattered most (importance for end-to-end): learning_rate" in text
    # the theory travels with the proposal, for the run that will use it
    why = out.parent / "next_config.notes.md"
    assert result.why == str(why) and why.read_text().strip() in text and "What won: trial 3" in why.read_text()
    before, why_before = out.read_text(), why.read_text()
    dry = export.export("s", url, pick="grip", out=out, dry_run=True, notes=notebook)
    assert dry.trial == 1 and not dry.written and dry.notes is None and dry.why is None
    assert out.read_text() == before and notebook.read_text() == text and why.read_text() == why_before


def test_an_export_killed_mid_write_leaves_the_old_file(tmp_path):
    """The process dies between writing the temporary file and renaming it."""
    url = f"sqlite:///{tmp_path}/s.db"
    synthetic_study(url, ROWS)
    out = tmp_path / "next_config.json"
    out.write_text('{"train": {"learning_rate": 0.001}}\n')
    before = out.read_text()
    script = (
        "import os, signal, sys\n"
        "real = os.fsync\n"
        "def die(fd):\n"
        "    real(fd)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.fsync = die\n"
        "from drex_opt.cli import app\n"
        f"sys.argv = ['drex-opt', 'export', '--storage', {url!r}, '--study-name', 's', '--out', {str(out)!r},"
        f" '--notes', {str(tmp_path / 'n.txt')!r}]\n"
        "app()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == -9
    assert out.read_text() == before


@pytest.mark.parametrize("args, fragment", [
    (["--study-name", "nope"], "no study 'nope'"),
    (["--pick", "best"], "unknown --pick"),
])
def test_cli_errors_write_nothing(tmp_path, args, fragment):
    url = f"sqlite:///{tmp_path}/s.db"
    synthetic_study(url, ROWS)
    out = tmp_path / "next.json"
    proc = run_cli("export", "--storage", url, "--out", str(out), *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_unreachable_storage_and_empty_study(tmp_path):
    proc = run_cli("export", "--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot open storage" in proc.stderr
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="empty", storage=url, directions=["maximize"] * 3)
    proc = run_cli("export", "--storage", url, "--out", str(tmp_path / "n.json"), cwd=tmp_path)
    assert proc.returncode == 2 and "no completed trial" in proc.stderr
    assert not (tmp_path / "n.json").exists()


@pytest.mark.slow
def test_export_from_a_real_study(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    proc = run_cli("study", "--focus", "improve_carrying", "--trials", "2", "--timesteps", "120000", "--repeats", "0",
                   "--storage", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "autopilot" / "proposals" / "next_config.json"
    proc = run_cli("export", "--storage", url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    proposal = json.loads(out.read_text())
    assert proposal == result["overrides"]
    base = config.load_baseline("quick")
    assert safety.validate(proposal, base) == []
    assert {f"{s}.{k}" for s, v in proposal.items() for k in v} <= safety.ALLOWED_KEYS
    assert proposal["train"]["batch_size"] == safety.derive_batch_sizes(safety.merge(base, proposal))["batch_size"]
    assert (tmp_path / "autopilot" / "notes.txt").read_text().count("=== ") == 1


def test_notes_entry_is_plain_text_with_every_part():
    info = {"study_name": "s", "out": "o.json", "focus": "improve_carrying", "theory": "A theory.",
            "analysis": {"severity": "warning", "next_focus": "improve_carrying", "insights": ["Can grip"]},
            "trials": 5, "timesteps": 1000, "baseline": "quick", "states": {"COMPLETE": 4, "PRUNED": 1},
            "explanation": "trial 3 won", "versus_baseline": "+10 pts", "importances": [("gamma", 0.7)],
            "importance_target": "end-to-end", "changes": ["gamma 0.99 -> 0.995"], "next_step": "train it"}
    text = " ".join(notes.study_entry(info).split())  # lines wrap where they will
    for part in ("severity warning", "Can grip", "A theory.", "5 trials", "4 complete", "1 pruned",
                 "trial 3 won", "+10 pts", "gamma 0.70", "gamma 0.99 -> 0.995", "Next step: train it"):
        assert part in text, part
