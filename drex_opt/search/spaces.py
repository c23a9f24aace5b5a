"""Search spaces: one TOML file per behavioural focus, ``search_spaces/<focus>.toml``.

A file states the theory its experiment tests (``description``), a ``[budget]`` and the
parameters to search, named ``"section.key"`` as in the brief. Every range must lie
inside the safety ranges of :mod:`drex_opt.rules.safety`; a file breaking that does not load.

An optional ``[warm]`` section holds the same experiment for trials that continue a run's
checkpoint rather than train from scratch: its own theory, budget and ranges, which may be
``around`` the run's values; :func:`for_warm_start` resolves them against a run.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from drex_opt import shipped
from drex_opt.errors import UserError
from drex_opt.rules import safety
from drex_opt.rules.behavior import FOCI

if TYPE_CHECKING:
    import optuna

DIAGNOSTIC_FOCUS = "diagnostic_grip"
# Owned by [budget] and by the seed repeats, so a space may not search them.
RESERVED = frozenset({"train.total_timesteps", "train.seed"})

_STRICT = ConfigDict(extra="forbid", strict=True)
# A TOML description is a multi-line string; its edge newlines mean nothing.
_TEXT = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


class ParamSpec(BaseModel):
    """One searched key: a float or int range (optionally log-scaled or stepped) or choices."""

    model_config = _STRICT

    type: Literal["float", "int", "categorical"]
    low: float | int | None = Field(None, description="Lower bound, inclusive (float/int).")
    high: float | int | None = Field(None, description="Upper bound, inclusive (float/int).")
    log: bool = Field(False, description="Sample on a log scale; needs low > 0 and no step.")
    step: float | int | None = Field(None, description="Grid spacing from low (float/int).")
    choices: list[str | bool | int | float] | None = Field(None, description="Values of a categorical.")


class Budget(BaseModel):
    """Trial budget of a focus; quick trials run on the quick baseline, full on the full one."""

    model_config = _STRICT

    full_timesteps: int = Field(ge=1_000, le=1_000_000_000, description="train.total_timesteps per trial, full baseline.")
    quick_timesteps: int = Field(ge=1_000, le=1_000_000_000, description="train.total_timesteps per trial, quick baseline.")
    trials: int = Field(ge=1, description="Trials of one study.")
    startup_trials: int = Field(ge=0, description="Random trials before TPE takes over; at most trials.")
    repeats: int = Field(ge=0, description="Extra runs of a trial's configuration with other seeds (0: run once).")

    @model_validator(mode="after")
    def _startup_within_trials(self) -> Budget:
        if self.startup_trials > self.trials:
            raise PydanticCustomError("budget", "startup_trials must not exceed trials")
        return self


class TrialBudget(NamedTuple):
    """What one study of a focus gets on a given baseline."""

    timesteps: int
    trials: int
    startup_trials: int
    repeats: int


class WarmParamSpec(ParamSpec):
    """A searched key of a warm start: a :class:`ParamSpec`, or a range ``around`` the run's value."""

    around: list[float] | None = Field(
        None, min_length=2, max_length=2,
        description="Factors [lo, hi] of the run's value, 0 < lo < 1 < hi, in place of low and high (float/int).")


class WarmSection(BaseModel):
    """``[warm]``: the experiment for trials that continue the run's checkpoint."""

    model_config = _TEXT

    description: str = Field(min_length=1, description="Why these ranges suit a drone already trained this far.")
    budget: Budget | None = Field(None, description="The warm trials' budget; absent: the space's [budget].")
    params: dict[str, WarmParamSpec] = Field(default_factory=dict)


