"""Read a run's metrics from whatever it left behind: summaries, logs, raw metric objects.

Formats understood by :func:`read_run` (the first that fits wins):

- a run folder: its ``summary.json``, else its ``train.log``, else its newest ``*.log``;
- a ``summary.json`` written by drex-opt (named fields, ``metrics_extended`` and a ``metrics``
  object of raw PufferLib keys) or by the owner's autopilot loop (named fields,
  ``metrics_extended``, ``trainer_summary.metrics`` and usually a ``behavioral_analysis``);
  recognised by those fields, whatever the file is called. A summary's stored
  ``behavioral_analysis`` is the run's analysis (:func:`run_analysis`); drex-opt's rules
  read the metrics when none is stored or when asked to recompute;
- a ``.json`` file holding a flat object of raw ``environment/*`` keys;
- a training log: any other text whose lines hold JSON objects, possibly after a prefix such
  as a timestamp; the latest value of each key wins.

Metric files may contain ``NaN``/``Infinity`` literals (Python's ``json.dump`` writes them);
they are read as non-finite numbers, which the analysis reports as missing.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from drex_opt.errors import UserError
from drex_opt.rules import behavior
from drex_opt.rules.objectives import OBJECTIVES, SCORE

#: Named summary fields and the PufferLib log key each one comes from.
NAMED_FROM_RAW: dict[str, str] = {
    "grip_success": "environment/perfect_grip",
    "delivery_success": "environment/perfect_deliv",
    "end_to_end_success": "environment/perfect_now",
    "grip_attempts": "environment/to_pickup",
    "delivery_attempts": "environment/to_drop",
    "hover_efficiency": "environment/ho_pickup",
    "collision_rate": "environment/collision_rate",
    "oob_rate": "environment/oob",
    "mean_reward": "environment/episode_return",
    "episode_length": "environment/episode_length",
}

_EXTENDED = ("grip_attempts", "delivery_attempts", "hover_efficiency", "collision_rate", "oob_rate")
_LOSSES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance")
_SUMMARY_MARKERS = (*OBJECTIVES, "metrics_extended", "behavioral_analysis", "trainer_summary")
_TIMESTAMP_KEYS = ("timestamp", "finished_at", "started_at", "created_at")
_EXTRA_KEYS = ("mean_reward", "episode_length", "status", "error", "SPS", "agent_steps", "drone_agent_steps")
#: Summary lists the analysis reads back on a recompute: what the env did and did not log.
_LOGGING_KEYS = ("not_logged", "logged")
#: The autopilot's record of one iteration's compute, in its run folder (see run_history).
COMPUTE_FILE = "compute.json"

_DECODER = json.JSONDecoder()


@dataclass
class RunMetrics:
    """One run's rule inputs and context, whatever format they came from.

    Attributes:
        inputs: the 8 names of :data:`behavior.INPUTS`; a value is None when not found
            (other values are passed through unchecked: the analysis judges them).
        existing_analysis: the ``behavioral_analysis`` the file holds, as it is (None when
            absent or null); :func:`run_analysis` decides whether it can be used.
        source: ``drex_summary``, ``autopilot_summary``, ``log`` or ``metrics_json``.
        path: the path as given (a run folder or a file).
        run_id: the summary's ``run_id``, else the run folder's name, else the file's stem.
        timestamp: the summary's timestamp as text (epoch numbers become ISO 8601 UTC).
        extra: context found beside the inputs (``mean_reward``, ``episode_length``,
            ``status``, ``error``, ``SPS``, ``agent_steps``), only the keys present.
        file: the file actually read.
    """

    inputs: dict[str, Any]
    existing_analysis: Any
    source: str
    path: Path
    run_id: str | None
    timestamp: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None


class RunList(list):
    """The runs :func:`list_runs` could read, plus ``skipped``: ``(folder, reason)`` pairs."""

    def __init__(self, runs: Sequence[RunMetrics] = (), skipped: Sequence[tuple[Path, str]] = ()):
        super().__init__(runs)
        self.skipped: list[tuple[Path, str]] = list(skipped)


def _finite(value: Any) -> float | int | None:
    """The value as a plain Python number if it is a finite real (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        x = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def env_logged(raw: Mapping[str, Any]) -> list[str]:
    """The statistics an env reported in ``raw`` (``environment/<key>`` → ``<key>``)."""
    return sorted(k.split("/", 1)[1] for k in raw if isinstance(k, str) and k.startswith("environment/"))


def named_metrics(raw: Mapping[str, Any], status: str | None = None, error: str | None = None,
                  metric_map: Mapping[str, str] | None = None) -> dict:
    """Build the summary fields drex-opt writes from a flat dict of PufferLib log keys.

    Args:
        raw: ``environment/*``, ``losses/*``, ``SPS``, ``agent_steps`` as PuffeRL logs them.
        status: the run's status (``completed``, ``failed``, ...) and ``error`` its error:
            they explain a run none of whose rule inputs arrived (:func:`behavior.unobserved`).
        metric_map: for an env that is not built in: summary name → the env's own log key
            (without ``environment/``; None: not logged) for the names it maps; the others keep the brief's
            keys. An input whose key never arrived while other statistics did is one the env
            does not log: listed in ``not_logged`` and unknown to the analysis, not 0.

    Returns:
        ``grip_success``, ``delivery_success``, ``end_to_end_success``, ``mean_reward``,
        ``episode_length``, ``metrics_extended`` (the other rule inputs, ``SPS``,
        ``agent_steps`` and the losses) and ``behavioral_analysis`` computed from them
        (:func:`behavior.analyze_run`), so every summary carries its analysis. Absent,
        non-numeric or non-finite values are None.
    """
    keys = dict(NAMED_FROM_RAW)
    keys[SCORE] = f"environment/{SCORE}"
    keys.update({name: None if key is None else f"environment/{key}" for name, key in (metric_map or {}).items()})
    fields: dict[str, Any] = {
        name: _finite(raw.get(keys[name]))
        for name in (*OBJECTIVES, SCORE, "mean_reward", "episode_length")
    }
    extended: dict[str, Any] = {name: _finite(raw.get(keys[name])) for name in _EXTENDED}
    extended["SPS"] = _finite(raw.get("SPS"))
    extended["agent_steps"] = _finite(raw.get("agent_steps"))
    for loss in _LOSSES:
        extended[loss] = _finite(raw.get(f"losses/{loss}"))
    fields["metrics_extended"] = extended
    logged = env_logged(raw)
    not_logged = [name for name in behavior.INPUTS if keys[name] not in raw] \
        if metric_map is not None and logged else []
    if not_logged:
        fields["not_logged"] = not_logged
    if metric_map is not None:
        fields["logged"] = logged
    # Statistics that are no rule input say "an env this analysis cannot read" only of a
    # foreign env; a built-in one logs every input, so its silence means "not observed yet".
    fields["behavioral_analysis"] = behavior.analyze_run({**fields, **extended}, status, error, not_logged,
                                                         logged if metric_map is not None else ())
    return fields


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"environment": {"oob": 1}}`` → ``{"environment/oob": 1}``; flat keys stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _first_finite(candidates: Iterable[Any]) -> Any:
    return next((c for c in candidates if _finite(c) is not None), None)


