"""Child-process entry point: one real PufferLib (PuffeRL) training run.

Run as ``python -m drex_opt.run.train --config CONFIG --run-dir DIR [--env NAME]``. The
parent (:mod:`drex_opt.run.runner`) reads stdout line by line: event lines
(:mod:`drex_opt.run.events`: ``start``, ``progress``, ``fault``, ``final``, ``error``) and
plain log text. The parent writes ``summary.json``; this process only
trains, reports and saves the checkpoint, so a crash here can never leave a half-written
summary behind.

Exit codes: 0 trained, 1 crashed, 3 NaN losses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

from drex_opt.envs import BUILTIN_ENV, BUILTIN_ENVS, puffer
from drex_opt.errors import UserError
from drex_opt.run import checkpoint as checkpoints
from drex_opt.run.events import emit

POLICY_HIDDEN = 128
# Final metrics average the environment statistics over this last share of the run,
# so they describe the trained policy rather than one noisy report.
FINAL_WINDOW = 0.15
PROGRESS_PERIOD_S = 1.0
EXIT_NAN = 3
# Failure injection for tests and drills: "nan" poisons the policy weights, "crash" raises,
# "hang" stops responding; each fires once the run has passed its first progress report,
# and announces itself with a "fault" event first so a test can prove it happened.
# DREX_INJECT_FAULT_SEEDS (comma-separated) limits the fault to runs with those seeds.
FAULT_ENV = "DREX_INJECT_FAULT"
FAULT_SEEDS_ENV = "DREX_INJECT_FAULT_SEEDS"


class TrainingFailed(Exception):
    """A run that cannot produce a trustworthy result (NaN losses, ...)."""

    exit_code = 1


class NaNLosses(TrainingFailed):
    exit_code = EXIT_NAN


class StatWindow:
    """Accumulates ``environment/*`` statistics weighted by the episodes they cover."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0.0

    def add(self, logs: dict) -> None:
        env = {k: v for k, v in logs.items() if k.startswith("environment/")}
        if not env:
            return
        w = env.get("environment/n", 1.0)
        w = float(w) if isinstance(w, (int, float)) and math.isfinite(w) and w > 0 else 1.0
        for k, v in env.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.sums[k] = self.sums.get(k, 0.0) + float(v) * w
        self.weight += w

    def means(self) -> dict[str, float]:
        if self.weight <= 0:
            return {}
        return {k: v / self.weight for k, v in self.sums.items()}


def _puffer_defaults(env_name: str) -> dict:
    """PufferLib's own ``[train]`` defaults (keys the brief does not expose): ``default.ini``,
    then a foreign env's own ``.ini``."""
    if env_name in BUILTIN_ENVS:
        root = puffer.pufferlib_root()
        return puffer.read_ini([root / "config" / "default.ini"]).get("train", {}) if root else {}
    return dict(puffer.source(env_name).sections.get("train", {}))


def build(config: dict, env_name: str, seed: int):
    """Vector env and policy for ``env_name`` with the run config's topology."""
    import importlib

    import pufferlib
    import pufferlib.models
    import pufferlib.vector

    vec = config["vec"]
    backend = pufferlib.vector.Serial if vec["num_workers"] == 1 else pufferlib.vector.Multiprocessing
    notes = []
    if env_name in BUILTIN_ENVS:
        module = importlib.import_module(f"drex_opt.envs.{env_name}")
        env_kwargs = {"num_envs": config["env"]["num_envs"], "num_drones": config["env"]["num_drones"]}
        if backend is pufferlib.vector.Serial:
            # One process: the vec.num_envs sub-envs step as one batched env (same agents,
            # seeds, observations and reports as Serial over separate instances, one call).
            vecenv = pufferlib.vector.make(
                module.make_batched, backend=pufferlib.vector.PufferEnv,
                env_kwargs={"groups": vec["num_envs"], "seed": seed, **env_kwargs})
        else:
            vecenv = pufferlib.vector.make(
                module.make, backend=backend, num_envs=vec["num_envs"], num_workers=vec["num_workers"],
                env_kwargs=env_kwargs, seed=seed,
            )
        policy = pufferlib.models.Default(vecenv.driver_env, hidden_size=POLICY_HIDDEN)
        return vecenv, policy, notes

    try:
        src = puffer.source(env_name)
        make = puffer.creator(src)
    except UserError as exc:
        raise TrainingFailed(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any import/build problem of a foreign env
        raise TrainingFailed(f"environment {env_name!r} is not available in this PufferLib build: {exc}") from exc
    topo = puffer.topology(src, make, config["env"], vec, int(config["train"]["total_timesteps"]))
    notes.extend(topo.notes)
    vecenv = pufferlib.vector.make(make, backend=backend, num_envs=topo.num_envs,
                                   num_workers=topo.num_workers, env_kwargs=topo.env_kwargs, seed=seed)
    warning = puffer.shrink_warning(src, vecenv.num_agents, topo.configured_agents)
    if warning:
        notes.append(warning)
    policy = puffer.policy(src, vecenv.driver_env, POLICY_HIDDEN)
    return vecenv, policy, notes


def train_config(config: dict, env_name: str, run_dir: Path, num_agents: int, notes: list[str]) -> dict:
    """PuffeRL's flat train dict: PufferLib defaults, then the run config's train keys.

    The batch sizes must be those of the agents actually stepped. On the built-in env they
    always are (the parent derives them from the topology), so a mismatch is an error, never
    silently repaired; a foreign env counts its agents its own way, so its sizes are
    re-derived and the change is recorded in ``notes``.
    """
    cfg = _puffer_defaults(env_name)
    cfg.update(config["train"])
    cfg["env"] = env_name
    cfg["data_dir"] = str(run_dir / "checkpoints")
    cfg["use_rnn"] = False
    derived = num_agents * cfg["bptt_horizon"]
    sizes = {name: cfg.get(name) for name in ("batch_size", "minibatch_size", "max_minibatch_size")}
    if any(size != derived for size in sizes.values()):
        if env_name in BUILTIN_ENVS:
            raise TrainingFailed(f"batch sizes {sizes} do not equal the {num_agents} agents × "
                                 f"train.bptt_horizon {cfg['bptt_horizon']} = {derived}")
        notes.append(f"train.batch_size {cfg['batch_size']} set to {derived}: {env_name} steps {num_agents} "
                     f"agents × train.bptt_horizon {cfg['bptt_horizon']}")
        cfg["batch_size"] = cfg["minibatch_size"] = cfg["max_minibatch_size"] = derived
    return cfg


def run(config: dict, run_dir: Path, env_name: str, load_model: str | None) -> int:
    # Noise on every CPU run: a deprecated NVML binding and autocast without CUDA.
    warnings.filterwarnings("ignore", message=".*pynvml package is deprecated.*")
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*autocast.*")
    seed = _seed_everything(config)
    trainer, cfg, notes, agents = _make_trainer(config, run_dir, env_name, load_model, seed)
    optimizer_state = _load_optimizer(trainer, cfg, load_model) if load_model else None
    total = int(cfg["total_timesteps"])
    autopilot_env = {k: os.environ[k] for k in ("PUFFER_AUTOPILOT_RUN_DIR", "PUFFER_AUTOPILOT_RUN_ID",
                                                  "PUFFER_AUTOPILOT_SUMMARY") if k in os.environ}
    emit("start", env=env_name, agents=agents, batch_size=cfg["batch_size"],
         total_timesteps=total, seed=seed, notes=notes, load_model=load_model, optimizer_state=optimizer_state,
         autopilot_env=autopilot_env)
    last_logs, window, final = _train(trainer, total, seed, agents)
    model_path = trainer.close()
    checkpoint = run_dir / checkpoints.CHECKPOINT_NAME
    shutil.copy(model_path, checkpoint)
    _save_optimizer(trainer, cfg, checkpoint)
    metrics = _progress(last_logs, trainer, final.means() or window.means())
    emit("final", checkpoint=str(checkpoint), **metrics)
    return 0


def _seed_everything(config: dict) -> int:
    """Seed Python, NumPy and torch with ``train.seed``; cap torch's threads when asked."""
    import numpy as np
    import torch

    threads = int(os.environ.get("DREX_TORCH_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(config["train"]["seed"])
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def _make_trainer(config: dict, run_dir: Path, env_name: str, load_model: str | None, seed: int):
    """(PuffeRL trainer, its flat config, notes for the summary, agents stepped)."""
    import pufferlib.pufferl as pufferl
    import torch

    class QuietPuffeRL(pufferl.PuffeRL):
        """PuffeRL without its full-screen dashboard: progress goes out as events."""

        def print_dashboard(self, *args, **kwargs):
            return None

    vecenv, policy, notes = build(config, env_name, seed)
    device = config["train"]["device"]
    policy = policy.to(device)
    if load_model:
        load_policy(policy, load_model, device, env_name)
    cfg = train_config(config, env_name, run_dir, vecenv.num_agents, notes)
    if cfg["total_timesteps"] < cfg["batch_size"]:
        # PufferLib's schedule divides by the number of batches: a run is at least one batch.
        notes.append(f"train.total_timesteps {cfg['total_timesteps']} is below one batch; "
                     f"trained one batch ({cfg['batch_size']} steps)")
        cfg["total_timesteps"] = cfg["batch_size"]
    cfg["use_rnn"] = hasattr(policy, "lstm")
    optimizer = cfg["optimizer"]
    if optimizer == "adamw":
        cfg["optimizer"] = "adam"  # PufferLib 3.0 builds adam/muon; swapped for AdamW below
    trainer = QuietPuffeRL(cfg, vecenv, policy)
    if optimizer == "adamw":
        trainer.optimizer = torch.optim.AdamW(
            trainer.policy.parameters(), lr=cfg["learning_rate"],
            betas=(cfg["adam_beta1"], cfg["adam_beta2"]), eps=cfg["adam_eps"])
        trainer.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.optimizer, T_max=trainer.total_epochs)
        cfg["optimizer"] = "adamw"
    return trainer, cfg, notes, vecenv.num_agents


def load_policy(policy, path: str | Path, device: str, env_name: str) -> None:
    """Load a checkpoint's weights into ``policy``; a file that does not fit says why.

    The weights fit when every tensor has this policy's shape: on the built-in env the
    per-agent observation and action spaces do not depend on the topology, so a drone
    trained with other ``env``/``vec`` sizes continues fine.
    """
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same refusal
        raise TrainingFailed(f"checkpoint {path} cannot be read as PyTorch weights: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise TrainingFailed(f"checkpoint {path} is not a policy state dict")
    state = {k.replace("module.", ""): v for k, v in state.items()}
    own = policy.state_dict()
    problems = [f"{k} missing" for k in own if k not in state]
    problems += [f"{k} is {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} here"
                 for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems += [f"{k} is not in this policy" for k in state if k not in own]
    if problems:
        more = f"; {len(problems) - 3} more" if len(problems) > 3 else ""
        raise TrainingFailed(f"checkpoint {path} does not fit the {env_name} policy of this run (observation "
                             f"or action spaces or policy size differ): {'; '.join(problems[:3])}{more}")
    policy.load_state_dict(state)


def _save_optimizer(trainer, cfg: dict, checkpoint: Path) -> None:
    """The optimiser's state beside the checkpoint, for a run that continues this drone."""
    import torch

    torch.save({"optimizer": cfg["optimizer"], "state": trainer.optimizer.state_dict()},
               checkpoints.optimizer_path(checkpoint))


def _load_optimizer(trainer, cfg: dict, load_model: str | Path) -> str:
    """Continue the checkpoint's optimiser state when this run uses the same optimiser.

    The run's own hyperparameters win: the saved state brings the moments (Adam's running
    averages of the gradients), never the old learning rate, which the schedule had annealed.
    Returns ``"loaded"`` or ``"fresh: <why>"`` (recorded in the run's summary).
    """
    import torch

    path = checkpoints.optimizer_path(load_model)
    if not path.is_file():
        return f"fresh: no optimizer state beside {Path(load_model).name}"
    try:
        saved = torch.load(path, map_location=cfg["device"], weights_only=False)
        if saved.get("optimizer") != cfg["optimizer"]:
            return f"fresh: the checkpoint's optimizer is {saved.get('optimizer')}, this run's {cfg['optimizer']}"
        trainer.optimizer.load_state_dict(saved["state"])
    except Exception as exc:  # noqa: BLE001 - a state that does not fit is a fresh start, recorded
        return f"fresh: the saved optimizer state does not fit ({str(exc).splitlines()[0]})"
    for group in trainer.optimizer.param_groups:
        group["lr"] = group["initial_lr"] = cfg["learning_rate"]
        if "betas" in group:
            group["betas"] = (cfg["adam_beta1"], cfg["adam_beta2"])
        if "eps" in group:
            group["eps"] = cfg["adam_eps"]
    return "loaded"


def check_load(config: dict, env_name: str, load_model: str) -> int:
    """Build this run's env and policy and load ``load_model`` into it; train nothing.

    Also measures how random the checkpoint's policy is next to the same policy's fresh
    weights (the mean entropy of their actions on the env's first observations): a policy
    more random than fresh weights has unlearned what a start would teach it.
    """
    import torch  # noqa: F401 - imported before the env, as a run does

    seed = int(config["train"]["seed"])
    vecenv, policy, _ = build(config, env_name, seed)
    try:
        observations = _first_observations(vecenv, seed)
        fresh = _policy_entropy(policy, observations)
        load_policy(policy, load_model, "cpu", env_name)
        entropy = _policy_entropy(policy, observations)
    finally:
        vecenv.close()
    emit("checked", load_model=load_model, entropy=entropy, fresh_entropy=fresh)
    return 0


def _first_observations(vecenv, seed: int):
    """The observations of every agent after the env's reset (None if it would not reset)."""
    try:
        observations, _ = vecenv.reset(seed=seed)
    except Exception:  # noqa: BLE001 - no observations only means no entropy to compare
        return None
    return observations


def _policy_entropy(policy, observations) -> float | None:
    """Mean entropy of ``policy``'s action distribution on ``observations`` (PufferLib's own
    sampler computes it, for any action space); None when it cannot be measured or is not finite."""
    if observations is None:
        return None
    import pufferlib.pytorch
    import torch

    try:
        with torch.no_grad():
            logits, _ = policy.forward_eval(torch.as_tensor(observations))
            _, _, entropy = pufferlib.pytorch.sample_logits(logits)
        value = float(entropy.float().mean())
    except Exception:  # noqa: BLE001 - a policy that cannot be probed is not judged
        return None
    return value if math.isfinite(value) else None


def _train(trainer, total: int, seed: int, agents: int = 0) -> tuple[dict, StatWindow, StatWindow]:
    """PuffeRL's loop to ``total`` steps with a progress event about every second.

    Returns the last logs, the statistics since the last progress event and those of the
    final window: the reports of the last :data:`FINAL_WINDOW` of the run, reaching further
    back until they hold at least one episode per agent (``agents``). A drone that no longer
    crashes ends its episodes together, every ``HORIZON`` ticks: a short continuation's
    last stretch may hold no episode end, or only the few of drones that crashed, which
    would describe the drone by its failures.
    """
    window = StatWindow()
    reports: list[tuple[int, dict]] = []  # (step, environment statistics) of every report
    parent = os.getppid()
    last_emit = 0.0
    last_logs: dict = {}
    while trainer.global_step < total:
        try:
            trainer.evaluate()
            logs = trainer.train()
        except Exception as exc:
            if not _weights_finite(trainer):
                # Divergence usually surfaces as an invalid action distribution, not NaN losses.
                raise NaNLosses(f"policy weights became NaN/inf at step {trainer.global_step} "
                                f"({type(exc).__name__})") from exc
            raise
        if logs is None:
            continue
        last_logs = logs
        _raise_on_nan_losses(logs, trainer.global_step)
        window.add(logs)
        stats = {k: v for k, v in logs.items() if k.startswith("environment/")}
        if stats:
            reports.append((int(trainer.global_step), stats))
        if os.getppid() != parent:
            raise TrainingFailed("the process that started this run is gone")  # never train on as an orphan
        now = time.time()
        if now - last_emit >= PROGRESS_PERIOD_S:
            emit("progress", **_progress(logs, trainer, window.means()))
            window, last_emit = StatWindow(), now
            _inject_fault(os.environ.get(FAULT_ENV), trainer, seed)
    # PuffeRL's log carries the losses of its previous log (it keeps an epoch's losses only
    # after logging); the last epoch's are on the trainer. A run short enough to log once
    # would otherwise report no losses at all.
    final_losses = {f"losses/{k}": float(v) for k, v in (getattr(trainer, "losses", None) or {}).items()
                    if isinstance(v, (int, float))}
    _raise_on_nan_losses(final_losses, trainer.global_step)
    if last_logs and final_losses:
        last_logs = {**last_logs, **final_losses}
    return last_logs, window, final_window(reports, total, agents)


def _raise_on_nan_losses(logs: dict, step: int) -> None:
    """A NaN loss ends the run as a NaN failure, naming the first loss that went NaN."""
    bad = [k for k, v in logs.items() if k.startswith("losses/") and isinstance(v, float) and math.isnan(v)]
    if bad:
        raise NaNLosses(f"NaN in {bad[0]} at step {step}")


def final_window(reports: list[tuple[int, dict]], total: int, agents: int) -> StatWindow:
    """The reports of the last :data:`FINAL_WINDOW` of ``total`` steps, extended back (newest
    first) until they cover at least ``agents`` episodes or the run's first report."""
    # Without episode counts (an env that logs no ``n``) weights are reports, not episodes.
    needed = max(agents, 1) if any("environment/n" in stats for _, stats in reports) else 1
    final = StatWindow()
    for step, stats in reversed(reports):
        if step < (1 - FINAL_WINDOW) * total and final.weight >= needed:
            break
        final.add(stats)
    return final


def _weights_finite(trainer) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in trainer.uncompiled_policy.parameters())


def _inject_fault(fault: str | None, trainer, seed: int) -> None:
    if not fault:
        return
    seeds = os.environ.get(FAULT_SEEDS_ENV, "").strip()
    if seeds and str(seed) not in {s.strip() for s in seeds.split(",")}:
        return
    emit("fault", fault=fault, agent_steps=int(trainer.global_step))
    if fault == "nan":
        import torch

        with torch.no_grad():
            for p in trainer.uncompiled_policy.parameters():
                p.fill_(float("nan"))
    elif fault == "crash":
        raise RuntimeError("injected crash")
    elif fault == "hang":
        while True:
            time.sleep(60)


def _progress(logs: dict, trainer, env_means: dict) -> dict:
    out = {k: v for k, v in logs.items() if not k.startswith("environment/") and isinstance(v, (int, float))}
    out.update(env_means)
    out["agent_steps"] = int(trainer.global_step)
    out["epoch"] = int(trainer.epoch)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="effective run config JSON")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--env", default=BUILTIN_ENV)
    parser.add_argument("--load-model", default=None)
    parser.add_argument("--check-load", action="store_true", help="only check that --load-model fits the policy")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        config = json.loads(Path(args.config).read_text())
        if args.check_load:
            return check_load(config, args.env, args.load_model)
        return run(config, run_dir, args.env, args.load_model)
    except TrainingFailed as exc:
        emit("error", error=str(exc))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - any crash becomes a failed run, reported
        traceback.print_exc()
        emit("error", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        return 1


if __name__ == "__main__":
    exit_code = 1
    try:
        exit_code = main()
    finally:
        # PufferLib's non-daemon utilisation thread would keep the process alive forever
        # after any exit path (even a broken pipe to a dead parent): leave at once.
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - the parent may be gone
            pass
        os._exit(exit_code)
