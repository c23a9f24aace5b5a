"""The rival search spaces (benchmarks/rivals.py) against their sources: no training runs.

PufferLib's ranges are read here from the installed ``default.ini``; rl-zoo3's are written
out as literals copied from rl-zoo3 2.9.2's ``rl_zoo3/hyperparams_opt.py``.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import MedianPruner
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import TrialState

from benchmarks import rivals, search_efficiency as se
from drex_opt.rules import config, safety

TIMESTEPS, SEED = 300_000, 7

# sample_ppo_params, rl-zoo3 2.9.2, in the order it suggests them.
RLZOO_PPO = {
    "batch_size_pow": IntDistribution(2, 10),
    "n_steps_pow": IntDistribution(5, 12),
    "one_minus_gamma": FloatDistribution(0.0001, 0.03, log=True),
    "one_minus_gae_lambda": FloatDistribution(0.0001, 0.1, log=True),
    "learning_rate": FloatDistribution(1e-5, 0.002, log=True),
    "ent_coef": FloatDistribution(0.00000001, 0.1, log=True),
    "clip_range": CategoricalDistribution([0.1, 0.2, 0.3, 0.4]),
    "n_epochs": CategoricalDistribution([1, 5, 10, 20]),
    "max_grad_norm": FloatDistribution(0.3, 2),
    "net_arch": CategoricalDistribution(["tiny", "small", "medium"]),
    "activation_fn": CategoricalDistribution(["tanh", "relu"]),
}
RLZOO_MAPPED = {"gamma", "gae_lambda", "learning_rate", "ent_coef", "clip_coef", "update_epochs", "max_grad_norm",
                "bptt_horizon"}


@pytest.fixture(scope="module")
def baseline() -> dict:
    return config.load_baseline("quick")


@pytest.fixture(scope="module")
def ini() -> tuple[dict, dict]:
    """PufferLib's installed default.ini: the [sweep] settings and {dotted key: [sweep.*] entry}."""
    spec = importlib.util.find_spec("pufferlib")
    if spec is None:
        pytest.skip("PufferLib is not installed")
    parser = configparser.ConfigParser()
    assert parser.read(Path(list(spec.submodule_search_locations)[0]) / "config" / "default.ini")

    def value(text: str):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    settings = {k: value(v) for k, v in parser["sweep"].items()}
    params = {section.removeprefix("sweep."): {k: value(v) for k, v in parser[section].items()}
              for section in parser.sections() if section.startswith("sweep.")}
    return settings, params


def _kept(cfg: dict) -> dict[str, dict]:
    return {f"{s}.{k}": e for s, entries in cfg.items() if isinstance(entries, dict) for k, e in entries.items()}


def _brief_cannot_search(key: str) -> bool:
    spec = safety.SPEC_BY_KEY.get(key)
    return spec is None or spec.derived or key == "train.total_timesteps"


def test_protein_default_space_is_pufferlibs_intersected_with_the_safety_ranges(baseline, ini):
    settings, params = ini
    cfg, notes = rivals.protein_default_space(baseline)
    assert cfg["metric"] == "end_to_end_success" and cfg["goal"] == "maximize"
    assert cfg["downsample"] == settings["downsample"] and cfg["method"] == settings["method"] == "Protein"
    kept = _kept(cfg)
    assert set(kept) == {k for k in params if not _brief_cannot_search(k)}
    for key, entry in kept.items():
        source, spec = params[key], safety.SPEC_BY_KEY[key]
        low, high = max(source["min"], spec.low), min(source["max"], spec.high)
        assert (entry["min"], entry["max"]) == (low, high), key
        assert entry["mean"] == min(max(source["mean"], low), high), key
        assert (entry["distribution"], entry["scale"]) == (source["distribution"], source["scale"]), key
    dropped = set(params) - set(kept)
    # PufferLib 3.0.0's default sweep: these are the keys a search of the brief cannot set.
    assert dropped == {"train.total_timesteps", "train.minibatch_size", "train.vtrace_rho_clip",
                       "train.vtrace_c_clip", "train.prio_alpha", "train.prio_beta0"}
    for key in dropped:
        assert any(n.startswith(f"{key}: dropped") for n in notes), key
    text = "\n".join(notes)
    assert "train.total_timesteps: dropped, the benchmark fixes the budget" in text
    assert "train.minibatch_size: dropped, the brief derives batch sizes from the topology" in text
    assert "train.vtrace_rho_clip: dropped, not a brief key" in text
    assert "train.learning_rate" not in text  # inside the brief's range: kept as PufferLib has it


