"""Foreign PufferLib envs (``--env puffer_NAME``, ``--env module:Class``, ``--env-config``):
their ``.ini`` settings, the run topology mapped onto each env's own agent count, the
report-interval and shrink rules, the refusals before anything runs, and real runs.

Expected values come from their sources: PufferLib 3.0.0's ``config/ocean/drone.ini`` and
its C ``Drone`` signature, the shipped quick baseline, drone_delivery's constructor
arguments; never from ``drex_opt.envs.puffer``'s own tables.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from drex_opt.envs import puffer
from drex_opt.errors import UserError
from drex_opt.run import runner

from cli_helpers import ROOT, one_line_error, run_cli

TESTS = Path(__file__).resolve().parent
QUICK = json.loads((ROOT / "autopilot" / "configs" / "baseline_quick.json").read_text())
PUFFERLIB = Path(importlib.util.find_spec("pufferlib").origin).parent
DRONE_INI = PUFFERLIB / "config" / "ocean" / "drone.ini"
# The C envs scripts/build_puffer_envs.py was asked to build (CI asks for drone).
ASKED = Path(sys.prefix) / "drex-puffer-envs.txt"
# With the tests folder importable, the CLI and its training child find tiny_envs.
TINY = {"PYTHONPATH": str(TESTS)}


def binding(short: str) -> Path | None:
    """The compiled binding of PufferLib's ocean env ``short``, if it is built here."""
    return next(iter(sorted((PUFFERLIB / "ocean" / short).glob("binding*.so"))), None)


def asked_for(short: str) -> bool:
    if not ASKED.is_file():
        return False
    return short in ASKED.read_text().replace(",", " ").split()


def require_built(short: str) -> Path:
    """The binding of ``short``; skip when it is not built, but fail when the setup was asked
    to build it (CI builds drone: a missing binding there is a broken setup, not a skip)."""
    found = binding(short)
    if found is not None:
        return found
    message = f"PufferLib's {short} binding is not built here ({PUFFERLIB / 'ocean' / short})"
    if asked_for(short):
        pytest.fail(f"{message}, though {ASKED} lists it", pytrace=False)
    pytest.skip(f"{message}: DREX_PUFFER_ENVS={short} bash scripts/setup.sh builds it")


@pytest.fixture
def built_drone() -> Path:
    return require_built("drone")


def events(run_dir: Path, kind: str) -> list[dict]:
    out = []
    for line in (Path(run_dir) / "train.log").read_text().splitlines():
        if line.startswith("@drex ") and f'"event": "{kind}"' in line:
            out.append(json.loads(line[len("@drex "):]))
    return out


def quick(total: int = 2_000_000) -> tuple[dict, dict, int]:
    """The quick baseline's env and vec sections, and a budget."""
    return dict(QUICK["env"]), dict(QUICK["vec"]), total


class FakeDrone:
    """PufferLib 3.0.0's C ``Drone`` signature: one agent per ``num_envs``."""

    def __init__(self, num_envs=16, render_mode=None, report_interval=1, buf=None, seed=0, n_targets=5,
                 moves_left=1000):
        raise AssertionError("topology reads the signature only")


class FakeDroneDelivery:
    """drone_delivery's signature: ``num_envs`` arenas of ``num_drones`` drones."""

    def __init__(self, num_envs=16, num_drones=64, report_interval=1024, buf=None, seed=0):
        raise AssertionError("topology reads the signature only")


class NoAgentCount:
    def __init__(self, buf=None, seed=0):
        raise AssertionError("topology reads the signature only")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- the .ini
def test_the_installed_drone_ini_is_read_as_pufferlib_declares_it():
    src = puffer.source("puffer_drone")
    assert Path(src.ini_path) == DRONE_INI == puffer.find_ini("puffer_drone")
    s = src.sections
    assert s["base"]["env_name"] == "puffer_drone"
    assert s["base"]["policy_name"] == "Policy" and s["base"]["rnn_name"] == "Recurrent"
    assert s["vec"]["num_envs"] == 8
    assert s["env"]["num_envs"] == 1024  # the C Drone's agent count: 8 × 1024 = 8,192 agents
    assert s["train"]["bptt_horizon"] == 64
    # drone.ini's own values win over default.ini's (minibatch 8192, 10_000_000 steps there).
    assert s["train"]["minibatch_size"] == 32768
    assert s["train"]["total_timesteps"] == 100_000_000
    # Keys drone.ini leaves out come from default.ini, as `puffer train` reads them.
    assert s["vec"]["backend"] == "Multiprocessing"
    assert src.class_path is None and src.ocean_short_name == "drone"


