"""PufferLib environments by name or by class, on their own ``.ini`` terms.

An env is named in one of three ways, everywhere an ``--env`` is taken:

- a built-in env (``drone_pp``, ``drone_pp_hard``): drex-opt's own, not handled here;
- a PufferLib env name (``puffer_drone``, ``puffer_drone_delivery``): the installed
  PufferLib's ``config/**/*.ini`` that declares it gives its env, vec, policy, rnn and train
  defaults, as ``puffer train NAME`` would read them;
- ``module:Class``: an env class the installed PufferLib does not register (a fork, a newer
  env), imported from the user's code, with its settings from ``--env-config PATH.ini``
  (PufferLib's ``.ini`` layout) or none.

``--env-config`` travels with the name as one *env id*, ``NAME@/abs/path.ini``, so a study's
trials, the autopilot's runs and their summaries all name the same env.

The brief's keys apply only where they mean something for the env: ``vec.*`` for any env;
``env.num_envs`` × ``env.num_drones`` (drones per vec sub-env) as the brief defines them for
an env that takes both (drone_delivery), else mapped onto the env's own agent-count argument
(``num_agents``, ``num_drones`` or ``num_envs``, the last being how PufferLib's C envs count
their agents), else not at all. Every mapping is written in the run's notes.

Nothing here imports PufferLib or torch at module level: the parent checks an env before
anything runs, and ``drex-opt --help`` stays fast.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from drex_opt.errors import UserError

#: Constructor arguments that count an env's agents, in the order they are looked for.
AGENT_COUNT_ARGS = ("num_agents", "num_drones", "num_envs")
#: Statistics reports a run should see at least: a final window needs several.
REPORTS_WANTED = 20
#: A run training fewer than this share of the agents its .ini configures is warned about.
SHRINK_WARNING = 0.25
#: PufferLib ``.ini`` sections drex-opt reads.
SECTIONS = ("base", "vec", "env", "policy", "rnn", "train", "sweep", "drex.metrics")


@dataclass(frozen=True)
class EnvSource:
    """Where a foreign env comes from and the settings its ``.ini`` gives it."""

    env_id: str
    name: str  # the PufferLib env name, or "module:Class"
    ini_path: str | None  # the env's .ini (None: PufferLib's defaults only)
    sections: dict = field(default_factory=dict)  # section -> {key: value}, literals parsed

    @property
    def class_path(self) -> str | None:
        return self.name if ":" in self.name else None

    @property
    def package(self) -> str:
        return str(self.sections.get("base", {}).get("package") or "ocean")

    @property
    def ocean_short_name(self) -> str | None:
        """``drone`` for ``puffer_drone``: the folder of a registered ocean env."""
        if self.class_path or self.package != "ocean" or not self.name.startswith("puffer_"):
            return None
        return self.name[len("puffer_"):]


def make_env_id(name: str, env_config: str | Path | None = None) -> str:
    """The one string that names an env and the ``.ini`` it is configured by."""
    if env_config is None:
        return name
    return f"{name}@{Path(env_config).expanduser().resolve()}"


def split_env_id(env_id: str) -> tuple[str, str | None]:
    name, sep, config = env_id.partition("@")
    return name, (config if sep else None)


def env_label(env_id: str) -> str:
    """A short name for an env id, for study names: ``name`` or ``name-<ini stem>``."""
    name, config = split_env_id(env_id)
    return name if config is None else f"{name}-{Path(config).stem}"


def pufferlib_root() -> Path | None:
    """The installed PufferLib's package folder, found without importing it."""
    spec = importlib.util.find_spec("pufferlib")
    return Path(spec.origin).parent if spec and spec.origin else None


def literal(raw: str):
    """An ``.ini`` value as PufferLib reads it (``1_000``, ``True``, ``'auto'``, ...)."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw.strip()


def read_ini(paths: list[Path]) -> dict[str, dict]:
    parser = configparser.ConfigParser()
    try:
        parser.read([str(p) for p in paths])
    except configparser.Error as exc:
        raise UserError(f"cannot read {paths[-1]}: {str(exc).splitlines()[0]}") from None
    return {name: {k: literal(v) for k, v in parser[name].items()} for name in SECTIONS if parser.has_section(name)}


def find_ini(name: str) -> Path | None:
    """The installed PufferLib's ``.ini`` declaring ``name`` (as ``pufferl.load_config`` finds it)."""
    root = pufferlib_root()
    if root is None:
        return None
    for path in sorted((root / "config").glob("**/*.ini")):
        if path.name == "default.ini":
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_section("base") and name in parser["base"].get("env_name", "").split():
            return path
    return None


