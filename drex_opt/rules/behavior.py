"""The behavioural analysis of ``behavior-rules.md``: what the drone does wrong, what to fix next.

Pure functions, no I/O. The thresholds are part of the contract with existing run folders
(the owner's training loop writes the same analysis), so they are constants, not options.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drex_opt.rules.objectives import pct

#: The rule inputs, all fractions expected in [0, 1].
INPUTS = (
    "grip_success",
    "delivery_success",
    "end_to_end_success",
    "grip_attempts",
    "delivery_attempts",
    "hover_efficiency",
    "collision_rate",
    "oob_rate",
)

#: Every ``severity`` value of a diagnosis, worst first.
SEVERITIES = ("critical", "warning", "ok")

# A run whose drone was never observed (none of the inputs arrived) gets no diagnosis: it
# says why instead. These values stay out of SEVERITIES and FOCI, so no search space,
# budget rule or study can take them for a behaviour of the drone.
FAILED = "failed"  #: severity: the run did not complete before its first report
NOT_OBSERVED = "not_observed"  #: severity: the run completed but no statistic arrived
FIX_RUN = "fix_run"  #: next_focus of a FAILED run: make the run work first
TRAIN_LONGER = "train_longer"  #: next_focus of a NOT_OBSERVED run: a budget long enough to report
#: next_focus of a run whose env reported statistics, none of them a rule input (an env that
#: is not a pick-and-place task, such as PufferLib's ``drone``): name a focus to study it.
NAME_A_FOCUS = "name_a_focus"
#: Every ``severity`` of an analysis that does not diagnose the drone.
UNOBSERVED_SEVERITIES = (FAILED, NOT_OBSERVED)
#: Every ``next_focus`` of an analysis that does not diagnose the drone (no search space).
UNOBSERVED_FOCI = (FIX_RUN, TRAIN_LONGER, NAME_A_FOCUS)

#: Where the analysis of a run came from: the ``behavioral_analysis`` its summary holds, or
#: drex-opt's rules applied to its metrics.
STORED, RULES = "stored", "rules"

# Rows 1-8 of the rules table: (focus, condition, sentence). The severity conditions are
# rows 6 (critical), 7 and 3 (warning), so they share those rows' sentences.
_RULES = (
    (
        "optimize_performance",
        lambda m: m["grip_success"] > 0.5 and m["delivery_success"] > 0.3,
        "Grips and delivers reliably (grip {grip_success}, delivery {delivery_success}) "
        "— basics work, ready to optimise performance",
    ),
    (
        "fix_grip_activation",
        lambda m: m["hover_efficiency"] > 0.5 and m["grip_success"] < 0.2,
        "Hovers above the box ({hover_efficiency}) but rarely grips ({grip_success}) "
        "— grip activation issue",
    ),
    (
        "fix_stability",
        lambda m: m["collision_rate"] > 0.5,
        "High drone-drone collision rate ({collision_rate}) — stability/control problem",
    ),
    (
        "improve_carrying",
        lambda m: m["grip_success"] > 0.3 and m["delivery_success"] < 0.1,
        "Can grip but cannot deliver — carrying/navigation issue "
        "(grip {grip_success}, delivery {delivery_success})",
    ),
    (
        "improve_coordination",
        lambda m: m["delivery_success"] > 0.3 and m["end_to_end_success"] < 0.1,
        "Delivers ({delivery_success}) but rarely grips and delivers in the same episode "
        "({end_to_end_success}) — coordination issue",
    ),
    (
        "diagnostic_grip",
        lambda m: m["grip_attempts"] < 0.001,
        "Drone not attempting to grip objects at all (grip attempts {grip_attempts})",
    ),
    (
        "improve_grip",
        lambda m: m["grip_success"] < 0.1,
        "Grip mechanism failing (grip success {grip_success}, below 10%)",
    ),
    (
        "tune_grip",
        lambda m: m["grip_success"] < 0.3,
        "Low grip success rate ({grip_success}, below 30%)",
    ),
)

#: Every ``next_focus`` value, in the order of the rules table (first match wins; row 9,
#: ``continue``, when none does).
FOCI = (*(focus for focus, _, _ in _RULES), "continue")


def _show(value: Any) -> str:
    """A short rendering of a raw input value, safe for huge ints and odd types."""
    try:
        text = f"{value:.6g}"
    except (TypeError, ValueError, OverflowError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read(value: Any) -> tuple[float | None, bool]:
    """Return ``(fraction clipped to [0, 1] or None when unusable, was_out_of_range)``.

    Unusable: None, NaN, ±inf, booleans and anything that is not a real number (strings
    included, even numeric ones: the files hold numbers, a string means something broke).
    Ints too large for a float are still finite numbers, so they are clipped, not missing.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None, False
    try:
        x = float(value)
    except OverflowError:
        return (1.0 if value > 0 else 0.0), True
    except (TypeError, ValueError):
        return None, False
    if not math.isfinite(x):
        return None, False
    if x < 0.0 or x > 1.0:
        return min(max(x, 0.0), 1.0), True
    return x, False