class SearchSpace(BaseModel):
    """A focus's experiment. ``inherit`` spaces (``continue``) carry no parameters: they
    reuse the previous focus's space, narrowed with :func:`narrow`."""

    model_config = _TEXT

    focus: str
    description: str = Field(min_length=1, description="The theory the experiment tests.")
    budget: Budget
    inherit: bool = False
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    warm: WarmSection | None = Field(None, description="Ranges for continuing a run's checkpoint (see for_warm_start).")
    source: Path | None = Field(None, description="The TOML file this space was read from.")

    @model_validator(mode="after")
    def _params_safe(self) -> SearchSpace:
        warm = self.warm.params if self.warm else {}
        if self.inherit and (self.params or warm):
            raise PydanticCustomError("search_space", "an inherit = true space takes its params from the previous focus")
        if not self.inherit and not self.params:
            raise PydanticCustomError("search_space", "no [params.\"section.key\"] tables")
        if not self.inherit and self.warm and not warm:
            raise PydanticCustomError("search_space", "no [warm.params.\"section.key\"] tables")
        problems = [f'params."{name}": {problem}' for name, spec in self.params.items() for problem in _param_problems(name, spec)]
        problems += [f'warm.params."{name}": {problem}' for name, spec in warm.items() for problem in _warm_problems(name, spec)]
        if problems:
            raise PydanticCustomError("search_space", "; ".join(problems))
        return self

    def budget_for(self, baseline_name: str, severity: str | None = None) -> TrialBudget:
        """The budget on the ``"quick"`` or ``"full"`` baseline.

        A ``"critical"`` severity forces the diagnostic focus's short budget (read from
        the same directory), whatever this space's focus.

        Raises:
            UserError: ``baseline_name`` is neither quick nor full.
        """
        if baseline_name not in ("quick", "full"):
            raise UserError(f"a budget exists for the quick and full baselines, not {baseline_name!r}")
        budget = self.budget
        if severity == "critical" and self.focus != DIAGNOSTIC_FOCUS:
            budget = load(DIAGNOSTIC_FOCUS, self.source.parent if self.source else None).budget
        timesteps = budget.quick_timesteps if baseline_name == "quick" else budget.full_timesteps
        return TrialBudget(timesteps, budget.trials, budget.startup_trials, budget.repeats)


def _key_problems(name: str) -> list[str]:
    spec = safety.SPEC_BY_KEY.get(name)
    if spec is None:
        return ["not a key of the brief"]
    if spec.derived:
        return ["derived from the topology, it cannot be searched"]
    if name in RESERVED:
        return ["set by [budget] and the seed repeats, it cannot be searched"]
    return []


def _param_problems(name: str, p: ParamSpec) -> list[str]:
    """What is wrong with searching ``name`` as ``p`` (empty when it is fine)."""
    if problems := _key_problems(name):
        return problems
    spec = safety.SPEC_BY_KEY[name]
    if p.type == "categorical":
        if p.low is not None or p.high is not None or p.log or p.step is not None:
            return ["a categorical takes only choices"]
        if not p.choices or len(set(map(repr, p.choices))) != len(p.choices):
            return ["choices must be a non-empty list without duplicates"]
        values = p.choices
    else:
        if p.type != spec.kind:
            return [f"type {p.type} does not fit a key of type {spec.kind}"]
        if p.low is None or p.high is None or p.choices is not None:
            return [f"a {p.type} needs low and high and no choices"]
        if p.type == "int" and not all(isinstance(v, int) for v in (p.low, p.high, p.step or 1)):
            return ["an int range needs integer low, high and step"]
        if not p.low < p.high:
            return ["low must be below high"]
        if p.log and (p.low <= 0 or p.step is not None):
            return ["log needs low > 0 and no step"]
        if p.step is not None and p.step <= 0:
            return ["step must be positive"]
        values = [p.low, p.high]
    section, key = name.split(".")
    return [problem.message for v in values for problem in safety.validate({section: {key: v}})]