def source(env_id: str) -> EnvSource:
    """The env's source and settings; UserError for an unknown name or an unreadable ``.ini``."""
    name, config = split_env_id(env_id)
    root = pufferlib_root()
    defaults = [root / "config" / "default.ini"] if root is not None else []
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise UserError(f"--env-config {path}: no such file")
        # Layered over the installed .ini of a registered env: a user writes only what differs.
        installed = find_ini(name) if ":" not in name else None
        return EnvSource(env_id, name, str(path), read_ini([*defaults, *filter(None, [installed]), path]))
    if ":" in name:
        return EnvSource(env_id, name, None, read_ini(defaults))
    path = find_ini(name)
    if path is None:
        raise UserError(f"unknown env {name!r}: not built in (drone_pp, drone_pp_hard), not declared by the "
                        "installed PufferLib's configs, and not module:Class")
    return EnvSource(env_id, name, str(path), read_ini([*defaults, path]))


def unbuilt_binding(src: EnvSource) -> Path | None:
    """The C binding source of an ocean env whose compiled binding is missing (else None)."""
    short, root = src.ocean_short_name, pufferlib_root()
    if short is None or root is None:
        return None
    folder = root / "ocean" / short
    binding = folder / "binding.c"
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    if binding.is_file() and not (folder / f"binding{suffix}").is_file():
        return binding
    return None


def check(env_id: str) -> EnvSource:
    """Everything that can be known about a foreign env before a run starts, else UserError.

    A registered C env must be built; a ``module:Class`` must import and be a PufferEnv
    (that one import is the price of a clear refusal before anything trains).
    """
    src = source(env_id)
    if not src.class_path and src.ini_path and find_ini(src.name) is None and not registered(src):
        raise UserError(f"unknown env {src.name!r}: the installed PufferLib has no such env (its --env-config "
                        "cannot make one; for your own env class use --env module:Class)")
    missing = unbuilt_binding(src)
    if missing is not None:
        raise UserError(f"env {src.name!r} is not built in this PufferLib: run "
                        f"DREX_PUFFER_ENVS={src.ocean_short_name} bash scripts/setup.sh to build it offline")
    if src.class_path:
        check_class(src.class_path)
    return src


def registered(src: EnvSource) -> bool:
    """Whether the installed PufferLib has a module for the env (an ocean folder)."""
    root = pufferlib_root()
    return bool(src.ocean_short_name and root is not None and (root / "ocean" / src.ocean_short_name).is_dir())


# Run in a separate interpreter: importing the user's module imports PufferLib, whose import
# prints notices and writes a ``resources`` link into the working directory; a refused
# command must print one line and leave nothing behind.
_CHECK_CLASS = """
import sys
from drex_opt.envs.puffer import load_class
from drex_opt.errors import UserError
try:
    load_class(sys.argv[1], sys.argv[2])
except UserError as exc:
    print(exc)
    sys.exit(2)
"""


