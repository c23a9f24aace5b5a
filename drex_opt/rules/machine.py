"""This machine's limits, and the brief's advice on fitting a topology to a machine.

The brief's rules (:mod:`drex_opt.rules.safety`) hold for every proposal, wherever it will
run. The limits here hold only where a run trains on this machine (``train``, ``study``,
``autopilot``, ``validate --here``): a proposal meant for the owner's 28-core machine is
not wrong because this laptop has 2 cores. The brief's topology guidance ("prefer
``vec.num_workers`` ≤ cores and ``vec.num_envs`` ∈ {28, 56, 84}" on 28 cores) is advice:
warnings, never errors.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import psutil

from drex_opt.errors import UserError
from drex_opt.rules import safety
from drex_opt.rules.safety import Problem, Review, show


def physical_cores() -> int:
    """Physical cores: PufferLib refuses more multiprocessing workers than this."""
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def usable_cpus() -> int:
    """Logical CPUs this process may run on: a worker pinned with ``taskset`` or confined by
    a container's cpuset sees its share, not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


@functools.cache
def available_devices() -> tuple[str, ...]:
    """The ``train.device`` values torch can use here (imports torch: call only when needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda warns about optional packages on import
        import torch

        found = ["cpu"]
        if torch.cuda.is_available():
            found.append("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            found.append("mps")
    return tuple(found)


def _get(cfg: dict, section: str, key: str) -> Any:
    values = cfg.get(section)
    return values.get(key) if isinstance(values, dict) else None


def _float32_in_disguise(cfg: dict) -> Problem | None:
    """``bfloat16`` off CUDA: PufferLib's mixed precision is CUDA autocast only, so the run
    would silently train in float32. A refusal where the run trains here, a warning elsewhere."""
    device = _get(cfg, "train", "device")
    if _get(cfg, "train", "precision") != "bfloat16" or device == "cuda":
        return None
    return Problem("train.precision", f"\"bfloat16\" would train as float32 on {device}: "
                                      "PufferLib uses bfloat16 only on CUDA; use float32")


def problems_here(cfg: dict, cores: int | None = None) -> list[Problem]:
    """What stops ``cfg`` (an effective config) from training as written on this machine.

    A device torch does not have here; ``bfloat16`` off CUDA (PufferLib's mixed precision
    is CUDA autocast only, so elsewhere it would silently train in float32); more
    multiprocessing workers than physical cores (PufferLib refuses them). Torch is
    imported only when the device is not ``cpu``.
    """
    problems = []
    device = _get(cfg, "train", "device")
    if isinstance(device, str) and device != "cpu" and device not in available_devices():
        problems.append(Problem("train.device", f"{show(device)} is not available on this machine "
                                                f"(it has {', '.join(available_devices())})"))
    precision = _float32_in_disguise(cfg)
    if precision is not None:
        problems.append(precision)
    workers = _get(cfg, "vec", "num_workers")
    cores = cores or physical_cores()
    if isinstance(workers, int) and workers > 1 and workers > cores:
        problems.append(Problem("vec.num_workers", f"{workers} is above this machine's {cores} physical cores "
                                                   f"(PufferLib refuses more workers than cores); use at most {cores}"))
    return problems


def check_here(cfg: dict) -> list[str]:
    """Refuse ``cfg`` when it cannot train as written here; else the topology advice for here.

    Raises:
        UserError: every problem of :func:`problems_here` on one line.
    """
    problems = problems_here(cfg)
    if problems:
        raise UserError("; ".join(map(str, problems)))
    return [str(advice) for advice in topology_advice(cfg, physical_cores(), "this machine")]


def review(proposal: Any, baseline: dict, repair: bool = False, here: bool = False,
           cores: int | None = None) -> Review:
    """``drex-opt validate``: the brief's rules always; this machine's limits with ``here``.

    Args:
        here: the run will train on this machine: its devices and cores are rules (and
            ``repair`` fits the proposal to them).
        cores: the core count of the machine the proposal is meant for, for the brief's
            topology advice (default: this machine's). Not with ``here``.
    """
    if here and cores is not None:
        raise UserError("give --here (this machine) or --cores N (another machine), not both")
    if cores is not None and not 1 <= cores <= safety.MAX_COUNT:
        raise UserError(f"--cores must be between 1 and {safety.MAX_COUNT}, got {cores}")
    given = safety.merge(baseline, safety.nest(proposal)[0]) if isinstance(proposal, dict) else baseline
    devices = None
    if here:
        # Only a device other than the CPU needs torch imported to be checked.
        wanted = {_get(given, "train", "device"), _get(baseline, "train", "device")}
        devices = available_devices() if wanted - {"cpu"} else ("cpu",)
    result = safety.review(proposal, baseline, repair, physical_cores() if here else None, devices)
    if here and result.valid:
        machine = [str(problem) for problem in problems_here(given)]
        result.problems += machine
        result.valid = not machine
        if machine and not repair:
            result.overrides = safety.nest(proposal)[0]
    effective = safety.merge(baseline, result.overrides) if result.valid or repair else given
    target = cores or physical_cores()
    where = "the target machine" if cores is not None else "this machine"
    flagged = {problem.split(":", 1)[0] for problem in result.problems}
    advice = [*topology_advice(effective, target, where), _float32_in_disguise(effective)]
    result.warnings = [str(item) for item in advice if item is not None and item.key not in flagged]
    return result


def topology_advice(cfg: dict, cores: int, where: str) -> list[Problem]:
    """The brief's topology guidance for a machine of ``cores`` cores, one warning per miss.

    ``where`` names that machine in the sentences ("this machine", "the target machine").
    """
    advice = []
    workers, envs = _get(cfg, "vec", "num_workers"), _get(cfg, "vec", "num_envs")
    if isinstance(workers, int) and workers > cores:
        advice.append(Problem("vec.num_workers", f"{workers} is above the {cores} cores of {where}: "
                                                 "the brief prefers at most one worker per core"))
    if isinstance(workers, int) and workers > 1 and isinstance(envs, int) and envs % cores:
        examples = ", ".join(str(cores * k) for k in (1, 2, 3))
        advice.append(Problem("vec.num_envs", f"{envs} is not a multiple of the {cores} cores of {where}: "
                                              f"the brief prefers {examples}"))
    return advice