def _warm_problems(name: str, p: WarmParamSpec) -> list[str]:
    """:func:`_param_problems` for a warm param, which takes no step and may use ``around``."""
    if p.step is not None:
        # A grid from low could not be stretched to hold the run's value.
        return ["a warm range takes no step"]
    if p.around is None:
        return _param_problems(name, p)
    if problems := _key_problems(name):
        return problems
    kind = safety.SPEC_BY_KEY[name].kind
    if p.type == "categorical":
        return ["around is for a float or int range, not a categorical"]
    if p.type != kind:
        return [f"type {p.type} does not fit a key of type {kind}"]
    if p.low is not None or p.high is not None or p.choices is not None:
        return ["around replaces low and high and takes no choices"]
    if not 0 < p.around[0] < 1 < p.around[1]:
        return ["around needs factors [lo, hi] with 0 < lo < 1 < hi"]
    return []  # the resolved range is clipped into the safety range


# ---------------------------------------------------------------- files
def spaces_dir() -> Path:
    """``$DREX_SEARCH_SPACES`` when set, else the shipped ``search_spaces/``."""
    override = os.environ.get("DREX_SEARCH_SPACES")
    return Path(override) if override else shipped.search_spaces_dir()


def load(focus: str, directory: str | Path | None = None) -> SearchSpace:
    """Read and check ``<directory>/<focus>.toml``.

    Raises:
        UserError: unknown focus (the message lists the valid ones), missing file,
            malformed TOML, or a space breaking a rule (the message names the file).
    """
    if focus not in FOCI:
        raise UserError(f"unknown focus {focus!r}; valid foci: {', '.join(FOCI)}")
    path = Path(directory) if directory is not None else spaces_dir()
    path = path / f"{focus}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"search space file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read search space {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    for computed in ("focus", "source"):
        if computed in data:
            raise UserError(f"{path}: {computed}: unknown key (it comes from the file itself)")
    return _validated({**data, "focus": focus, "source": path}, path)


def _validated(data: dict, where: Path | str) -> SearchSpace:
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{where}: " + "; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: Any) -> str:
    # Quote keys holding dots so params."train.gamma".low reads unambiguously.
    loc = ".".join(f'"{part}"' if "." in str(part) else str(part) for part in error["loc"])
    return f"{loc}: {error['msg']}" if loc else error["msg"]


def load_all(directory: str | Path | None = None) -> dict[str, SearchSpace]:
    """Every focus's space, in :data:`FOCI` order (the first bad file raises UserError)."""
    return {focus: load(focus, directory) for focus in FOCI}


# ---------------------------------------------------------------- using a space
def suggest(space: SearchSpace, trial: optuna.trial.BaseTrial) -> dict:
    """Nested overrides drawn from ``trial``; Optuna parameter names are ``"section.key"``.

    Raises:
        ValueError: ``space`` inherits (narrow the previous focus's space first).
    """
    if space.inherit:
        raise ValueError(f"the {space.focus} space inherits its params; narrow() the previous focus's space")
    overrides: dict[str, dict] = {}
    for name, p in space.params.items():
        if p.type == "float":
            value = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            value = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            value = trial.suggest_categorical(name, p.choices)
        section, key = name.split(".")
        overrides.setdefault(section, {})[key] = value
    return overrides


