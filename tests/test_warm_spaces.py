"""Warm-start sections of the search spaces: parsing, checks, resolution against a run, shipped files, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from cli_helpers import run_cli
from drex_opt.errors import UserError
from drex_opt.rules import config, safety
from drex_opt.search import spaces

from test_spaces import GOOD_BUDGET as BUDGET

REPO = Path(__file__).resolve().parents[1]
QUICK = config.load_baseline("quick")
FULL = config.load_baseline("full")

# The owner's safety ranges, typed from the brief (autopilot-brief.txt), not read from the code.
LR = (1e-6, 1.0)
ENT = (0.0, 1.0)
GAMMA = (0.0, 0.999999)
EPOCHS = (1, 32)

optuna.logging.set_verbosity(optuna.logging.WARNING)

HEAD = 'description = "A theory."\n' + BUDGET + '\n[params."train.gamma"]\ntype = "float"\nlow = 0.9\nhigh = 0.99\n'
INHERIT = 'description = "Continue."\ninherit = true\n' + BUDGET

WARM = HEAD + '''
[warm]
description = """
Why, for a drone already trained.
"""

[warm.budget]
full_timesteps = 1_500_000
quick_timesteps = 400_000
trials = 8
startup_trials = 3
repeats = 0

[warm.params."train.learning_rate"]
type = "float"
around = [0.33, 3.0]
log = true

[warm.params."train.update_epochs"]
type = "int"
low = 1
high = 8

[warm.params."train.bptt_horizon"]
type = "categorical"
choices = [16, 32, 64]
'''


def load_text(tmp_path: Path, text: str, focus: str = "tune_grip") -> spaces.SearchSpace:
    (tmp_path / f"{focus}.toml").write_text(text, encoding="utf-8")
    return spaces.load(focus, tmp_path)


def warm_param(tmp_path: Path, name: str, body: str) -> spaces.SearchSpace:
    """A space whose only warm param is ``name`` written as ``body``."""
    return load_text(tmp_path, HEAD + f'\n[warm]\ndescription = "Warm."\n\n[warm.params."{name}"]\n{body}\n')


def run(**train) -> dict:
    """The quick baseline with these ``train`` values."""
    return {**QUICK, "train": {**QUICK["train"], **train}}


def numeric(space: spaces.SearchSpace) -> dict:
    return {name: (p.low, p.high) for name, p in space.params.items() if p.type != "categorical"}


# ---------------------------------------------------------------- parsing and checks
def test_warm_section_parses(tmp_path):
    space = load_text(tmp_path, WARM)
    warm = space.warm
    assert warm.description == "Why, for a drone already trained."
    assert warm.budget == spaces.Budget(full_timesteps=1_500_000, quick_timesteps=400_000, trials=8, startup_trials=3, repeats=0)
    lr = warm.params["train.learning_rate"]
    assert lr.around == [0.33, 3.0] and lr.log and lr.low is None
    assert (warm.params["train.update_epochs"].low, warm.params["train.update_epochs"].high) == (1, 8)
    assert warm.params["train.bptt_horizon"].choices == [16, 32, 64]
    assert spaces.load("tune_grip", tmp_path).model_dump(mode="json")["warm"]["params"]["train.learning_rate"]["around"] == [0.33, 3.0]


def test_warm_budget_and_params_are_optional_where_allowed(tmp_path):
    assert warm_param(tmp_path, "train.gamma", 'type = "float"\nlow = 0.9\nhigh = 0.99').warm.budget is None
    assert load_text(tmp_path, INHERIT + '\n[warm]\ndescription = "Continue."\n', "continue").warm.params == {}


@pytest.mark.parametrize(
    "name, body, message",
    [
        ("train.learning_rate", 'type = "float"\naround = [1.0, 3.0]', "0 < lo < 1 < hi"),
        ("train.learning_rate", 'type = "float"\naround = [0.5, 0.9]', "0 < lo < 1 < hi"),
        ("train.learning_rate", 'type = "float"\naround = [0.0, 2.0]', "0 < lo < 1 < hi"),
        ("train.learning_rate", 'type = "float"\naround = [0.5]', "around"),
        ("train.bptt_horizon", 'type = "categorical"\naround = [0.5, 2.0]\nchoices = [16, 32]', "not a categorical"),
        ("train.learning_rate", 'type = "float"\naround = [0.5, 2.0]\nlow = 1e-4', "around replaces low and high"),
        ("train.update_epochs", 'type = "float"\naround = [0.5, 2.0]', "type float does not fit a key of type int"),
        ("train.lr", 'type = "float"\naround = [0.5, 2.0]', "not a key of the brief"),
        ("train.lr", 'type = "float"\nlow = 0.1\nhigh = 0.2', "not a key of the brief"),
        ("train.batch_size", 'type = "int"\naround = [0.5, 2.0]', "derived from the topology"),
        ("train.minibatch_size", 'type = "int"\nlow = 1\nhigh = 2', "derived from the topology"),
        ("train.total_timesteps", 'type = "int"\naround = [0.5, 2.0]', "set by \\[budget\\]"),
        ("train.seed", 'type = "int"\nlow = 1\nhigh = 2', "set by \\[budget\\]"),
        ("train.gamma", 'type = "float"\nlow = 0.9\nhigh = 1.5', "1.5 is above the maximum 0.999999"),
        ("train.learning_rate", 'type = "float"\nlow = 1e-7\nhigh = 1e-3', "below the minimum"),
        ("train.update_epochs", 'type = "int"\nlow = 1\nhigh = 8\nstep = 1', "takes no step"),
        ("train.gamma", 'type = "float"\nlow = 0.99\nhigh = 0.9', "low must be below high"),
        ("train.gamma", 'type = "float"\naround = [0.5, 2.0]\nsigma = 1', "sigma"),
    ],
)
def test_bad_warm_params_do_not_load(tmp_path, name, body, message):
    with pytest.raises(UserError, match=message) as info:
        warm_param(tmp_path, name, body)
    assert "tune_grip.toml" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, focus, message",
    [
        (HEAD + '\n[warm]\ndescription = "No params."\n', "tune_grip", "no \\[warm.params"),
        (HEAD + '\n[warm]\ndescription = ""\n[warm.params."train.gamma"]\ntype = "float"\nlow = 0.9\nhigh = 0.99\n', "tune_grip", "description"),
        (WARM + '\n[warm.extra]\nx = 1\n', "tune_grip", "extra"),
        (WARM.replace("startup_trials = 3\nrepeats = 0\n\n[warm.params", "startup_trials = 30\nrepeats = 0\n\n[warm.params"), "tune_grip", "startup_trials"),
        (INHERIT + '\n[warm]\ndescription = "x"\n[warm.params."train.gamma"]\ntype = "float"\nlow = 0.9\nhigh = 0.99\n',
         "continue", "inherit = true space takes its params"),
    ],
)
def test_bad_warm_sections_do_not_load(tmp_path, text, focus, message):
    with pytest.raises(UserError, match=message) as info:
        load_text(tmp_path, text, focus)
    assert f"{focus}.toml" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- resolution against a run
def test_around_resolves_on_the_runs_value(tmp_path):
    space = load_text(tmp_path, WARM)
    warm = spaces.for_warm_start(space, run(learning_rate=0.003, update_epochs=2))
    lr = warm.params["train.learning_rate"]
    assert math.isclose(lr.low, 0.003 * 0.33) and math.isclose(lr.high, 0.009) and lr.log
    assert (warm.params["train.update_epochs"].low, warm.params["train.update_epochs"].high) == (1, 8)
    assert warm.params["train.bptt_horizon"] == spaces.ParamSpec(type="categorical", choices=[16, 32, 64])
    assert warm.warm is None and warm.source == space.source and warm.focus == "tune_grip"
    assert warm.description == space.warm.description and warm.budget == space.warm.budget
    assert not any(isinstance(p, spaces.WarmParamSpec) for p in warm.params.values())
    assert space.warm.params["train.learning_rate"].around == [0.33, 3.0], "input not mutated"


@pytest.mark.parametrize(
    "name, body, value, expected",
    [
        ("train.learning_rate", 'type = "float"\naround = [0.5, 4.0]\nlog = true', 0.5, (0.25, LR[1])),
        ("train.learning_rate", 'type = "float"\naround = [0.1, 2.0]\nlog = true', 2e-6, (LR[0], 4e-6)),
        ("train.gamma", 'type = "float"\naround = [0.99, 1.01]', 0.995, (0.995 * 0.99, GAMMA[1])),
        ("train.ent_coef", 'type = "float"\naround = [0.5, 2000.0]', 0.003, (0.0015, ENT[1])),
        ("train.update_epochs", 'type = "int"\naround = [0.5, 1.5]', 5, (2, 8)),  # 2.5 - 7.5, rounded outward
        ("train.update_epochs", 'type = "int"\naround = [0.5, 1.5]', 30, (15, EPOCHS[1])),
        ("train.update_epochs", 'type = "int"\naround = [0.9, 1.1]', 1, (EPOCHS[0], 2)),
        ("train.update_epochs", 'type = "int"\naround = [0.9, 1.1]', EPOCHS[1], (28, EPOCHS[1])),
        # Absolute ranges stretch to hold the run's value.
        ("train.update_epochs", 'type = "int"\nlow = 1\nhigh = 8', 16, (1, 16)),
        ("train.gamma", 'type = "float"\nlow = 0.98\nhigh = 0.997', 0.95, (0.95, 0.997)),
        ("train.gamma", 'type = "float"\nlow = 0.9\nhigh = 0.99', 0.995, (0.9, 0.995)),
    ],
)
def test_ranges_resolve_clip_and_hold_the_runs_value(tmp_path, name, body, value, expected):
    space = warm_param(tmp_path, name, body)
    key = name.split(".")[1]
    p = spaces.for_warm_start(space, run(**{key: value})).params[name]
    assert math.isclose(p.low, expected[0]) and math.isclose(p.high, expected[1]), (p.low, p.high)
    assert p.low <= value <= p.high and p.low < p.high
    if p.type == "int":
        assert isinstance(p.low, int) and isinstance(p.high, int)


@pytest.mark.parametrize("around", [(0.33, 3.0), (0.9, 1.1), (0.01, 100.0), (0.999, 1.001)])
@pytest.mark.parametrize("key, values", [("learning_rate", (1e-6, 3.7e-5, 0.003, 0.6, 1.0)),
                                         ("gamma", (0.5, 0.99, 0.999999)), ("update_epochs", (1, 3, 17, 32))])
def test_the_runs_value_is_always_inside(tmp_path, around, key, values):
    kind = "int" if key == "update_epochs" else "float"
    space = warm_param(tmp_path, f"train.{key}", f'type = "{kind}"\naround = [{around[0]}, {around[1]}]')
    for value in values:
        low, high = numeric(spaces.for_warm_start(space, run(**{key: value})))[f"train.{key}"]
        assert low <= value <= high and low < high


def test_categorical_choices_stay_as_written(tmp_path):
    space = warm_param(tmp_path, "env.num_drones", 'type = "categorical"\nchoices = [4, 8]')
    assert spaces.for_warm_start(space, QUICK).params["env.num_drones"].choices == [4, 8]


def test_warm_budget_falls_back_to_the_spaces(tmp_path):
    space = warm_param(tmp_path, "train.gamma", 'type = "float"\nlow = 0.9\nhigh = 0.99')
    assert spaces.for_warm_start(space, QUICK).budget == space.budget


@pytest.mark.parametrize(
    "name, body, cfg, message",
    [
        ("train.ent_coef", 'type = "float"\naround = [0.5, 2.0]', run(ent_coef=0.0), "not positive"),
        ("train.ent_coef", 'type = "float"\nlow = 1e-3\nhigh = 1e-2\nlog = true', run(ent_coef=0.0), "not positive"),
        ("train.gamma", 'type = "float"\naround = [0.5, 1.01]', {"train": {}}, "null is not a number"),
        ("train.gamma", 'type = "float"\nlow = 0.9\nhigh = 0.99', run(gamma=1.5), "above the maximum"),
    ],
)
def test_runs_that_cannot_resolve_name_the_file(tmp_path, name, body, cfg, message):
    with pytest.raises(UserError, match=message) as info:
        spaces.for_warm_start(warm_param(tmp_path, name, body), cfg)
    assert "tune_grip.toml" in str(info.value) and name in str(info.value)


def test_a_space_without_warm_section_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"tune_grip\.toml: no \[warm\] section"):
        spaces.for_warm_start(load_text(tmp_path, HEAD), QUICK)


def test_narrow_works_on_a_resolved_space(tmp_path):
    warm = spaces.for_warm_start(load_text(tmp_path, WARM), QUICK)
    narrowed = spaces.narrow(warm, {"train": {"learning_rate": 0.003, "update_epochs": 4}}, factor=0.5)
    lr = narrowed.params["train.learning_rate"]
    assert warm.params["train.learning_rate"].low <= lr.low < 0.003 < lr.high <= warm.params["train.learning_rate"].high
    assert narrowed.warm is None and narrowed.budget == warm.budget


# ---------------------------------------------------------------- the shipped spaces
@pytest.mark.parametrize("focus", spaces.FOCI)
def test_every_shipped_space_has_a_short_warm_experiment(focus):
    space = spaces.load(focus, REPO / "search_spaces")
    warm = space.warm
    assert warm is not None and 20 < len(warm.description) < 500
    b = warm.budget
    assert 300_000 <= b.quick_timesteps <= 500_000 and b.quick_timesteps < b.full_timesteps <= 5 * b.quick_timesteps
    assert 6 <= b.trials <= 8 and 2 <= b.startup_trials <= 3 and b.repeats == 0
    assert (focus == "continue") == (not warm.params)
    if "train.update_epochs" in warm.params:
        assert warm.params["train.update_epochs"].low == 1


@pytest.mark.parametrize("baseline", [QUICK, FULL], ids=["quick", "full"])
@pytest.mark.parametrize("focus", spaces.FOCI)
def test_shipped_spaces_resolve_on_both_baselines(focus, baseline):
    space = spaces.for_warm_start(spaces.load(focus, REPO / "search_spaces"), baseline)
    assert space.warm is None and space.inherit == (focus == "continue")
    if space.inherit:
        assert space.params == {} and space.budget == spaces.load(focus).warm.budget
        return
    for name, (low, high) in numeric(space).items():
        section, key = name.split(".")
        assert low <= baseline[section][key] <= high, name
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        overrides = spaces.suggest(space, trial)
        assert set(trial.params) == set(space.params)
        assert safety.validate(overrides, baseline) == []
        study.tell(trial, 0.0)


def test_the_quick_baseline_is_representable_in_every_shipped_warm_space():
    for focus, space in spaces.load_all(REPO / "search_spaces").items():
        if space.inherit:
            continue
        resolved = spaces.for_warm_start(space, QUICK)
        unchanged = {name: QUICK[name.split(".")[0]][name.split(".")[1]] for name in resolved.params}
        overrides = spaces.suggest(resolved, optuna.trial.FixedTrial(unchanged))
        assert safety.overrides_relative(safety.merge(QUICK, overrides), QUICK) == {}, focus


# ---------------------------------------------------------------- the CLI
def test_cli_shows_the_warm_section():
    proc = run_cli("spaces", "improve_carrying", "--json")
    assert proc.returncode == 0, proc.stderr
    warm = json.loads(proc.stdout)["warm"]
    assert warm["budget"]["repeats"] == 0 and "train.gamma" in warm["params"]
    assert warm["params"]["train.update_epochs"]["around"] is None
    shown = run_cli("spaces", "tune_grip")
    assert shown.returncode == 0 and "warm start" in shown.stdout and "×0.3 – ×2" in shown.stdout
    listed = run_cli("spaces")
    whole = spaces.load("optimize_performance")
    assert listed.returncode == 0 and f"{len(whole.params)} / {len(whole.warm.params)}" in listed.stdout