def _rule_inputs(inputs: Mapping[str, Any], not_logged=()) -> tuple[dict[str, float], list[str], list[str]]:
    """(each input as a fraction for the rules, the missing ones, out-of-range insights).

    A missing input counts as 0, as the contract says, unless the env does not log it at
    all (``not_logged``): then it is unknown, NaN here, and every comparison with it is false.
    """
    source = inputs if isinstance(inputs, Mapping) else {}
    values: dict[str, float] = {}
    missing: list[str] = []
    out_of_range: list[str] = []
    for name in INPUTS:
        raw = source.get(name)
        x, clipped = _read(raw)
        if x is None:
            missing.append(name)
            x = math.nan if name in not_logged else 0.0
        elif clipped:
            out_of_range.append(
                f"{name} = {_show(raw)} is outside [0, 1]; clipped to {x:g} for the rules"
            )
        values[name] = x
    return values, missing, out_of_range


def _severity(values: Mapping[str, float]) -> str:
    if values["grip_attempts"] < 0.001:
        severity = "critical"
    elif values["grip_success"] < 0.1 or values["collision_rate"] > 0.5:
        severity = "warning"
    else:
        severity = "ok"
    return severity


def _grip_efficiency(values: Mapping[str, float]) -> float:
    grip_efficiency = 0.0
    if values["grip_attempts"] > 0:
        grip_efficiency = values["grip_success"] / values["grip_attempts"]
        # A subnormal denominator overflows to inf, which strict JSON cannot hold.
        if not math.isfinite(grip_efficiency):
            grip_efficiency = sys.float_info.max
    return grip_efficiency


def analyze(inputs: Mapping[str, Any], not_logged=()) -> dict:
    """Compute the ``behavioral_analysis`` object of the contract from the 8 rule inputs.

    Args:
        inputs: values keyed by the names in :data:`INPUTS`; other keys are ignored. A
            non-mapping counts as all inputs missing.
        not_logged: inputs the env does not log at all (an env with other statistics, such
            as a drone_delivery version without ``perfect_now``). Each is *unknown*, not 0:
            a row or severity condition that compares it does not hold, so no rule fires on
            a number nobody measured; the rows that need only logged inputs keep the
            contract's outcomes. Listed in ``not_logged`` and an insight. Empty (the
            default): the contract exactly, every missing input counts as 0.

    Returns:
        ``insights``, ``severity``, ``next_focus``, ``grip_efficiency``,
        ``metrics_summary`` and ``missing_metrics``, JSON-ready (all floats finite).

    Edge cases: a missing, None, NaN, infinite, boolean or non-numeric input counts as 0
    and is listed in ``missing_metrics``; a value outside [0, 1] gets an insight and is
    clipped before the rules; comparisons are strict, so a value exactly at a threshold
    does not trigger its rule. Never raises.
    """
    unknown = [name for name in INPUTS if name in set(not_logged)]
    values, missing, out_of_range = _rule_inputs(inputs, unknown)
    unknown = [name for name in unknown if name in missing]
    shown = {name: pct(x, "unknown") for name, x in values.items()}
    insights = [sentence.format(**shown) for _, holds, sentence in _RULES if holds(values)]
    next_focus = next((focus for focus, holds, _ in _RULES if holds(values)), "continue")
    severity = _severity(values)

    # Out of bounds informs the reader but, per the contract, never changes next_focus.
    if values["oob_rate"] > 0.5:
        insights.append(f"High out-of-bounds rate: {shown['oob_rate']} of episodes end out of bounds")
    insights.extend(out_of_range)
    counted = [name for name in missing if name not in unknown]
    if counted:
        insights.append(f"Missing metrics (counted as 0 for the rules): {', '.join(counted)}")
    if unknown:
        insights.append(f"Not logged by this env (unknown; rules that compare them do not fire): {', '.join(unknown)}")

    out = {
        "insights": insights,
        "severity": severity,
        "next_focus": next_focus,
        "grip_efficiency": _grip_efficiency(values),
        "metrics_summary": {
            "grip_success": shown["grip_success"],
            "delivery_success": shown["delivery_success"],
            "end_to_end": shown["end_to_end_success"],
            "collision_rate": shown["collision_rate"],
        },
        "missing_metrics": missing,
    }
    if unknown:
        out["not_logged"] = unknown
        out["metrics_summary"] = {k: ("n/a" if v == "unknown" else v) for k, v in out["metrics_summary"].items()}
    return out