def narrow(space: SearchSpace, center: dict, factor: float = 0.25) -> SearchSpace:
    """``space`` with each numeric range shrunk to ``factor`` of its width around ``center``.

    Args:
        space: the space to narrow (a focus's own, not an inheriting one).
        center: a nested config or overrides (e.g. the best trial's); a param it lacks
            keeps its range, a value outside the range is moved to the nearest bound.
        factor: the new width as a share of the old, in (0, 1]; log ranges shrink in log
            space; the new range is clipped to the old one, never leaving it.

    Categorical params keep all their choices. Raises ValueError for a bad ``factor``.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], not {factor}")
    params = {}
    for name, p in space.params.items():
        section, key = name.split(".")
        values = center.get(section)
        value = values.get(key) if isinstance(values, dict) else None
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        params[name] = _narrow_range(p, value, factor) if numeric and p.type != "categorical" else p
    data = space.model_dump()
    data["params"] = {name: p.model_dump() for name, p in params.items()}
    return SearchSpace.model_validate(data)


def _narrow_range(p: ParamSpec, value: float, factor: float) -> ParamSpec:
    scale, unscale = (math.log, math.exp) if p.log else (float, float)
    lo, hi = scale(p.low), scale(p.high)
    center = scale(min(max(value, p.low), p.high))
    half = (hi - lo) * factor / 2
    # unscale(scale(x)) may drift by an ulp, hence the clip to the old range.
    new_lo = max(p.low, unscale(max(lo, center - half)))
    new_hi = min(p.high, unscale(min(hi, center + half)))
    if p.step is not None:
        # Stay on the original grid so Optuna keeps proposing the same values; rounding
        # drops float noise that would make Optuna think the range is off the grid.
        new_lo = round(p.low + math.floor((new_lo - p.low) / p.step) * p.step, 12)
        new_hi = min(p.high, round(p.low + math.ceil((new_hi - p.low) / p.step) * p.step, 12))
    if p.type == "int":
        # Rounding outward keeps at least two values: new_lo < new_hi before rounding.
        new_lo, new_hi = math.floor(new_lo), math.ceil(new_hi)
    return p.model_copy(update={"low": new_lo, "high": new_hi})


# ---------------------------------------------------------------- warm starts
def for_warm_start(space: SearchSpace, run_config: dict) -> SearchSpace:
    """The plain space of trials that continue a run's checkpoint, ready for :func:`suggest`.

    The ``[warm]`` params with ``around`` ranges become the run's value times the factors;
    every numeric range then stretches to hold the run's value (so continuing unchanged
    stays a trial the study can propose), is clipped into the key's safety range and, for
    ints, rounded outward. Categorical choices stay as written, even without the run's
    value. The description and budget are ``[warm]``'s (its budget, else the space's);
    the result has no ``[warm]`` section. An inheriting space stays inheriting, without params.

    Args:
        space: a loaded space.
        run_config: the run's full nested config (``run_config["train"]["gamma"]``).

    Raises:
        UserError: the space has no ``[warm]`` section; the run's value of a numeric warm
            param is missing or breaks its safety range; it is not positive where ``around``
            or a log range needs it. The message names the file.
    """
    where = space.source or space.focus
    if space.warm is None:
        raise UserError(f"{where}: no [warm] section, so no ranges for continuing a run's checkpoint")
    warm = space.warm
    params = {name: _resolved(name, p, run_config, where) for name, p in warm.params.items()}
    budget = (warm.budget or space.budget).model_dump()
    return _validated({**space.model_dump(), "description": warm.description, "budget": budget,
                       "params": params, "warm": None}, where)


def _resolved(name: str, p: WarmParamSpec, run_config: dict, where: Path | str) -> dict:
    """The fields of a plain :class:`ParamSpec` for ``p`` on the run ``run_config``."""
    data = p.model_dump(exclude={"around"})
    if p.type == "categorical":
        return data
    section, key = name.split(".")
    values = run_config.get(section)
    value = values.get(key) if isinstance(values, dict) else None
    if problems := safety.validate({section: {key: value}}):
        raise UserError(f'{where}: warm.params."{name}": the run\'s {problems[0]}')
    if (p.around or p.log) and value <= 0:
        need = "factors of around" if p.around else "a log range"
        raise UserError(f'{where}: warm.params."{name}": the run\'s value {value} is not positive, as {need} need')
    low, high = (value * p.around[0], value * p.around[1]) if p.around else (min(p.low, value), max(p.high, value))
    spec = safety.SPEC_BY_KEY[name]
    low, high = max(low, spec.low), min(high, spec.high)
    low, high = (math.floor(low), math.ceil(high)) if p.type == "int" else (float(low), float(high))
    return {**data, "low": low, "high": high}