# ---------------------------------------------------------------- topology
def test_the_quick_baseline_on_the_c_drone_is_its_num_envs_and_is_warned_about():
    env, vec, total = quick()
    src = puffer.source("puffer_drone")
    topo = puffer.topology(src, FakeDrone, env, vec, total)
    # 8 × 16 drones per sub-env, as the C Drone counts them: its num_envs.
    assert topo.env_kwargs["num_envs"] == 128
    assert "num_drones" not in topo.env_kwargs  # the C Drone takes none
    assert topo.num_envs == 4 and topo.num_workers == 1
    assert topo.planned_agents == 512
    assert topo.configured_agents == 8_192
    assert any("num_envs" in note and "128" in note for note in topo.notes), topo.notes
    warning = puffer.shrink_warning(src, topo.planned_agents, topo.configured_agents)
    assert warning is not None and warning.startswith("warning:")
    assert "512" in warning and "8,192" in warning
    # The parent says it before the run, from the .ini alone (no creator imported).
    before = runner.topology_warning(QUICK, "puffer_drone")
    assert before is not None and "512" in before and "8,192" in before


def test_as_many_agents_as_the_ini_configures_is_not_warned_about():
    src = puffer.source("puffer_drone")
    topo = puffer.topology(src, FakeDrone, {"num_envs": 8, "num_drones": 128}, {"num_envs": 8, "num_workers": 1},
                           2_000_000)
    assert topo.env_kwargs["num_envs"] == 1024 and topo.planned_agents == 8_192
    assert puffer.shrink_warning(src, topo.planned_agents, topo.configured_agents) is None


@pytest.fixture
def delivery_ini(tmp_path) -> Path:
    """A drone_delivery .ini given with --env-config (drone_delivery is not installed here)."""
    path = tmp_path / "drone_delivery.ini"
    path.write_text("[base]\nenv_name = puffer_drone_delivery\n\n"
                    "[env]\nnum_envs = 16\nnum_drones = 64\nreport_interval = 1024\n")
    return path


def test_an_env_taking_arenas_and_drones_gets_them_as_they_are(delivery_ini):
    env, vec, total = quick()
    src = puffer.source(puffer.make_env_id("puffer_drone_delivery", delivery_ini))
    topo = puffer.topology(src, FakeDroneDelivery, env, vec, total)
    assert topo.env_kwargs["num_envs"] == 8 and topo.env_kwargs["num_drones"] == 16
    assert topo.planned_agents == 512
    assert any("passed" in note and "num_drones" in note for note in topo.notes), topo.notes


def test_a_short_run_reports_often_enough(delivery_ini):
    env, vec, total = quick(2_000_000)
    # At 1024, 512 drones first report after 524,288 agent steps: 3 reports in 2M steps.
    assert puffer.first_report_steps(512, 1024) == 524_288
    src = puffer.source(puffer.make_env_id("puffer_drone_delivery", delivery_ini))
    topo = puffer.topology(src, FakeDroneDelivery, env, vec, total)
    new = topo.env_kwargs["report_interval"]
    assert 1 <= new < 1024
    assert total // (topo.planned_agents * new) >= 20
    notes = [note for note in topo.notes if "report_interval" in note]
    assert len(notes) == 1 and "1024" in notes[0] and str(new) in notes[0], topo.notes
    assert "524,288" in notes[0] or "524288" in notes[0]


def test_the_report_interval_of_the_signature_is_reduced_too(tmp_path):
    """No report_interval in the .ini: the constructor's default (1024) is what the env uses."""
    ini = tmp_path / "bare.ini"
    ini.write_text("[env]\n")
    env, vec, total = quick(2_000_000)
    topo = puffer.topology(puffer.source(puffer.make_env_id("puffer_drone_delivery", ini)), FakeDroneDelivery,
                           env, vec, total)
    assert total // (topo.planned_agents * topo.env_kwargs["report_interval"]) >= 20


def test_a_long_run_keeps_the_report_interval(delivery_ini):
    env, vec, total = quick(10**12)
    topo = puffer.topology(puffer.source(puffer.make_env_id("puffer_drone_delivery", delivery_ini)),
                           FakeDroneDelivery, env, vec, total)
    assert topo.env_kwargs["report_interval"] == 1024
    assert not any("report_interval" in note for note in topo.notes), topo.notes


