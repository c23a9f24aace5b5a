"""Rival search spaces: what PufferLib and rl-zoo3 users really search, on the brief's keys.

Two spaces that practitioners run unchanged, mapped onto the keys and safety ranges of the
brief (:mod:`drex_opt.rules.safety`), for a benchmark of drex-opt against them. Every
proposal becomes a trial's overrides through
:func:`benchmarks.search_efficiency.trial_overrides`, as the whole-space rivals' do.

**Protein on PufferLib's default ``[sweep]`` space** (PufferLib 3.0.0,
``pufferlib/config/default.ini``, read with ``configparser`` and ``ast.literal_eval`` as
``pufferl.load_config`` reads it). ``puffer sweep`` (``pufferl.sweep``) pops ``method``
from ``args["sweep"]`` and builds ``pufferlib.sweep.Protein(args["sweep"])`` with the
constructor's defaults (max_suggestion_cost 3600 s, resample_frequency 0,
num_random_samples 50, global_search_scale 1, random_suggestions 1024,
suggestions_per_pareto 256, seed_with_search_center True, expansion_rate 0.25):
:func:`make_protein` does the same. Mapping (:func:`protein_default_space`):

- metric ``score`` becomes ``end_to_end_success``; goal (maximize), method and
  downsample are kept;
- kept, with PufferLib's distribution, mean and scale, each range intersected with the
  brief's safety range (every default range lies inside it in 3.0.0, so none is narrowed):
  ``vec.num_envs`` (uniform_pow2 1–16), ``train.bptt_horizon`` (uniform_pow2 16–64),
  ``train.learning_rate``, ``train.ent_coef``, ``train.adam_eps`` (log_normal),
  ``train.gamma``, ``train.gae_lambda``, ``train.adam_beta1``, ``train.adam_beta2``
  (logit_normal), ``train.clip_coef``, ``train.vf_clip_coef``, ``train.vf_coef``,
  ``train.max_grad_norm`` (uniform);
- dropped: ``train.total_timesteps`` (the benchmark fixes the budget),
  ``train.minibatch_size`` (the brief derives batch sizes from the topology),
  ``train.vtrace_rho_clip``, ``train.vtrace_c_clip``, ``train.prio_alpha``,
  ``train.prio_beta0`` (not brief keys). ``train.update_epochs`` is commented out in
  ``default.ini``: PufferLib does not search it.

``puffer sweep`` observes ``downsample`` points of each run's curve with
``train.total_timesteps`` set to each point's agent steps; with the budget fixed those
points share one input, and ``Protein.observe`` replaces an observation of the same
input, so one observation per trial (its final score and wall time) is what it keeps.
Cost is wall time in seconds, as PufferLib's ``uptime``.

**rl-zoo3's PPO space** (rl-zoo3 2.9.2, ``rl_zoo3/hyperparams_opt.py``,
``sample_ppo_params``). :func:`suggest_rlzoo_ppo` makes the same ``trial.suggest_*``
calls in the same order (and sets the same user attributes), so a sampler sees rl-zoo3's
exact space; the values then map to the brief:

- ``one_minus_gamma`` (log 1e-4–0.03) → ``train.gamma = 1 − one_minus_gamma``;
  ``one_minus_gae_lambda`` (log 1e-4–0.1) → ``train.gae_lambda``;
  ``learning_rate`` (log 1e-5–0.002), ``ent_coef`` (log 1e-8–0.1) → same names;
  ``clip_range`` {0.1, 0.2, 0.3, 0.4} → ``train.clip_coef``; ``n_epochs`` {1, 5, 10, 20}
  → ``train.update_epochs``; ``max_grad_norm`` (0.3–2) → ``train.max_grad_norm``;
- ``n_steps = 2**n_steps_pow`` (pow 5–12) → ``train.bptt_horizon``: both are the rollout
  length per environment (SB3's rollout is ``n_steps × n_envs``, the brief's batch
  ``agents × bptt_horizon``); 1024–4096 lie above the brief's maximum 512 and become 512;
- dropped, with a note per trial: ``batch_size = 2**batch_size_pow`` (pow 2–10,
  rl-zoo3's minibatch: the brief derives minibatch sizes from the topology),
  ``net_arch`` and ``activation_fn`` (not brief keys). rl-zoo3 2.9.2 samples no
  ``vf_coef`` or ``ortho_init``; keys it does not sample keep the baseline's values.

rl-zoo3 builds its study in ``exp_manager.py``: ``TPESampler(n_startup_trials=...,
seed=..., multivariate=True)`` (``--sampler tpe``, the default) or
``RandomSampler(seed=...)`` (``--sampler random``); ``--n-startup-trials`` defaults to
10 in ``train.py``; its default pruner is ``MedianPruner(n_startup_trials=...,
n_warmup_steps=n_evaluations // 3)`` with ``n_evaluations = max(1, n_timesteps //
100_000)``; one objective, maximized (here end-to-end success).
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.pruners import MedianPruner
from optuna.samplers import RandomSampler, TPESampler

from benchmarks.search_efficiency import EXCLUDED, WholeParam, flatten, nest, new_protein, protein_encode
from drex_opt.rules import safety

METRIC = "end_to_end_success"
# Top-level [sweep] settings: not parameters (pufferlib.sweep skips exactly these names).
SWEEP_SETTINGS = ("method", "metric", "goal", "downsample")
# Why a [sweep.*] key the brief has is still not searched here.
FIXED_BY_BENCHMARK = {
    "train.total_timesteps": "the benchmark fixes the budget (every trial trains the same agent steps)",
    "train.seed": "the benchmark sets each trial's seed",
}
DERIVED_REASON = ("the brief derives batch sizes from the topology (train.batch_size = train.minibatch_size = "
                  "train.max_minibatch_size = agents × train.bptt_horizon)")

RLZOO_VERSION = "2.9.2"
# rl-zoo3's train.py passes --n-startup-trials (default 10) to its TPESampler and MedianPruner.
RLZOO_STARTUP_TRIALS = 10
RLZOO_STEPS_PER_EVALUATION = 100_000  # n_evaluations = n_timesteps // 1e5 unless given
# What rl-zoo3 suggests but the brief cannot express.
RLZOO_DROPPED = {
    "net_arch": "not a brief key (the brief sets no network architecture)",
    "activation_fn": "not a brief key (the brief sets no network architecture)",
}


# ---------------------------------------------------------------- PufferLib's default sweep
def default_ini() -> Path:
    """PufferLib's ``config/default.ini``, found without importing PufferLib."""
    spec = importlib.util.find_spec("pufferlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("PufferLib is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "config" / "default.ini"


def _literal(text: str) -> Any:
    # pufferl.load_config: a value Python can read as a literal is that literal, else the text.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        return text


def load_sweep(path: str | Path | None = None) -> dict:
    """The ``[sweep]`` and ``[sweep.*]`` sections of ``path`` (default: PufferLib's
    ``default.ini``) as ``pufferl.load_config`` nests them into ``args["sweep"]``."""
    path = Path(path) if path else default_ini()
    parser = configparser.ConfigParser()
    if not parser.read(path):
        raise FileNotFoundError(path)
    sweep: dict = {}
    for section in parser.sections():
        parts = section.split(".")
        if parts[0] != "sweep":
            continue
        node = sweep
        for part in parts[1:]:
            node = node.setdefault(part, {})
        for key in parser[section]:
            node[key] = _literal(parser[section][key])
    return sweep


def sweep_params(sweep: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """``(dotted key, entry)`` of every parameter of a sweep config, in its order."""
    out = []
    for name, value in sweep.items():
        if (not prefix and name in SWEEP_SETTINGS) or not isinstance(value, dict):
            continue
        key = f"{prefix}{name}"
        if "distribution" in value:
            out.append((key, value))
        else:
            out += sweep_params(value, f"{key}.")
    return out


def _drop_reason(key: str) -> str | None:
    spec = safety.SPEC_BY_KEY.get(key)
    if spec is None:
        return "not a brief key"
    if spec.derived:
        return DERIVED_REASON
    if key in FIXED_BY_BENCHMARK:
        return FIXED_BY_BENCHMARK[key]
    if key in EXCLUDED:
        return "an execution setting, not searched by any method of the benchmark"
    if spec.kind not in ("float", "int"):
        return f"a {spec.kind} key, and Protein searches numbers only"
    return None


def restrict_sweep(sweep: dict, baseline: dict) -> tuple[dict, list[str]]:
    """A PufferLib sweep config restricted to the brief; one note per change.

    Keeps the top-level settings (metric set to :data:`METRIC`, goal maximize), drops
    every parameter the brief does not let a search set, and intersects every other range
    with the brief's safety range, keeping PufferLib's distribution, mean and scale (a
    mean outside the narrowed range is clamped into it).
    """
    config: dict = {name: sweep[name] for name in SWEEP_SETTINGS if name in sweep}
    notes = []
    if config.get("metric") != METRIC:
        notes.append(f"metric: PufferLib's {config.get('metric')!r} replaced by {METRIC!r} (the benchmark's objective)")
    if config.get("goal") != "maximize":
        notes.append(f"goal: {config.get('goal')!r} replaced by 'maximize'")
    config.update(metric=METRIC, goal="maximize")
    for key, entry in sweep_params(sweep):
        reason = _drop_reason(key)
        if reason:
            notes.append(f"{key}: dropped, {reason}")
            continue
        spec = safety.SPEC_BY_KEY[key]
        low, high = entry["min"], entry["max"]
        new_low = low if low >= spec.low else spec.low
        new_high = high if high <= spec.high else spec.high
        if new_low >= new_high:
            notes.append(f"{key}: dropped, PufferLib's range {low:g}–{high:g} leaves nothing of the brief's "
                         f"safety range {spec.low:g}–{spec.high:g}")
            continue
        if (new_low, new_high) != (low, high):
            notes.append(f"{key}: narrowed from PufferLib's {low:g}–{high:g} to {new_low:g}–{new_high:g}, "
                         "inside the brief's safety range")
        mean = min(max(entry["mean"], new_low), new_high)
        if mean != entry["mean"]:
            notes.append(f"{key}: PufferLib's mean {entry['mean']:g} lies outside the narrowed range; "
                         f"clamped to {mean:g}")
        section, name = key.split(".")
        config.setdefault(section, {})[name] = {**entry, "min": new_low, "max": new_high, "mean": mean}
        value = baseline[section][name]
        if not new_low <= value <= new_high:
            notes.append(f"{key}: the baseline's {value:g} lies outside {new_low:g}–{new_high:g}; "
                         "Protein never proposes it")
    workers = baseline["vec"]["num_workers"]
    if "num_envs" in config.get("vec", {}) and workers > 1:
        notes.append(f"vec.num_envs: a value that is not a multiple of the baseline's vec.num_workers ({workers}) "
                     "is moved to one by safety.clamp")
    return config, notes


def protein_default_space(baseline: dict, path: str | Path | None = None) -> tuple[dict, list[str]]:
    """PufferLib's default ``[sweep]`` config (or ``path``'s) restricted to the brief; the notes."""
    return restrict_sweep(load_sweep(path), baseline)


def protein_params(config: dict) -> list[WholeParam]:
    """The parameters of a Protein config as :class:`WholeParam` (for ``protein_encode``)."""
    out = []
    for key, entry in sweep_params(config):
        kind = "int" if safety.SPEC_BY_KEY[key].kind == "int" else "float"
        log = entry["distribution"] in ("log_normal", "uniform_pow2")
        out.append(WholeParam(key, kind, entry["min"], entry["max"], log=log))
    return out


def make_protein(baseline: dict, seed: int, path: str | Path | None = None):
    """``pufferlib.sweep.Protein`` over :func:`protein_default_space`, built as ``puffer sweep`` builds it.

    ``method`` is popped and every constructor argument left at its default, as in
    ``pufferl.sweep``. ``random``, NumPy and torch are seeded with ``seed`` (``puffer
    sweep`` seeds them from the clock before each suggestion). Protein prints while it
    builds (swallowed here) and on every model-based suggestion (the caller's to redirect).
    """
    # PufferLib and torch take seconds to import: only Protein needs them.
    import torch

    config, _ = protein_default_space(baseline, path)
    sweep_config = dict(config)
    sweep_config.pop("method", None)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return new_protein(sweep_config)


def protein_proposal(suggestion: dict) -> dict[str, dict]:
    """``protein.suggest(None)``'s suggestion as nested overrides for a trial.

    Integer keys are rounded half up (Protein's log and logit spaces return floats) and
    every value is kept inside the brief's safety range (Protein's unnormalising can land
    a rounding error beyond a bound), so the safety clamp has nothing to repair.
    """
    flat = {}
    for key, value in flatten(suggestion).items():
        spec = safety.SPEC_BY_KEY[key]
        value = float(value)
        if spec.kind == "int":
            value = math.floor(value + 0.5)
        flat[key] = min(max(value, spec.low), spec.high)
    return nest(flat)


def protein_observation(overrides: dict, baseline: dict, config: dict | None = None) -> dict[str, dict]:
    """The values a trial ran with, as ``Protein.observe`` expects them (``config``: the
    Protein config, default :func:`protein_default_space`'s)."""
    config = config if config is not None else protein_default_space(baseline)[0]
    return protein_encode(overrides, protein_params(config), baseline)


# ---------------------------------------------------------------- rl-zoo3's PPO space
def suggest_rlzoo_ppo(trial, baseline: dict) -> tuple[dict[str, dict], list[str]]:
    """rl-zoo3's ``sample_ppo_params`` on ``trial``, mapped to the brief; one note per dropped value.

    Returns nested overrides (``{"train": {...}}``) and the notes. Every parameter is
    suggested, mapped or not, so the sampler models rl-zoo3's whole space.
    """
    # The calls, names, ranges and order of rl_zoo3/hyperparams_opt.py (2.9.2).
    batch_size_pow = trial.suggest_int("batch_size_pow", 2, 10)
    n_steps_pow = trial.suggest_int("n_steps_pow", 5, 12)
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True)
    one_minus_gae_lambda = trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    ent_coef = trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True)
    clip_range = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    n_epochs = trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
    max_grad_norm = trial.suggest_float("max_grad_norm", 0.3, 2)
    net_arch = trial.suggest_categorical("net_arch", ["tiny", "small", "medium"])
    activation_fn = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    trial.set_user_attr("gamma", 1 - one_minus_gamma)
    trial.set_user_attr("n_steps", 2**n_steps_pow)
    trial.set_user_attr("batch_size", 2**batch_size_pow)

    n_steps = 2**n_steps_pow
    spec = safety.SPEC_BY_KEY["train.bptt_horizon"]
    horizon = int(min(max(n_steps, spec.low), spec.high))
    train = {
        "gamma": 1 - one_minus_gamma,
        "gae_lambda": 1 - one_minus_gae_lambda,
        "learning_rate": learning_rate,
        "ent_coef": ent_coef,
        "clip_coef": clip_range,
        "update_epochs": n_epochs,
        "max_grad_norm": max_grad_norm,
        "bptt_horizon": horizon,
    }
    notes = []
    if horizon != n_steps:
        notes.append(f"n_steps {n_steps} (n_steps_pow {n_steps_pow}): train.bptt_horizon's safety range is "
                     f"{spec.low:g}–{spec.high:g}; set to {horizon}")
    sizes = safety.derive_batch_sizes(safety.merge(baseline, {"train": train}))
    derived = f"; here {sizes['minibatch_size']:,}" if sizes else ""
    notes.append(f"batch_size {2**batch_size_pow} (batch_size_pow {batch_size_pow}): dropped, rl-zoo3's minibatch "
                 f"size; {DERIVED_REASON}{derived}")
    notes.append(f"net_arch {net_arch!r}: dropped, {RLZOO_DROPPED['net_arch']}")
    notes.append(f"activation_fn {activation_fn!r}: dropped, {RLZOO_DROPPED['activation_fn']}")
    return {"train": train}, notes


def rlzoo_sampler(seed: int, n_startup_trials: int = RLZOO_STARTUP_TRIALS) -> TPESampler:
    """The TPE sampler rl-zoo3 searches with (``ExperimentManager._create_sampler("tpe")``)."""
    with warnings.catch_warnings():
        # Optuna flags multivariate TPE as experimental; rl-zoo3 uses it all the same.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True)


def rlzoo_random_sampler(seed: int) -> RandomSampler:
    """rl-zoo3's ``--sampler random``."""
    return RandomSampler(seed=seed)


def rlzoo_pruner(n_timesteps: int, n_evaluations: int | None = None,
                 n_startup_trials: int = RLZOO_STARTUP_TRIALS) -> MedianPruner:
    """rl-zoo3's default pruner (``--pruner median``) for trials of ``n_timesteps``."""
    if n_evaluations is None:
        n_evaluations = max(1, n_timesteps // RLZOO_STEPS_PER_EVALUATION)
    return MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