def _from_raw(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rule inputs and extras from a flat dict of raw log keys (latest values)."""
    inputs = {name: raw.get(NAMED_FROM_RAW[name]) for name in behavior.INPUTS}
    extra = {
        "mean_reward": raw.get(NAMED_FROM_RAW["mean_reward"]),
        "episode_length": raw.get(NAMED_FROM_RAW["episode_length"]),
        "SPS": raw.get("SPS"),
        "agent_steps": raw.get("agent_steps"),
    }
    return inputs, {k: v for k, v in extra.items() if v is not None}


def _from_summary(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rule inputs and extras from a drex-opt or autopilot summary.

    Each value is the first finite number among: the top-level field, ``metrics_extended``,
    then the raw metric objects (``metrics``, ``trainer_summary.metrics``, the top level)
    under the named key, ``environment/<key>`` or the bare ``<key>``. When none is finite
    the top-level or ``metrics_extended`` value is kept (None if absent), so the analysis
    can report it as missing.
    """
    extended = data.get("metrics_extended")
    extended = extended if isinstance(extended, Mapping) else {}
    trainer = data.get("trainer_summary")
    # The owner's trainer metrics hold named, ``environment/*`` or bare keys depending on version.
    raw_objects = [
        obj
        for obj in (data.get("metrics"), trainer.get("metrics") if isinstance(trainer, Mapping) else None)
        if isinstance(obj, Mapping)
    ] + [data]

    def pick(name: str) -> Any:
        stated = data.get(name) if data.get(name) is not None else extended.get(name)
        raw_key = NAMED_FROM_RAW.get(name)
        candidates = [stated, extended.get(name)]
        for obj in raw_objects:
            candidates.append(obj.get(name))
            if raw_key:
                candidates += [obj.get(raw_key), obj.get(raw_key.split("/", 1)[1])]
        found = _first_finite(candidates)
        return found if found is not None else stated

    inputs = {name: pick(name) for name in behavior.INPUTS}
    extra = {key: pick(key) for key in _EXTRA_KEYS}
    for key in _LOGGING_KEYS:
        if isinstance(data.get(key), list):
            extra[key] = [str(v) for v in data[key]]
    return inputs, {k: v for k, v in extra.items() if v is not None}


def _objects_in_line(line: str) -> Iterator[dict]:
    """Every JSON object on a log line, whatever text precedes or follows it."""
    start = line.find("{")
    while start != -1:
        try:
            obj, end = _DECODER.raw_decode(line, start)
        except (ValueError, RecursionError):
            start = line.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            yield obj
        start = line.find("{", end)


def _read_log(text: str) -> dict[str, Any]:
    """Latest value of each key across the JSON objects of a log (nested objects flattened)."""
    latest: dict[str, Any] = {}
    for line in text.splitlines():
        for obj in _objects_in_line(line):
            latest.update(_flatten(obj))
    return latest


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UserError(f"not a file: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    # Logs may carry stray bytes (terminal dashboards); replacing them keeps the JSON lines.
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise UserError(f"file is empty: {path}")
    return text


def _timestamp(data: Mapping[str, Any]) -> str | None:
    for key in _TIMESTAMP_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        number = _finite(value)
        if number is not None:
            try:
                moment = datetime.fromtimestamp(number, tz=timezone.utc)
            except (OverflowError, OSError, ValueError):
                continue
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _run_file(folder: Path) -> Path:
    summary = folder / "summary.json"
    if summary.exists():
        return summary
    if (folder / "train.log").is_file():
        return folder / "train.log"
    logs = [p for p in folder.glob("*.log") if p.is_file()]
    if not logs:
        raise UserError(f"no summary.json or *.log in run folder: {folder}")
    return max(logs, key=lambda p: (p.stat().st_mtime, p.name))


def _target_file(given: Path) -> Path:
    """The file to read for ``given``: the run file of a folder, or the file itself."""
    try:
        if given.is_dir():
            return _run_file(given)
        if given.exists():
            return given
    except OSError as exc:
        raise UserError(f"cannot read {given}: {exc.strerror or exc}") from None
    raise UserError(f"run not found: {given}")


def _json_or_none(text: str, target: Path) -> Any:
    """The JSON value of ``text``; None for a log. A ``.json`` file must hold an object."""
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if target.suffix == ".json":
            raise UserError(f"not valid JSON: {target}: {str(exc).splitlines()[0]}") from None
        return None
    if data is not None and not isinstance(data, dict) and target.suffix == ".json":
        raise UserError(f"expected a JSON object at the top level, not {type(data).__name__}: {target}")
    return data


def read_run(path: str | Path) -> RunMetrics:
    """Read one run's rule inputs from a run folder, a summary, a metrics object or a log.

    Never writes anything. A stored ``behavioral_analysis`` is returned as is in
    ``existing_analysis``; :func:`run_analysis` gives the run's effective analysis.

    Raises:
        UserError: path missing or unreadable, file empty, a ``.json`` file that is
            malformed or not an object, or no rule input found at all and no usable stored
            analysis either (one-line message naming the path).
    """
    given = Path(path)
    target = _target_file(given)
    text = _read_text(target)
    data = _json_or_none(text, target)
    existing: Any = None
    stamp: str | None = None
    run_id: str | None = None
    if isinstance(data, dict) and any(key in data for key in _SUMMARY_MARKERS):
        inputs, extra = _from_summary(data)
        drex = isinstance(data.get("metrics"), Mapping) and "trainer_summary" not in data
        source = "drex_summary" if drex else "autopilot_summary"
        existing = data.get("behavioral_analysis")
        stamp = _timestamp(data)
        if isinstance(data.get("run_id"), str) and data["run_id"].strip():
            run_id = data["run_id"].strip()
    elif isinstance(data, dict) and target.suffix == ".json":
        inputs, extra = _from_raw(_flatten(data))
        source = "metrics_json"
    else:
        inputs, extra = _from_raw(_read_log(text))
        source = "log"

    # A stored analysis alone is enough to show (e.g. a run that failed before any metric);
    # so is a training that ran (steps, SPS) without a behaviour statistic: "not observed".
    ran = any(extra.get(key) is not None for key in ("agent_steps", "SPS", "status"))
    if all(value is None for value in inputs.values()) and behavior.stored_problem(existing) is not None \
            and not ran:
        keys = ", ".join(NAMED_FROM_RAW[name] for name in behavior.INPUTS[:3])
        raise UserError(f"no behaviour metrics ({keys}, ...) found in {target}")

    if run_id is None:
        in_folder = given.is_dir() or target.name in ("summary.json", "train.log")
        run_id = target.parent.resolve().name if in_folder else target.stem
    return RunMetrics(
        inputs=inputs, existing_analysis=existing, source=source, path=given,
        run_id=run_id, timestamp=stamp, extra=extra, file=target,
    )


def _sort_key(run: RunMetrics) -> tuple:
    """Timestamped runs first, by time; then the rest by folder name (never raises)."""
    moment = None
    if run.timestamp:
        text = run.timestamp[:-1] + "+00:00" if run.timestamp.endswith("Z") else run.timestamp
        try:
            moment = datetime.fromisoformat(text)  # Python 3.10 refuses a trailing Z
        except ValueError:
            moment = None
    if moment is not None and moment.tzinfo is None:
        # Naive times are the owner's UTC stamps without the Z.
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment is None, moment or datetime.min.replace(tzinfo=timezone.utc), run.path.name)


def list_runs(directory: str | Path) -> RunList:
    """Every subfolder of ``directory`` holding a ``summary.json``, oldest first.

    Oldest first means by summary timestamp; runs without a readable timestamp come after
    the timestamped ones, by folder name. A summary that cannot be read (malformed, no
    metric) is left out and listed in ``skipped`` with its reason.

    Raises:
        UserError: ``directory`` missing or not a folder.
    """
    root = Path(directory)
    if not root.exists():
        raise UserError(f"runs folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    runs: list[RunMetrics] = []
    skipped: list[tuple[Path, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (folder / "summary.json").exists():
            continue
        try:
            runs.append(read_run(folder))
        except UserError as exc:
            skipped.append((folder, str(exc)))
    return RunList(sorted(runs, key=_sort_key), skipped)


def run_analysis(run: RunMetrics, recompute: bool = False) -> behavior.EffectiveAnalysis:
    """The run's effective analysis: the stored one, unless unusable or ``recompute``.

    drex-opt's reading is :func:`behavior.analyze_run` of the run's inputs (its status and
    error explain a run without any input); see :func:`behavior.effective` for the choice.
    """
    rules = behavior.analyze_run(run.inputs, run.extra.get("status"), run.extra.get("error"),
                                 run.extra.get("not_logged", ()), run.extra.get("logged", ()))
    return behavior.effective(run.existing_analysis, rules, recompute)


def _compute_of(run: RunMetrics) -> dict | None:
    folder = run.file.parent if run.file is not None else Path(run.path)
    try:
        data = json.loads((folder / COMPUTE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_history(runs: Sequence[RunMetrics], recompute: bool = False) -> list[dict]:
    """One row per run for ``drex-opt runs``, in the given order.

    Each row: ``run_id``, ``path``, ``timestamp``, the three headline fractions (None when
    not a finite number), ``severity`` and ``next_focus`` of the effective analysis
    (:func:`run_analysis`: the stored one unless ``recompute``), ``analysis_source``
    (``stored`` or ``rules``), ``delta`` (change since the previous row in percentage
    points; None for the first row or when either side is missing) and ``disagreement``
    (lines where a stored analysis differs from the rules).
    """
    rows: list[dict] = []
    previous: dict[str, Any] | None = None
    for run in runs:
        reading = run_analysis(run, recompute)
        values = {name: _finite(run.inputs.get(name)) for name in OBJECTIVES}
        delta = {
            name: (
                round((values[name] - previous[name]) * 100, 4)
                if previous and values[name] is not None and previous[name] is not None
                else None
            )
            for name in OBJECTIVES
        }
        rows.append({
            "run_id": run.run_id,
            "path": str(run.path),
            "timestamp": run.timestamp,
            **values,
            "severity": reading.analysis["severity"],
            "next_focus": reading.analysis["next_focus"],
            "analysis_source": reading.source,
            "delta": delta,
            "disagreement": reading.disagreement,
            # How far this drone has trained in all, and what the iteration cost (autopilot).
            "drone_agent_steps": run.extra.get("drone_agent_steps"),
            "compute": _compute_of(run),
        })
        previous = values
    return rows
