"""The brief's rules hold everywhere; this machine's limits only where a run trains here.

Through the real CLI: a device or precision this machine cannot train is refused by
``train``, ``study`` and ``autopilot`` before anything is written (one line, exit 2);
``validate`` checks the brief's rules and, with ``--here``, this machine; the brief's
topology guidance is a warning; the brief's dotted key names are accepted; the theory
behind a proposal travels with it (``next_config.notes.md``) into the run's notes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from drex_opt import autopilot as autopilot_mod
from drex_opt import notes
from drex_opt.rules import config, machine, safety

from cli_helpers import ROOT, one_line_error, run_cli

CORES = machine.physical_cores()
QUICK = config.load_baseline("quick")
ABSENT_DEVICES = [device for device in ("cuda", "mps") if device not in machine.available_devices()]


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refused(proc, *fragments: str) -> None:
    """``validate``'s verdict on an invalid proposal: exit 2, one problem line naming ``fragments``."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    problems = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(problems) == 1 and all(fragment in problems[0] for fragment in fragments), proc.stderr


def autopilot_folder(root: Path) -> Path:
    configs = root / "autopilot" / "configs"
    configs.mkdir(parents=True)
    for name in ("baseline_quick.json", "baseline_full.json"):
        shutil.copy(ROOT / "autopilot" / "configs" / name, configs / name)
    return root


# ---------------------------------------------------------------- devices and precision
@pytest.mark.parametrize("device", ABSENT_DEVICES)
def test_train_refuses_a_device_this_machine_lacks_before_anything_runs(tmp_path, device):
    override = write(tmp_path / "o.json", {"train": {"device": device}})
    proc = run_cli("train", "--override", str(override), "--run-dir", str(tmp_path / "run"),
                   "--timesteps", "1000", cwd=tmp_path)
    line = one_line_error(proc, "train.device", device, "this machine", "it has cpu")
    assert "summary" not in line
    assert tree(tmp_path) == ["o.json"], "no run folder, no summary, nothing written"