def test_ranges_beyond_the_brief_are_narrowed_and_named(baseline, tmp_path):
    ini = tmp_path / "sweep.ini"
    ini.write_text("[sweep]\nmethod = Protein\nmetric = score\ngoal = maximize\ndownsample = 5\n\n"
                   "[sweep.train.learning_rate]\ndistribution = log_normal\nmin = 1e-8\nmax = 5.0\nmean = 3.0\n"
                   "scale = 0.5\n\n"
                   "[sweep.train.update_epochs]\ndistribution = int_uniform\nmin = 1\nmax = 64\nmean = 4\n"
                   "scale = auto\n\n"
                   "[sweep.train.clip_coef]\ndistribution = uniform\nmin = 2.0\nmax = 3.0\nmean = 2.5\nscale = auto\n\n"
                   "[sweep.train.gamma]\ndistribution = logit_normal\nmin = 0.995\nmax = 0.9999\nmean = 0.998\n"
                   "scale = auto\n\n"
                   "[sweep.train.seed]\ndistribution = int_uniform\nmin = 0\nmax = 10\nmean = 1\nscale = auto\n\n"
                   "[sweep.train.optimizer]\ndistribution = int_uniform\nmin = 0\nmax = 2\nmean = 1\nscale = auto\n",
                   encoding="utf-8")
    cfg, notes = rivals.protein_default_space(baseline, ini)
    assert cfg["downsample"] == 5
    assert cfg["train"]["learning_rate"] == {"distribution": "log_normal", "min": 1e-6, "max": 1.0, "mean": 1.0,
                                             "scale": 0.5}
    assert cfg["train"]["update_epochs"] == {"distribution": "int_uniform", "min": 1, "max": 32, "mean": 4,
                                             "scale": "auto"}
    assert set(cfg["train"]) == {"learning_rate", "update_epochs", "gamma"}
    text = "\n".join(notes)
    assert "train.learning_rate: narrowed from PufferLib's 1e-08–5 to 1e-06–1" in text
    assert "train.learning_rate: PufferLib's mean 3 lies outside the narrowed range; clamped to 1" in text
    assert "train.update_epochs: narrowed from PufferLib's 1–64 to 1–32" in text
    assert "train.clip_coef: dropped" in text
    assert "train.seed: dropped, the benchmark sets each trial's seed" in text
    assert "train.optimizer: dropped" in text
    assert "train.gamma: the baseline's 0.99 lies outside 0.995–0.9999" in text  # quick baseline: gamma 0.99


def test_protein_proposals_clamp_to_valid_configs(baseline):
    pytest.importorskip("pufferlib.sweep")
    cfg, _ = rivals.protein_default_space(baseline)
    kept = _kept(cfg)
    hp = rivals.make_protein(baseline, seed=0).hyperparameters
    rng = np.random.default_rng(0)
    # Protein's own random suggestions around its centre, uniform draws over its whole box, and the box's corners.
    samples = list(hp.sample(19)) + list(rng.uniform(hp.min_bounds, hp.max_bounds, (19, hp.num)))
    samples += [hp.min_bounds, hp.max_bounds]
    seen = {key: set() for key in kept}
    for sample in samples:
        proposal = rivals.protein_proposal(hp.to_dict(sample))
        flat = se.flatten(proposal)
        assert set(flat) == set(kept)
        for key, value in flat.items():
            entry = kept[key]
            # Protein's unnormalising may land a rounding error beyond its bounds, never more.
            assert entry["min"] * (1 - 1e-9) <= value <= entry["max"] * (1 + 1e-9), (key, value)
            assert isinstance(value, int) == (safety.SPEC_BY_KEY[key].kind == "int"), key
            seen[key].add(value)
        overrides, adjustments = se.trial_overrides(proposal, baseline, TIMESTEPS, SEED)
        assert adjustments == []  # the proposal was already inside the brief's rules
        cfg_used = safety.merge(baseline, overrides)
        assert safety.validate(cfg_used, complete=True) == []
        assert cfg_used["train"]["total_timesteps"] == TIMESTEPS and cfg_used["train"]["seed"] == SEED
    assert seen["vec.num_envs"] >= {1, 16} and seen["train.bptt_horizon"] == {16, 32, 64}


def test_protein_suggest_observe_round_trip(baseline, ini, monkeypatch):
    sweep = pytest.importorskip("pufferlib.sweep")
    train = sweep.gp.util.train
    # Protein fits its Gaussian processes for 1,000 steps per suggestion; a few prove the round trip.
    monkeypatch.setattr(sweep.gp.util, "train", lambda *a, **k: train(*a, **{**k, "num_steps": 20}))
    _, params = ini
    protein = rivals.make_protein(baseline, seed=3)
    with contextlib.redirect_stdout(io.StringIO()):
        first, _ = protein.suggest(None)
    proposal = rivals.protein_proposal(first)
    # The first suggestion is PufferLib's search centre: every kept key at its mean.
    for key, value in se.flatten(proposal).items():
        assert value == pytest.approx(params[key]["mean"], rel=1e-9), key
    overrides, adjustments = se.trial_overrides(proposal, baseline, TIMESTEPS, SEED)
    assert adjustments == []
    protein.observe(rivals.protein_observation(overrides, baseline), 0.2, 12.0, is_failure=False)
    observed = protein.success_observations[0]["input"]
    np.testing.assert_allclose(observed, protein.hyperparameters.search_centers, atol=1e-9)
    with contextlib.redirect_stdout(io.StringIO()):
        second, _ = protein.suggest(None)
    overrides, _ = se.trial_overrides(rivals.protein_proposal(second), baseline, TIMESTEPS, SEED)
    assert safety.validate(safety.merge(baseline, overrides), complete=True) == []
    assert overrides != se.trial_overrides(proposal, baseline, TIMESTEPS, SEED)[0]
    protein.observe(rivals.protein_observation(overrides, baseline), 0.0, 9.0, is_failure=True)
    assert len(protein.success_observations) == 2


