"""Shared helpers of the benchmarks: result files, best-so-far curves, table formatting.

Pure Python (no torch, no training) so the tests can import it cheaply.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Iterable, Sequence

from drex_opt.jsonio import finite

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NOT_REACHED = math.inf

Curve = list[tuple[float, float]]  # (cumulative agent steps, best value so far), steps increasing



def load() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages, recorded beside wall-time numbers."""
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(max_load: float, max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until the 1-minute load average is below ``max_load``:
    on a shared machine another job's burst would land on one variant only. Returns the wait."""
    t = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - t < max_wait_s:
        time.sleep(5)
    return time.time() - t

def result_name(name: str, quick: bool) -> str:
    """``<name>_quick`` for quick mode so a smoke run never overwrites committed full results."""
    return f"{name}_quick" if quick else name


def write_results(name: str, payload: dict, markdown: str, out: Path = RESULTS) -> list[Path]:
    """Write ``<name>.json`` and ``<name>.md``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(finite(payload), indent=2, default=_jsonable) + "\n", encoding="utf-8")
    paths[1].write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return paths


def _jsonable(value: object) -> object:
    return str(value) if isinstance(value, Path) else repr(value)


def env_steps_per_s(env, actions: Sequence, steps: int, warmup: int = 50, rounds: int = 3) -> float:
    """Agent-steps/s of ``env`` (reset already) stepping ``actions`` in turn, after ``warmup``
    steps; best of ``rounds``: the machine's other load only slows a run down."""
    for i in range(warmup):
        env.step(actions[i % len(actions)])
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(steps):
            env.step(actions[i % len(actions)])
        best = max(best, steps * env.num_agents / (time.perf_counter() - t))
    return best


# ---------------------------------------------------------------- curves
def best_so_far(trials: Iterable[dict], key: str, cost: str = "agent_steps") -> Curve:
    """Best ``key`` found after each trial against the ``cost`` (agent steps) spent so far.

    Every trial spends its ``cost`` (pruned and failed ones too); only trials with a
    finite value for ``key`` (completed ones) can raise the best.
    """
    spent, best, curve = 0.0, 0.0, [(0.0, 0.0)]
    for t in trials:
        spent += float(t.get(cost) or 0)
        value = t.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            best = max(best, float(value))
        curve.append((spent, best))
    return curve


def value_at(curve: Curve, steps: float) -> float:
    """The best-so-far value once ``steps`` agent steps have been spent."""
    value = 0.0
    for x, y in curve:
        if x > steps:
            break
        value = y
    return value


def steps_to(curve: Curve, target: float) -> float:
    """Agent steps spent when the best first reached ``target``; :data:`NOT_REACHED` if never."""
    for x, y in curve:
        if y >= target - 1e-12:
            return x
    return NOT_REACHED


def steps_to_level(points: Sequence[Sequence], level: float) -> float:
    """Agent steps at which a drone's timeline ``[[steps, e2e or None], ...]`` first reached
    ``level`` (unmeasured points skipped); :data:`NOT_REACHED` if never."""
    return steps_to([(x, y) for x, y in points if y is not None], level)


def band(curves: Sequence[Curve], grid: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """Median, minimum and maximum across ``curves`` at each point of ``grid``."""
    med, low, high = [], [], []
    for x in grid:
        values = [value_at(c, x) for c in curves]
        med.append(statistics.median(values))
        low.append(min(values))
        high.append(max(values))
    return med, low, high


def median_steps(values: Sequence[float]) -> float:
    """Median of steps-to-target where a seed that never reached counts as infinitely late."""
    return statistics.median(sorted(values)) if values else NOT_REACHED


# ---------------------------------------------------------------- formatting
def pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def steps_text(value: float | None) -> str:
    """Agent steps in millions (``1.20M``), or ``not reached``."""
    if value is None or not math.isfinite(value):
        return "not reached"
    return f"{value / 1e6:.2f}M"


def spread_text(values: Sequence[float], fmt=pct) -> str:
    """``median [min–max]`` (just the value for a single seed)."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}–{fmt(max(values))}]"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None) -> str:
    """A GitHub markdown table; ``right`` marks right-aligned (numeric) columns."""
    right = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