def test_an_env_without_an_agent_count_gets_none():
    env, vec, total = quick()
    src = puffer.source("my_envs:Plain")  # module:Class: nothing imported to read its settings
    topo = puffer.topology(src, NoAgentCount, env, vec, total)
    assert not {"num_agents", "num_drones", "num_envs"} & set(topo.env_kwargs)
    assert any("do not apply" in note for note in topo.notes), topo.notes
    assert topo.planned_agents is None
    assert puffer.shrink_warning(src, 512, topo.configured_agents) is None


# ---------------------------------------------------------------- env ids
def test_env_ids_round_trip_and_label(tmp_path, monkeypatch):
    assert puffer.make_env_id("puffer_drone") == "puffer_drone"
    assert puffer.split_env_id("puffer_drone") == ("puffer_drone", None)
    assert puffer.env_label("puffer_drone") == "puffer_drone"
    monkeypatch.chdir(tmp_path)
    env_id = puffer.make_env_id("tiny_envs:GripDeliverOnly", "fast.ini")  # relative: made absolute
    assert env_id == f"tiny_envs:GripDeliverOnly@{tmp_path.resolve() / 'fast.ini'}"
    assert puffer.split_env_id(env_id) == ("tiny_envs:GripDeliverOnly", str(tmp_path.resolve() / "fast.ini"))
    assert puffer.env_label(env_id) == "tiny_envs:GripDeliverOnly-fast"
    # An "@" in the .ini's folder stays in the path.
    odd = tmp_path / "a@b" / "x.ini"
    assert puffer.split_env_id(puffer.make_env_id("puffer_drone", odd)) == ("puffer_drone", str(odd.resolve()))