@pytest.mark.parametrize("device", ABSENT_DEVICES)
def test_study_and_autopilot_refuse_a_device_this_machine_lacks(tmp_path, device):
    base = json.loads((ROOT / "autopilot/configs/baseline_quick.json").read_text())
    base["train"]["device"] = device
    baseline = write(tmp_path / "gpu.json", base)
    proc = run_cli("study", "--focus", "diagnostic_grip", "--baseline", str(baseline), "--trials", "1",
                   "--timesteps", "1000", "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    one_line_error(proc, "train.device", device, "it has cpu")
    assert tree(tmp_path) == ["gpu.json"], "no storage, no study folder"

    root = autopilot_folder(tmp_path / "pilot")
    proposal = '{"train": {"device": "%s"}}' % device
    write(root / "autopilot/proposals/next_config.json", proposal)
    proc = run_cli("autopilot", "--runs", "2", "--timesteps", "1000", cwd=root)
    one_line_error(proc, "next_config.json", "train.device", "it has cpu")
    assert not (root / "autopilot" / "runs").exists()
    assert (root / "autopilot/proposals/next_config.json").read_text() == proposal, "the proposal is kept"


def test_bfloat16_off_cuda_is_refused_where_it_would_train_and_a_warning_elsewhere(tmp_path):
    override = write(tmp_path / "o.json", {"train": {"precision": "bfloat16"}})
    proc = run_cli("train", "--override", str(override), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    one_line_error(proc, "train.precision", "bfloat16", "float32", "cpu")
    assert not (tmp_path / "run").exists()

    # Not training here: valid by the brief's ranges, but the user is told what it means.
    proc = run_cli("validate", str(override), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("warning: train.precision") and "float32" in line
               for line in proc.stderr.splitlines()), proc.stderr
    proc = run_cli("validate", str(override), "--here", cwd=tmp_path)
    refused(proc, "train.precision", "float32")
    proc = run_cli("validate", str(override), "--here", "--clamp", "--json", cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["overrides"]["train"]["precision"] == "float32"


# ---------------------------------------------------------------- validate: here and there
def owners_proposal(tmp_path) -> Path:
    """The brief's own example topology, meant for the owner's 28-core machine."""
    proposal = {"env": {"num_envs": 4, "num_drones": 8}, "vec": {"num_workers": 28, "num_envs": 56}}
    proposal["train"] = safety.derive_batch_sizes(safety.merge(QUICK, proposal))
    return write(tmp_path / "owner.json", proposal)


@pytest.mark.skipif(CORES >= 28, reason="this machine has as many cores as the owner's")
def test_validate_and_clamp_leave_another_machines_topology_alone(tmp_path):
    proposal = owners_proposal(tmp_path)
    before = proposal.read_text()
    proc = run_cli("validate", str(proposal), "--clamp", "--json", cwd=tmp_path)
    assert proc.returncode == 0
    result = json.loads(proc.stdout)
    assert result["valid"] and result["overrides"]["vec"] == {"num_workers": 28, "num_envs": 56}
    assert result["adjustments"] == []
    # advice, not an error: against this machine by default, naming it
    assert any("vec.num_workers" in w and f"{CORES} cores of this machine" in w for w in result["warnings"])

    proc = run_cli("validate", str(proposal), "--cores", "28", "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["warnings"] == []

    # Where it would train here, this machine's cores are a rule, and --clamp fits them.
    proc = run_cli("validate", str(proposal), "--here", cwd=tmp_path)
    refused(proc, "vec.num_workers", "28", f"{CORES} physical cores")
    proc = run_cli("validate", str(proposal), "--here", "--clamp", "--json", cwd=tmp_path)
    fitted = json.loads(proc.stdout)["overrides"]
    assert fitted["vec"]["num_workers"] == CORES and fitted["vec"]["num_envs"] % CORES == 0
    assert safety.validate(fitted, QUICK, require_sizes=True) == []
    assert proposal.read_text() == before, "validate never writes"

    proc = run_cli("validate", str(proposal), "--here", "--cores", "28", cwd=tmp_path)
    one_line_error(proc, "--here", "--cores")


def test_the_brief_topology_advice_for_a_28_core_machine():
    """The brief: on a 28-core Mac Studio prefer vec.num_workers ≤ 28 and vec.num_envs ∈ {28, 56, 84}."""
    def advice(workers, envs):
        cfg = safety.merge(QUICK, {"vec": {"num_workers": workers, "num_envs": envs}})
        return [str(a) for a in machine.topology_advice(cfg, 28, "the target machine")]

    for envs in (28, 56, 84):
        assert advice(28, envs) == []
    assert advice(14, 42) and "28, 56, 84" in advice(14, 42)[0]
    assert [a.split(":")[0] for a in advice(32, 64)] == ["vec.num_workers", "vec.num_envs"]


# ---------------------------------------------------------------- dotted keys
def test_the_briefs_dotted_key_names_are_accepted_and_written_nested(tmp_path):
    dotted = write(tmp_path / "p.json", {"train.learning_rate": 0.001, "train": {"ent_coef": 0.02}})
    proc = run_cli("validate", str(dotted), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["train"]["learning_rate"] == 0.001 and out["train"]["ent_coef"] == 0.02
    assert "train.learning_rate" not in out
    proc = run_cli("validate", str(dotted), "--clamp", cwd=tmp_path)
    assert json.loads(proc.stdout)["train"]["learning_rate"] == 0.001, "--clamp keeps it"

    same = write(tmp_path / "same.json", {"train.learning_rate": 0.001, "train": {"learning_rate": 0.001}})
    assert run_cli("validate", str(same), cwd=tmp_path).returncode == 0
    clash = write(tmp_path / "clash.json", {"train.learning_rate": 0.001, "train": {"learning_rate": 0.002}})
    refused(run_cli("validate", str(clash), cwd=tmp_path), "train.learning_rate", "given twice")
    unknown = write(tmp_path / "unknown.json", {"train.learning_rat": 0.001})
    refused(run_cli("validate", str(unknown), cwd=tmp_path), "train.learning_rat", "unknown key")
    beyond = write(tmp_path / "beyond.json", {"train.learning_rate": 2.0})
    refused(run_cli("validate", str(beyond), cwd=tmp_path), "train.learning_rate", "above the maximum")
    # train reads an override the same way
    proc = run_cli("train", "--override", str(clash), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    one_line_error(proc, "train.learning_rate", "given twice")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_dotted_proposal_with_notes_trains_and_its_why_reaches_the_run_entry(tmp_path):
    root = autopilot_folder(tmp_path)
    proposals = root / "autopilot" / "proposals"
    write(proposals / "next_config.json", {"train.learning_rate": 0.0042})
    theory = "Theory: a higher learning rate should\nget the drones to the box sooner."
    write(notes.sidecar_path(proposals / "next_config.json"), theory + "\n")
    proc = run_cli("autopilot", "--runs", "1", "--timesteps", "20000", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    run = Path(json.loads(proc.stdout)[0]["run_dir"])
    if not run.is_absolute():
        run = root / run
    assert json.loads((run / "config.json").read_text())["train"]["learning_rate"] == 0.0042
    assert json.loads((run / "override.json").read_text()) == {"train": {"learning_rate": 0.0042}}
    entry = (run / "notes.txt").read_text()
    assert "Why (the proposal's notes):" in entry
    assert "  | Theory: a higher learning rate should\n  | get the drones to the box sooner." in entry
    assert (run / "override.notes.md").read_text().strip() == theory
    # reset with the proposal: the next run starts with no proposal and no notes
    assert json.loads((proposals / "next_config.json").read_text()) == {}
    assert not notes.sidecar_path(proposals / "next_config.json").exists()


def test_a_run_without_notes_says_so_and_advice_is_recorded(tmp_path):
    entry = notes.run_entry("r1", "quick", {}, {"status": "completed"}, None, "next",
                            advice=["vec.num_envs: 6 is not a multiple of the 4 cores of this machine"])
    assert "Why: no notes came with the proposal." in entry
    assert "Topology advice: vec.num_envs: 6 is not a multiple of the 4 cores" in entry


@pytest.mark.slow
@pytest.mark.skipif(CORES < 2, reason="two workers need two cores")
def test_the_autopilot_records_this_machines_topology_advice(tmp_path, monkeypatch):
    """A 2-worker topology on a (pretended) 4-core machine trains, and its notes carry the advice."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "physical_cores", lambda: 4)
    root = autopilot_folder(tmp_path)
    proposal = {"vec": {"num_workers": 2, "num_envs": 2}}
    proposal["train"] = safety.derive_batch_sizes(safety.merge(QUICK, proposal))
    write(root / "autopilot/proposals/next_config.json", proposal)
    settings = autopilot_mod.AutopilotSettings(runs=1, timesteps=20000, autopilot_dir=root / "autopilot")
    [result] = autopilot_mod.run_loop(settings)
    assert result.summary["status"] == "completed", result.summary.get("error")
    entry = Path(result.note).read_text()
    assert "Topology advice: vec.num_envs: 2 is not a multiple of the 4 cores of this machine" in entry