def check_class(class_path: str, timeout: float = 300.0) -> None:
    """``load_class`` in a throwaway interpreter (in a temporary folder); UserError if it refuses."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHECK_CLASS, class_path, os.getcwd()], cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"--env {class_path}: importing it took over {timeout:.0f} s") from None
    if proc.returncode == 2 and proc.stdout.strip():
        raise UserError(proc.stdout.strip().splitlines()[-1])
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"--env {class_path}: checking it failed: {tail}")


def load_class(class_path: str, folder: str | None = None):
    """The env class named ``module:Class``; UserError when it does not import or is not a PufferEnv.

    The user's own modules are found in ``folder`` (default: the working directory), as
    ``python -m`` would find them.
    """
    module_name, _, class_name = class_path.partition(":")
    if not module_name or not class_name:
        raise UserError(f"--env {class_path!r}: write module:Class (for example my_envs.drone:Drone)")
    folder = folder or os.getcwd()
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import the user's module is the same refusal
        raise UserError(f"--env {class_path}: cannot import {module_name}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UserError(f"--env {class_path}: {module_name} has no {class_name}")
    import pufferlib

    if not (inspect.isclass(cls) and issubclass(cls, pufferlib.PufferEnv)):
        raise UserError(f"--env {class_path}: {class_name} is not a pufferlib.PufferEnv subclass")
    return cls


def creator(src: EnvSource):
    """The callable that builds one env instance (what ``pufferlib.vector.make`` takes)."""
    if src.class_path:
        return load_class(src.class_path)
    package = src.package
    module = importlib.import_module("pufferlib.ocean" if package == "ocean" else f"pufferlib.environments.{package}")
    made = module.env_creator(src.name)
    if isinstance(made, str):  # PufferLib returns the class *name* when the module failed to import
        raise UserError(f"env {src.name!r} did not import: its C binding is probably not built (run "
                        f"DREX_PUFFER_ENVS={src.ocean_short_name} bash scripts/setup.sh)")
    return made


def parameters(make) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(make).parameters)
    except (TypeError, ValueError):
        return {}


def agents_per_env(kwargs: dict, keys: set[str]) -> tuple[int | None, str | None]:
    """(agents one env instance steps, the argument that says so) from its kwargs."""
    if {"num_envs", "num_drones"} <= keys:
        n, d = kwargs.get("num_envs"), kwargs.get("num_drones")
        return (n * d if isinstance(n, int) and isinstance(d, int) else None), "num_envs × num_drones"
    for arg in AGENT_COUNT_ARGS:
        if arg in keys:
            value = kwargs.get(arg)
            return (value if isinstance(value, int) else None), arg
    return None, None


@dataclass
class Topology:
    env_kwargs: dict
    num_envs: int  # vec sub-envs
    num_workers: int
    notes: list[str]
    planned_agents: int | None  # None: the env counts its agents its own way
    configured_agents: int | None  # what the .ini configures (None: unknown)


def topology(src: EnvSource, make, run_env: dict, run_vec: dict, total_timesteps: int) -> Topology:
    """The env kwargs of a run: the ``.ini``'s, with the brief's topology mapped onto them."""
    params = parameters(make)
    ini_env = dict(src.sections.get("env", {}))
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    keys = set(ini_env) | {k for k, p in params.items()
                           if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    configured = {**defaults, **ini_env}
    kwargs = dict(ini_env)
    notes: list[str] = []
    drones = int(run_env["num_envs"]) * int(run_env["num_drones"])
    per_env_ini, arg = agents_per_env(configured, keys)
    if arg == "num_envs × num_drones":
        kwargs["num_envs"], kwargs["num_drones"] = int(run_env["num_envs"]), int(run_env["num_drones"])
        notes.append(f"env.num_envs {run_env['num_envs']} and env.num_drones {run_env['num_drones']} passed to "
                     f"{src.name} as they are (its .ini: {configured.get('num_envs')} × {configured.get('num_drones')})")
    elif arg is not None:
        kwargs[arg] = drones
        notes.append(f"env.num_envs × env.num_drones = {drones} drones per sub-env, passed as {src.name}'s "
                     f"{arg} (its .ini: {configured.get(arg)})")
    else:
        notes.append(f"env.num_envs and env.num_drones do not apply to {src.name}: it takes no agent count")
    num_envs, num_workers = int(run_vec["num_envs"]), int(run_vec["num_workers"])
    ini_vec = src.sections.get("vec", {})
    ini_num_envs = ini_vec.get("num_envs") if isinstance(ini_vec.get("num_envs"), int) else None
    planned_per_env, _ = agents_per_env({**configured, **kwargs}, keys)
    planned = planned_per_env * num_envs if planned_per_env else None
    wanted = per_env_ini * ini_num_envs if per_env_ini and ini_num_envs else None

    if "report_interval" in keys and planned:
        current = configured.get("report_interval")
        ticks = total_timesteps // planned
        if isinstance(current, int) and current > 1 and ticks < REPORTS_WANTED * current:
            new = max(1, ticks // REPORTS_WANTED)
            kwargs["report_interval"] = new
            notes.append(f"report_interval {current} set to {new}: {planned} agents report every "
                         f"{current * planned:,} agent steps at {current}, {REPORTS_WANTED} reports need one "
                         f"every {total_timesteps // REPORTS_WANTED:,} of this run's {total_timesteps:,}")
    return Topology(kwargs, num_envs, num_workers, notes, planned, wanted)


def shrink_warning(src: EnvSource, agents: int, configured: int | None) -> str | None:
    """A warning when a run trains far fewer agents than the env's ``.ini`` configures."""
    if not configured or agents >= SHRINK_WARNING * configured:
        return None
    return (f"warning: {src.name} trains {agents:,} agents here, {agents / configured:.0%} of the {configured:,} "
            "its .ini configures; set env.num_envs, env.num_drones and vec.num_envs to train as many")


def first_report_steps(agents: int, report_interval: int) -> int:
    """Agent steps before an env that reports every ``report_interval`` ticks first reports."""
    return agents * report_interval


def policy(src: EnvSource, driver_env, fallback_hidden: int):
    """The ``.ini``'s policy (and rnn wrapper) from PufferLib's policy module, as ``puffer
    train`` builds it; PufferLib's default MLP when the env names none that exists."""
    import pufferlib.models

    base = src.sections.get("base", {})
    # A class env names its policy as PufferLib's default config does: from pufferlib.ocean.torch.
    package = "ocean" if src.class_path else src.package
    module = importlib.import_module("pufferlib.ocean.torch" if package == "ocean"
                                     else f"pufferlib.environments.{package}.torch")
    policy_name, rnn_name = base.get("policy_name"), base.get("rnn_name")
    policy_cls = _named(module, policy_name)
    if policy_cls is None:
        return pufferlib.models.Default(driver_env, hidden_size=fallback_hidden)
    net = policy_cls(driver_env, **src.sections.get("policy", {}))
    rnn_cls = _named(module, rnn_name)
    if rnn_cls is not None:
        net = rnn_cls(driver_env, net, **src.sections.get("rnn", {}))
    return net


def _named(module, name):
    """``name`` in ``module``, or a ``module:Class`` anywhere; None for None/'None'/absent."""
    if not isinstance(name, str) or name in ("", "None"):
        return None
    if ":" in name:
        mod, _, attr = name.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return getattr(module, name, None) if module is not None else None