def disagreement(existing: Mapping[str, Any] | None, ours: Mapping[str, Any]) -> list[str]:
    """Human lines for each of ``severity`` / ``next_focus`` where ``existing`` differs from ``ours``.

    Returns an empty list when they agree or when there is no existing analysis (None or
    not a mapping). A key absent from ``existing`` counts as a difference.
    """
    if not isinstance(existing, Mapping):
        return []
    lines = []
    for key in ("severity", "next_focus"):
        theirs, mine = existing.get(key), ours.get(key)
        if theirs != mine:
            stated = repr(theirs) if theirs is not None else "nothing"
            lines.append(f"{key}: the stored analysis says {stated}, the rules give {mine!r}")
    return lines


def observed(inputs: Mapping[str, Any]) -> bool:
    """Whether at least one of the :data:`INPUTS` holds a usable number (see :func:`analyze`)."""
    source = inputs if isinstance(inputs, Mapping) else {}
    return any(_read(source.get(name))[0] is not None for name in INPUTS)


def unobserved(status: Any = None, error: Any = None, logged: Any = ()) -> dict:
    """The analysis of a run whose drone was never observed: it says why, it diagnoses nothing.

    Shaped like :func:`analyze`'s result, with ``grip_efficiency`` 0, every input in
    ``missing_metrics`` and ``"n/a"`` in ``metrics_summary`` (nothing was measured, not 0%).

    Args:
        status: the run's status. Anything other than ``"completed"`` or None (``failed``,
            ``timeout``, ``stopped``, ...) means the run ended before its first report:
            severity :data:`FAILED`, next_focus :data:`FIX_RUN`. Otherwise the run went on
            but no statistic arrived: severity :data:`NOT_OBSERVED`, next_focus
            :data:`TRAIN_LONGER`; but when the env did report statistics (``logged``, their
            names), none of them a rule input, it is an env this analysis cannot read:
            next_focus :data:`NAME_A_FOCUS`.
        error: the run's error, quoted (first line) in the insight of a failed run.
    """
    if status is not None and status != "completed":
        reason = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else "no error recorded"
        severity, next_focus = FAILED, FIX_RUN
        insight = (f"Run failed before its first report ({status}: {reason}) — nothing is known about the "
                   "drone; fix the run, then train again")
    elif logged:
        names = sorted(str(k) for k in logged)
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        severity, next_focus = NOT_OBSERVED, NAME_A_FOCUS
        insight = (f"The env reported statistics ({shown}) but none of the behaviour inputs (grip, delivery, ...) "
                   "— no diagnosis; name a focus to study it (its objectives are what it logs)")
    else:
        severity, next_focus = NOT_OBSERVED, TRAIN_LONGER
        insight = ("No behaviour statistic arrived during the run (the budget may be shorter than the "
                   "environment's report interval) — the drone was not observed; train longer")
    return {
        "insights": [insight],
        "severity": severity,
        "next_focus": next_focus,
        "grip_efficiency": 0.0,
        "metrics_summary": {key: "n/a" for key in ("grip_success", "delivery_success", "end_to_end", "collision_rate")},
        "missing_metrics": list(INPUTS),
    }