def test_rlzoo_suggestions_are_rl_zoo3s_calls_mapped_to_the_brief(baseline):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=RandomSampler(seed=1))
    study.enqueue_trial({"n_steps_pow": 12, "batch_size_pow": 2, "net_arch": "tiny", "activation_fn": "tanh"})
    trial = study.ask()
    overrides, notes = rivals.suggest_rlzoo_ppo(trial, baseline)
    assert trial.distributions == RLZOO_PPO
    assert list(trial.distributions) == list(RLZOO_PPO)  # the same order of calls
    p, train = trial.params, overrides["train"]
    assert set(overrides) == {"train"} and set(train) == RLZOO_MAPPED
    assert train["gamma"] == 1 - p["one_minus_gamma"] and train["gae_lambda"] == 1 - p["one_minus_gae_lambda"]
    assert train["learning_rate"] == p["learning_rate"] and train["ent_coef"] == p["ent_coef"]
    assert train["clip_coef"] == p["clip_range"] and train["update_epochs"] == p["n_epochs"]
    assert train["max_grad_norm"] == p["max_grad_norm"]
    assert train["bptt_horizon"] == 512  # n_steps 4096, above the brief's maximum
    assert trial.user_attrs == {"gamma": train["gamma"], "n_steps": 4096, "batch_size": 4}
    text = "\n".join(notes)
    assert "n_steps 4096 (n_steps_pow 12): train.bptt_horizon's safety range is 1–512; set to 512" in text
    assert "batch_size 4 (batch_size_pow 2): dropped" in text and "derives batch sizes from the topology" in text
    assert "net_arch 'tiny': dropped, not a brief key" in text
    assert "activation_fn 'tanh': dropped, not a brief key" in text
    assert len(notes) == 4


def test_rlzoo_proposals_clamp_to_valid_configs(baseline):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=rivals.rlzoo_random_sampler(0))
    # Both ends of every range, then random draws.
    study.enqueue_trial({"batch_size_pow": 10, "n_steps_pow": 12, "one_minus_gamma": 0.03, "one_minus_gae_lambda": 0.1,
                         "learning_rate": 0.002, "ent_coef": 0.1, "clip_range": 0.4, "n_epochs": 20,
                         "max_grad_norm": 2.0})
    study.enqueue_trial({"batch_size_pow": 2, "n_steps_pow": 5, "one_minus_gamma": 0.0001,
                         "one_minus_gae_lambda": 0.0001, "learning_rate": 1e-5, "ent_coef": 1e-8, "clip_range": 0.1,
                         "n_epochs": 1, "max_grad_norm": 0.3})
    horizons = set()
    for _ in range(40):
        trial = study.ask()
        proposal, _ = rivals.suggest_rlzoo_ppo(trial, baseline)
        overrides, adjustments = se.trial_overrides(proposal, baseline, TIMESTEPS, SEED)
        assert adjustments == []
        cfg_used = safety.merge(baseline, overrides)
        assert safety.validate(cfg_used, complete=True) == []
        assert cfg_used["train"]["bptt_horizon"] == min(2 ** trial.params["n_steps_pow"], 512)
        horizons.add(cfg_used["train"]["bptt_horizon"])
        study.tell(trial, state=TrialState.FAIL)
    assert {32, 512} <= horizons


def test_rlzoo_samplers_and_pruner_as_rl_zoo3_builds_them():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = rivals.rlzoo_sampler(5)
    assert isinstance(tpe, TPESampler) and tpe._n_startup_trials == 10 and tpe._multivariate
    assert isinstance(rivals.rlzoo_random_sampler(5), RandomSampler)

    def run(sampler, trials):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for _ in range(trials):
            trial = study.ask()
            rivals.suggest_rlzoo_ppo(trial, config.load_baseline("quick"))
            study.tell(trial, trial.params["learning_rate"])
        return [t.params for t in study.trials]

    # Seeded: the same seed proposes the same trials, past the start-up ones into TPE's own.
    assert run(rivals.rlzoo_sampler(5), 11) == run(rivals.rlzoo_sampler(5), 11)
    assert run(rivals.rlzoo_random_sampler(5), 3) != run(rivals.rlzoo_random_sampler(6), 3)
    pruner = rivals.rlzoo_pruner(1_000_000)
    assert isinstance(pruner, MedianPruner)
    assert pruner._n_startup_trials == 10 and pruner._n_warmup_steps == 10 // 3
    assert rivals.rlzoo_pruner(50_000)._n_warmup_steps == 0