# ---------------------------------------------------------------- refusals
def test_load_class_imports_a_puffer_env_or_says_why(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # importing PufferLib writes a resources link into the working directory
    monkeypatch.syspath_prepend(str(TESTS))
    import tiny_envs

    assert puffer.load_class("tiny_envs:GripDeliverOnly") is tiny_envs.GripDeliverOnly
    with pytest.raises(UserError, match="PufferEnv"):
        puffer.load_class("tiny_envs:NotAnEnv")
    with pytest.raises(UserError, match="cannot import"):
        puffer.load_class("no_such_module_xyz:Foo")
    with pytest.raises(UserError, match="Missing"):
        puffer.load_class("tiny_envs:Missing")
    with pytest.raises(UserError, match="module:Class"):
        puffer.load_class("justamodule")
    # A module that fails while importing is the same one-line refusal.
    (tmp_path / "drex_broken_env_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="cannot import.*boom"):
        puffer.load_class("drex_broken_env_mod:Env")
    # check() imports a class path in a separate interpreter, which finds the user's modules
    # on PYTHONPATH or in the working directory, as the CLI's training child does.
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    with pytest.raises(UserError, match="PufferEnv"):
        puffer.check("tiny_envs:NotAnEnv")
    assert puffer.check("tiny_envs:GripDeliverOnly").class_path == "tiny_envs:GripDeliverOnly"


def test_a_plain_unknown_name_is_an_unknown_env():
    for call in (puffer.source, puffer.check, runner.check_env_name):
        with pytest.raises(UserError, match="unknown env"):
            call("justamodule")


def test_an_unbuilt_c_env_is_refused_with_the_way_to_build_it():
    if binding("breakout") is not None:
        pytest.skip("breakout's binding happens to be built here")
    src = puffer.source("puffer_breakout")
    assert puffer.unbuilt_binding(src) == PUFFERLIB / "ocean" / "breakout" / "binding.c"
    with pytest.raises(UserError, match="DREX_PUFFER_ENVS=breakout"):
        puffer.check("puffer_breakout")


def test_an_unbuilt_c_env_is_skipped_unless_the_setup_was_asked_to_build_it(tmp_path, monkeypatch):
    asked = tmp_path / "drex-puffer-envs.txt"
    monkeypatch.setattr(sys.modules[__name__], "ASKED", asked)
    with pytest.raises(pytest.skip.Exception):
        require_built("no_such_env_xyz")  # no list at all
    asked.write_text("drone\n")
    with pytest.raises(pytest.skip.Exception):
        require_built("no_such_env_xyz")  # listed envs are others
    asked.write_text("drone\nno_such_env_xyz\n")
    with pytest.raises(pytest.fail.Exception, match="lists it"):
        require_built("no_such_env_xyz")


def test_a_built_c_env_passes_the_check(built_drone):
    assert puffer.unbuilt_binding(puffer.source("puffer_drone")) is None
    assert puffer.check("puffer_drone").name == "puffer_drone"


# ---------------------------------------------------------------- the CLI refuses before anything runs
def refuse(tmp_path, args):
    """The CLI run on ``args`` in ``tmp_path``, which holds only an ``x.ini``."""
    (tmp_path / "x.ini").write_text("[env]\n")
    return run_cli(*args, cwd=tmp_path, env=TINY, timeout=120)


def written(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "x.ini")


@pytest.mark.parametrize("args, fragment", [
    (["train", "--env", "puffer_nonexistent"], "unknown env"),
    (["train", "--env", "drone_pp", "--env-config", "x.ini"], "built in"),
    (["train", "--env", "puffer_drone", "--env-config", "missing.ini"], "no such file"),
    pytest.param(["train", "--env", "puffer_breakout"], "DREX_PUFFER_ENVS=breakout",
                 marks=pytest.mark.skipif(binding("breakout") is not None, reason="breakout is built here")),
])
def test_the_cli_refuses_a_bad_env_in_one_line(tmp_path, args, fragment):
    one_line_error(refuse(tmp_path, args), fragment)
    assert written(tmp_path) == [], "nothing written: no run folder"


# A module:Class is checked in a throwaway interpreter: importing the user's module imports
# PufferLib, which prints notices and writes a ``resources`` link into the working directory.
NOT_AN_ENV = [
    (["train", "--env", "tiny_envs:NotAnEnv"], "PufferEnv"),
    (["study", "--focus", "improve_grip", "--env", "tiny_envs:NotAnEnv"], "PufferEnv"),
    (["train", "--env", "tiny_envs:Missing"], "has no Missing"),
]


@pytest.mark.parametrize("args, fragment", NOT_AN_ENV)
def test_a_class_that_is_no_env_is_refused_in_one_line_writing_nothing(tmp_path, args, fragment):
    proc = refuse(tmp_path, args)
    assert written(tmp_path) == [], "a refused run or study writes nothing"
    one_line_error(proc, fragment)


def test_a_config_does_not_make_an_unknown_name_an_env(tmp_path):
    proc = refuse(tmp_path, ["train", "--env", "puffer_nonexistent_x", "--env-config", "x.ini"])
    one_line_error(proc, "unknown env 'puffer_nonexistent_x'")
    assert written(tmp_path) == []


def test_the_autopilot_refuses_a_bad_env_in_one_line(pilot):
    proc = run_cli("autopilot", "--env", "no_such_mod:X", cwd=pilot, env=TINY, timeout=120)
    one_line_error(proc, "cannot import")
    assert sorted(p.name for p in (pilot / "autopilot").iterdir()) == ["configs"], "no run started"


# ---------------------------------------------------------------- real runs
@pytest.mark.slow
def test_a_class_env_trains_with_its_ini(tmp_path):
    ini = tmp_path / "grip.ini"
    ini.write_text("[env]\nnum_agents = 4096\nreport_interval = 64\n")
    run_dir = tmp_path / "run"
    proc = run_cli("train", "--env", "tiny_envs:GripDeliverOnly", "--env-config", str(ini), "--timesteps", "200000",
                   "--run-dir", str(run_dir), "--json", cwd=tmp_path, env=TINY, timeout=900)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["status"] == "completed", s["error"]
    assert s["env"] == puffer.make_env_id("tiny_envs:GripDeliverOnly", ini)
    assert events(run_dir, "start")[0]["agents"] == 512
    notes = s["notes"]
    assert any("num_agents" in n and "128" in n and "4096" in n for n in notes), notes
    assert any("report_interval" in n and "64" in n for n in notes), notes
    # 4096 per sub-env × default.ini's vec.num_envs 2 = 8,192 configured; the run trains 512.
    assert any(n.startswith("warning:") and "512" in n and "8,192" in n for n in notes), notes
    assert any(line.startswith("warning:") and "8,192" in line for line in proc.stderr.splitlines()), proc.stderr
    assert is_number(s["grip_success"]) and is_number(s["delivery_success"])
    assert "environment/perfect_grip" in s["metrics"]


@pytest.mark.slow
def test_the_c_drone_trains_on_the_quick_topology(built_drone, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", "--env", "puffer_drone", "--timesteps", "150000", "--run-dir", str(run_dir), "--json",
                   cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["status"] == "completed", s["error"]
    assert s["agent_steps"] >= 150_000
    assert events(run_dir, "start")[0]["agents"] == 512
    notes = s["notes"]
    assert any("num_envs" in n and "128" in n and "1024" in n for n in notes), notes
    assert any(n.startswith("warning:") and "512" in n and "8,192" in n for n in notes), notes
    assert any(line.startswith("warning:") and "8,192" in line for line in proc.stderr.splitlines()), proc.stderr
