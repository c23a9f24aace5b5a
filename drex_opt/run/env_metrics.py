"""What a foreign env's statistics mean: which of its log keys are grip, delivery, ...

The built-in envs log the brief's keys (``perfect_grip``, ``perfect_deliv``, ``perfect_now``,
...). Another env may log some of them, others, or none. Its *metric map* says, for each
summary name it measures (an objective of :data:`objectives.VOCABULARY` or a rule input of
:data:`behavior.INPUTS`), which of its own keys holds it. It comes from, first found:

1. the ``[drex.metrics]`` section of the env's ``.ini`` (``--env-config``), e.g.
   ``end_to_end_success = perfect_now``; a key's value ``none`` says the env does not log it;
2. :data:`KNOWN`, what PufferLib's own drone envs log;
3. otherwise the brief's keys (an env built like drone_delivery).

A study optimises the objectives its env measures (:func:`objectives_of`).
"""

from __future__ import annotations

from typing import Mapping

from drex_opt.envs import BUILTIN_ENVS, puffer
from drex_opt.errors import UserError
from drex_opt.rules import behavior
from drex_opt.rules.objectives import OBJECTIVES, SCORE, VOCABULARY, measured

SECTION = "drex.metrics"
#: PufferLib 3.0.0's drone envs: ``drone`` (reach targets) logs its score and no pick and
#: place statistic; ``drone_delivery`` logs the brief's keys (some versions lack ``perfect_now``:
#: a run shows it, and a study from that run leaves end-to-end out).
KNOWN: dict[str, dict[str, str]] = {
    "puffer_drone": {SCORE: "score"},
    "puffer_drone_delivery": {"grip_success": "perfect_grip", "delivery_success": "perfect_deliv",
                              "end_to_end_success": "perfect_now", SCORE: "score"},
}
NAMES = (*VOCABULARY, *(name for name in behavior.INPUTS if name not in VOCABULARY))


def declared(env_id: str) -> dict[str, str | None] | None:
    """The env's metric map as declared (name → its key, None: not logged); None if none is."""
    if env_id in BUILTIN_ENVS:
        return None
    src = puffer.source(env_id)
    section = src.sections.get(SECTION)
    if section is not None:
        unknown = sorted(set(section) - set(NAMES))
        if unknown:
            raise UserError(f"[{SECTION}] in {src.ini_path}: unknown name {unknown[0]!r}; "
                            f"names: {', '.join(NAMES)}")
        out: dict[str, str | None] = {}
        for name, key in section.items():
            text = str(key).strip() if key is not None else ""
            out[name] = None if text.lower() in ("", "none") else text
        return out
    return dict(KNOWN[src.name]) if src.name in KNOWN else None


def metric_map(env_id: str) -> dict[str, str | None] | None:
    """Summary name → the env's key (None: not logged) for a run's summary; None for a
    built-in env. A foreign env always gets a mapping (``{}``: the brief's keys), which tells
    the summary to treat keys that never arrive as not logged rather than 0."""
    if env_id in BUILTIN_ENVS:
        return None
    return declared(env_id) or {}


def objectives_of(env_id: str, run_summary: Mapping | None = None) -> tuple[tuple[str, ...], str | None]:
    """(the objectives a study of ``env_id`` optimises, why they are not all three, or None).

    A built-in env: all three. Otherwise those the env is declared to log (all three when
    nothing is declared), minus those a run of it (``run_summary``) shows it does not log;
    when none of the three is left, the env's score, if declared or seen in the run.
    UserError when nothing measurable is left, or when nothing is declared and no run shows it.
    """
    if env_id in BUILTIN_ENVS:
        return OBJECTIVES, None
    name = puffer.split_env_id(env_id)[0]
    mapping = declared(env_id)
    if mapping is None and run_summary is None:
        # Guessing would fail every trial of an env that lacks a key: ask for evidence instead.
        raise UserError(f"drex-opt cannot tell which of grip, delivery and end-to-end success {name} logs: study "
                        f"it from a run of it (--from-run RUN, or --warm-start RUN/model.pt; drex-opt train --env "
                        f"{name} makes one), or map its keys in a [{SECTION}] section of --env-config")
    if mapping is None:
        candidates, source = list(OBJECTIVES), "the brief's keys"
    else:
        candidates, source = [n for n in VOCABULARY if mapping.get(n)], "its metric map"
    run = run_summary or {}
    not_logged = set(run.get("not_logged") or [])
    candidates = [n for n in candidates if n not in not_logged]
    task = [n for n in candidates if n in OBJECTIVES]
    if task:
        chosen = measured(task)
    elif SCORE in candidates or SCORE in (run.get("logged") or []):
        chosen = (SCORE,)
    else:
        raise UserError(f"{name} logs none of grip, delivery, end-to-end success or a score that drex-opt can "
                        f"optimise; map its keys in a [{SECTION}] section of --env-config")
    if chosen == OBJECTIVES:
        return chosen, None
    left_out = [n for n in OBJECTIVES if n not in chosen]
    evidence = "its run shows it" if not_logged & set(left_out) else source
    return chosen, (f"{name} does not log {', '.join(left_out)} ({evidence}); the study optimises "
                    f"{', '.join(chosen)}")