def analyze_run(inputs: Mapping[str, Any], status: Any = None, error: Any = None, not_logged=(),
                logged=()) -> dict:
    """drex-opt's reading of a run: :func:`analyze` when any input was observed, else
    :func:`unobserved` (``status``, ``error`` and the statistics ``logged`` only matter then).

    Partly missing inputs still count as 0, as the contract says, unless the env does not
    log them (``not_logged``, see :func:`analyze`); a run with no input at all is left
    undiagnosed.
    """
    return analyze(inputs, not_logged) if observed(inputs) else unobserved(status, error, logged)


def stored_problem(stored: Any) -> str | None:
    """Why a stored ``behavioral_analysis`` cannot be used; None when it can.

    Usable: an object whose ``severity`` and ``next_focus`` are non-empty strings (other
    keys are shown as they are, never required). None (no stored analysis) is a problem too.
    """
    if stored is None:
        return "the summary holds no behavioral_analysis"
    if not isinstance(stored, Mapping):
        return f"the stored behavioral_analysis is a {type(stored).__name__}, not an object"
    for key in ("severity", "next_focus"):
        value = stored.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"the stored behavioral_analysis has no {key} text (found {_show(value)})"
    return None


def insights_of(analysis: Mapping[str, Any] | None) -> list[str]:
    """An analysis's insights as a list of strings, whatever a stored one holds there."""
    insights = analysis.get("insights") if isinstance(analysis, Mapping) else None
    if isinstance(insights, str):
        return [insights]
    if isinstance(insights, (list, tuple)):
        return [str(line) for line in insights]
    return []


@dataclass(frozen=True)
class EffectiveAnalysis:
    """The analysis that decides (``analysis``), where it came from, and the other reading.

    Attributes:
        analysis: the stored analysis as it is, or the rules' one.
        source: :data:`STORED` or :data:`RULES`.
        rules: drex-opt's reading of the run (always computed).
        stored: the stored analysis when usable, else None.
        disagreement: lines where ``stored`` and ``rules`` differ in severity or
            next_focus; empty when they agree or nothing usable is stored.
        note: why a stored analysis that is present was not used (malformed); else None.
    """

    analysis: dict
    source: str
    rules: dict
    stored: dict | None = None
    disagreement: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def other(self) -> dict | None:
        """The reading not used, when it differs from the one used; else None."""
        if not self.disagreement:
            return None
        return self.rules if self.source == STORED else self.stored

    def to_dict(self) -> dict:
        """The analysis plus ``analysis_source``; when the readings differ, the other one
        (``rules_analysis`` or ``stored_analysis``) and ``disagreement``; ``analysis_note``
        when a stored analysis was unusable."""
        out = {**self.analysis, "analysis_source": self.source}
        if self.note:
            out["analysis_note"] = self.note
        if self.disagreement:
            out["rules_analysis" if self.source == STORED else "stored_analysis"] = self.other
            out["disagreement"] = list(self.disagreement)
        return out


def effective(stored: Any, rules: Mapping[str, Any], recompute: bool = False) -> EffectiveAnalysis:
    """Choose the analysis of a run: the one its summary stores, unless unusable or ``recompute``.

    The owner's pipeline writes the analysis into each summary; that stored analysis is the
    truth about the run. drex-opt's rules (``rules``, from :func:`analyze_run`) decide only
    when nothing usable is stored (see :func:`stored_problem`) or when ``recompute`` asks
    for them. Never raises.
    """
    rules = dict(rules)
    if stored is None:
        return EffectiveAnalysis(analysis=rules, source=RULES, rules=rules)
    problem = stored_problem(stored)
    if problem is not None:
        return EffectiveAnalysis(analysis=rules, source=RULES, rules=rules,
                                 note=f"{problem}; drex-opt's rules are used instead")
    stored = dict(stored)
    lines = disagreement(stored, rules)
    if recompute:
        return EffectiveAnalysis(analysis=rules, source=RULES, rules=rules, stored=stored, disagreement=lines)
    return EffectiveAnalysis(analysis=stored, source=STORED, rules=rules, stored=stored, disagreement=lines)
