"""The rules of behavior-rules.md: every row, every boundary, bad inputs, and a property test."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drex_opt.rules import behavior
from drex_opt.rules.behavior import FOCI, INPUTS, SEVERITIES, analyze, disagreement

# A run on which no rule fires: focus "continue", severity "ok", no insight.
NEUTRAL = {
    "grip_success": 0.4,
    "delivery_success": 0.2,
    "end_to_end_success": 0.2,
    "grip_attempts": 0.5,
    "delivery_attempts": 0.5,
    "hover_efficiency": 0.1,
    "collision_rate": 0.1,
    "oob_rate": 0.1,
}

# A phrase that identifies each row's insight sentence.
ROW_PHRASE = {
    1: "basics work",
    2: "grip activation issue",
    3: "collision rate",
    4: "Can grip but cannot deliver",
    5: "coordination issue",
    6: "not attempting to grip objects at all",
    7: "Grip mechanism failing",
    8: "Low grip success rate",
}


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def run(**changes) -> dict:
    return analyze({**NEUTRAL, **changes})


def rows_fired(result: dict) -> list[int]:
    """The rule rows whose sentence appears, in the order the insights list them."""
    fired = []
    for line in result["insights"]:
        fired += [row for row, phrase in ROW_PHRASE.items() if phrase in line]
    return fired


def test_neutral_run_fires_nothing():
    result = analyze(NEUTRAL)
    assert result == {
        "insights": [],
        "severity": "ok",
        "next_focus": "continue",
        "grip_efficiency": pytest.approx(0.8),
        "metrics_summary": {
            "grip_success": "40.0%",
            "delivery_success": "20.0%",
            "end_to_end": "20.0%",
            "collision_rate": "10.0%",
        },
        "missing_metrics": [],
    }


def test_exports():
    assert FOCI == (
        "optimize_performance", "fix_grip_activation", "fix_stability", "improve_carrying",
        "improve_coordination", "diagnostic_grip", "improve_grip", "tune_grip", "continue",
    )
    assert SEVERITIES == ("critical", "warning", "ok")
    assert len(INPUTS) == 8 and len(set(INPUTS)) == 8


# Each case: the changes to NEUTRAL exactly at a threshold (the rule must not fire: the
# comparisons are strict) and the focus expected then, then the same changes moved just
# past the threshold and the row's focus.
BOUNDARIES = [
    # row 1: grip_success > 0.5 and delivery_success > 0.3
    ({"grip_success": 0.5, "delivery_success": 0.4}, "continue",
     {"grip_success": above(0.5), "delivery_success": 0.4}, "optimize_performance"),
    ({"grip_success": 0.6, "delivery_success": 0.3}, "continue",
     {"grip_success": 0.6, "delivery_success": above(0.3)}, "optimize_performance"),
    # row 2: hover_efficiency > 0.5 and grip_success < 0.2
    ({"hover_efficiency": 0.5, "grip_success": 0.15}, "tune_grip",
     {"hover_efficiency": above(0.5), "grip_success": 0.15}, "fix_grip_activation"),
    ({"hover_efficiency": 0.6, "grip_success": 0.2}, "tune_grip",
     {"hover_efficiency": 0.6, "grip_success": below(0.2)}, "fix_grip_activation"),
    # row 3: collision_rate > 0.5
    ({"collision_rate": 0.5}, "continue", {"collision_rate": above(0.5)}, "fix_stability"),
    # row 4: grip_success > 0.3 and delivery_success < 0.1
    ({"grip_success": 0.3, "delivery_success": 0.05}, "continue",
     {"grip_success": above(0.3), "delivery_success": 0.05}, "improve_carrying"),
    ({"grip_success": 0.4, "delivery_success": 0.1}, "continue",
     {"grip_success": 0.4, "delivery_success": below(0.1)}, "improve_carrying"),
    # row 5: delivery_success > 0.3 and end_to_end_success < 0.1
    ({"delivery_success": 0.3, "end_to_end_success": 0.05}, "continue",
     {"delivery_success": above(0.3), "end_to_end_success": 0.05}, "improve_coordination"),
    ({"delivery_success": 0.4, "end_to_end_success": 0.1}, "continue",
     {"delivery_success": 0.4, "end_to_end_success": below(0.1)}, "improve_coordination"),
    # row 6: grip_attempts < 0.001
    ({"grip_attempts": 0.001}, "continue", {"grip_attempts": below(0.001)}, "diagnostic_grip"),
    # row 7: grip_success < 0.1 (at 0.1, row 8 still holds)
    ({"grip_success": 0.1}, "tune_grip", {"grip_success": below(0.1)}, "improve_grip"),
    # row 8: grip_success < 0.3
    ({"grip_success": 0.3}, "continue", {"grip_success": below(0.3)}, "tune_grip"),
]


@pytest.mark.parametrize("at, focus_at, beyond, focus_beyond", BOUNDARIES)
def test_rule_boundaries_are_strict(at, focus_at, beyond, focus_beyond):
    assert run(**at)["next_focus"] == focus_at
    assert run(**beyond)["next_focus"] == focus_beyond


@pytest.mark.parametrize(
    "changes, focus, row",
    [
        ({"grip_success": 0.9, "delivery_success": 0.9, "end_to_end_success": 0.9}, "optimize_performance", 1),
        ({"hover_efficiency": 0.9, "grip_success": 0.15}, "fix_grip_activation", 2),
        ({"collision_rate": 0.9}, "fix_stability", 3),
        ({"grip_success": 0.45, "delivery_success": 0.0}, "improve_carrying", 4),
        ({"delivery_success": 0.45, "end_to_end_success": 0.0}, "improve_coordination", 5),
        ({"grip_attempts": 0.0}, "diagnostic_grip", 6),
        ({"grip_success": 0.05}, "improve_grip", 7),
        ({"grip_success": 0.25}, "tune_grip", 8),
    ],
)
def test_each_row_sets_focus_and_insight(changes, focus, row):
    result = run(**changes)
    assert result["next_focus"] == focus
    assert row in rows_fired(result)


def test_contract_sentences():
    assert "Drone not attempting to grip objects at all" in run(grip_attempts=0.0)["insights"][0]
    assert run(grip_success=0.45, delivery_success=0.0)["insights"][0].startswith(
        "Can grip but cannot deliver — carrying/navigation issue"
    )


def test_several_rows_first_wins_and_every_insight_in_table_order():
    result = run(grip_success=0.05, hover_efficiency=0.8, collision_rate=0.7, grip_attempts=0.0)
    assert result["next_focus"] == "fix_grip_activation"
    assert rows_fired(result) == [2, 3, 6, 7, 8]
    assert result["severity"] == "critical"


def test_optimize_performance_wins_over_stability():
    result = run(grip_success=0.6, delivery_success=0.4, hover_efficiency=0.9, collision_rate=0.9)
    assert result["next_focus"] == "optimize_performance"
    assert rows_fired(result) == [1, 3]
    assert result["severity"] == "warning"


def test_grip_rows_accumulate():
    assert rows_fired(run(grip_success=0.05)) == [7, 8]
    assert rows_fired(run(grip_success=0.25)) == [8]


class TestSeverity:
    def test_critical_boundary(self):
        assert run(grip_attempts=0.001)["severity"] == "ok"
        assert run(grip_attempts=below(0.001))["severity"] == "critical"

    def test_warning_on_low_grip_boundary(self):
        assert run(grip_success=0.1)["severity"] == "ok"
        assert run(grip_success=below(0.1))["severity"] == "warning"

    def test_warning_on_collisions_boundary(self):
        assert run(collision_rate=0.5)["severity"] == "ok"
        assert run(collision_rate=above(0.5))["severity"] == "warning"

    def test_critical_beats_warning(self):
        assert run(grip_attempts=0.0, grip_success=0.0, collision_rate=0.9)["severity"] == "critical"


class TestOutOfBounds:
    def test_high_oob_is_an_insight_only(self):
        result = run(oob_rate=above(0.5))
        assert result["next_focus"] == "continue" and result["severity"] == "ok"
        assert len(result["insights"]) == 1 and "out-of-bounds" in result["insights"][0]

    def test_boundary(self):
        assert run(oob_rate=0.5)["insights"] == []

    def test_comes_after_rule_insights(self):
        result = run(oob_rate=0.9, collision_rate=0.9)
        assert "collision" in result["insights"][0] and "out-of-bounds" in result["insights"][1]


class TestMissing:
    def test_empty_dict_everything_missing(self):
        result = analyze({})
        assert result["missing_metrics"] == list(INPUTS)
        assert result["severity"] == "critical"
        assert result["next_focus"] == "diagnostic_grip"
        assert result["grip_efficiency"] == 0.0
        assert set(result["metrics_summary"].values()) == {"0.0%"}
        missing_lines = [line for line in result["insights"] if line.startswith("Missing metrics")]
        assert len(missing_lines) == 1 and all(name in missing_lines[0] for name in INPUTS)
        assert result["insights"][-1] is missing_lines[0]

    @pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf, "0.5", "", True, False, [0.5], {"v": 1}])
    def test_unusable_value_counts_as_zero_and_is_listed(self, bad):
        result = run(collision_rate=0.9, grip_success=bad)
        assert result["missing_metrics"] == ["grip_success"]
        assert result["metrics_summary"]["grip_success"] == "0.0%"
        # grip_success = 0 → rows 7 and 8 fire beside row 3.
        assert rows_fired(result) == [3, 7, 8]

    def test_missing_grip_attempts_is_critical(self):
        inputs = dict(NEUTRAL)
        del inputs["grip_attempts"]
        result = analyze(inputs)
        assert result["missing_metrics"] == ["grip_attempts"]
        assert (result["severity"], result["next_focus"]) == ("critical", "diagnostic_grip")

    def test_ints_and_numpy_numbers_are_numbers(self):
        import numpy as np

        result = analyze({**NEUTRAL, "grip_attempts": 1, "collision_rate": np.float32(0.75), "oob_rate": np.int64(0)})
        assert result["missing_metrics"] == []
        assert result["next_focus"] == "fix_stability"
        assert result["metrics_summary"]["collision_rate"] == "75.0%"

    @pytest.mark.parametrize("not_a_mapping", [None, [], "grip_success", 3])
    def test_non_mapping_is_all_missing(self, not_a_mapping):
        assert analyze(not_a_mapping)["missing_metrics"] == list(INPUTS)

    def test_other_keys_are_ignored(self):
        assert analyze({**NEUTRAL, "mean_reward": -5, "junk": object()}) == analyze(NEUTRAL)


class TestOutOfRange:
    def test_above_one_is_reported_then_clipped(self):
        result = run(grip_success=1.5, delivery_success=0.4)
        assert result["missing_metrics"] == []
        assert result["metrics_summary"]["grip_success"] == "100.0%"
        assert result["next_focus"] == "optimize_performance"
        lines = [line for line in result["insights"] if "outside [0, 1]" in line]
        assert lines == ["grip_success = 1.5 is outside [0, 1]; clipped to 1 for the rules"]

    def test_negative_is_reported_then_clipped_to_zero(self):
        result = run(grip_attempts=-0.2)
        assert result["next_focus"] == "diagnostic_grip"
        assert any("grip_attempts = -0.2 is outside [0, 1]; clipped to 0" in line for line in result["insights"])

    def test_one_line_per_value_out_of_range(self):
        result = run(collision_rate=7, oob_rate=-1, hover_efficiency=10**400)
        assert sum("outside [0, 1]" in line for line in result["insights"]) == 3
        assert result["metrics_summary"]["collision_rate"] == "100.0%"

    def test_exact_bounds_are_in_range(self):
        assert not any("outside" in line for line in run(grip_success=1.0, oob_rate=0.0)["insights"])


class TestGripEfficiency:
    def test_ratio(self):
        assert run(grip_success=0.3, grip_attempts=0.6)["grip_efficiency"] == pytest.approx(0.5)

    def test_zero_or_missing_attempts(self):
        assert run(grip_attempts=0.0)["grip_efficiency"] == 0.0
        assert run(grip_attempts=None)["grip_efficiency"] == 0.0

    def test_tiny_attempts_stay_finite(self):
        value = run(grip_success=1.0, grip_attempts=5e-324)["grip_efficiency"]
        assert math.isfinite(value) and value > 1e300

    def test_is_a_float(self):
        assert isinstance(run(grip_attempts=0.0)["grip_efficiency"], float)


@pytest.mark.parametrize(
    "value, text",
    [(0.375, "37.5%"), (0.0, "0.0%"), (1.0, "100.0%"), (0.12345, "12.3%"), (0.9999, "100.0%"), (1 / 3, "33.3%")],
)
def test_metrics_summary_format(value, text):
    result = analyze({name: value for name in INPUTS})
    assert result["metrics_summary"] == {
        "grip_success": text, "delivery_success": text, "end_to_end": text, "collision_rate": text,
    }


class TestDisagreement:
    def test_agreeing(self):
        ours = analyze(NEUTRAL)
        assert disagreement({"severity": "ok", "next_focus": "continue", "insights": ["x"]}, ours) == []

    def test_severity_differs(self):
        lines = disagreement({"severity": "warning", "next_focus": "continue"}, analyze(NEUTRAL))
        assert len(lines) == 1 and "severity" in lines[0] and "'warning'" in lines[0] and "'ok'" in lines[0]

    def test_both_differ(self):
        lines = disagreement({"severity": "critical", "next_focus": "diagnostic_grip"}, analyze(NEUTRAL))
        assert [line.split(":")[0] for line in lines] == ["severity", "next_focus"]

    def test_absent_keys_count_as_different(self):
        assert len(disagreement({}, analyze(NEUTRAL))) == 2

    @pytest.mark.parametrize("existing", [None, "ok", ["severity"]])
    def test_no_existing_analysis(self, existing):
        assert disagreement(existing, analyze(NEUTRAL)) == []


class TestUnobserved:
    """A run none of whose inputs arrived is not diagnosed; partly missing inputs still are."""

    SHAPE = {"insights", "severity", "next_focus", "grip_efficiency", "metrics_summary", "missing_metrics"}

    @pytest.mark.parametrize("status", ["failed", "timeout", "stopped"])
    def test_a_run_that_did_not_complete(self, status):
        result = behavior.unobserved(status, "RuntimeError: bad device\nmore detail")
        assert set(result) == self.SHAPE
        assert (result["severity"], result["next_focus"]) == ("failed", "fix_run")
        [line] = result["insights"]
        assert "failed before its first report" in line and "RuntimeError: bad device" in line
        assert "more detail" not in line and status in line and "nothing is known about the drone" in line
        assert result["grip_efficiency"] == 0.0 and result["missing_metrics"] == list(INPUTS)
        assert list(result["metrics_summary"]) == ["grip_success", "delivery_success", "end_to_end", "collision_rate"]
        json.dumps(result, allow_nan=False)

    def test_failed_without_an_error(self):
        assert "no error recorded" in behavior.unobserved("failed", None)["insights"][0]

    @pytest.mark.parametrize("status", ["completed", None])
    def test_a_run_that_completed_without_statistics(self, status):
        result = behavior.unobserved(status)
        assert (result["severity"], result["next_focus"]) == ("not_observed", "train_longer")
        assert "No behaviour statistic arrived" in result["insights"][0]
        assert "report interval" in result["insights"][0] and "not observed" in result["insights"][0]
        assert result["missing_metrics"] == list(INPUTS)

    def test_constants_stay_out_of_the_diagnosis(self):
        assert behavior.UNOBSERVED_FOCI == (behavior.FIX_RUN, behavior.TRAIN_LONGER, behavior.NAME_A_FOCUS) \
            == ("fix_run", "train_longer", "name_a_focus")
        assert behavior.UNOBSERVED_SEVERITIES == (behavior.FAILED, behavior.NOT_OBSERVED) == ("failed", "not_observed")
        assert not set(behavior.UNOBSERVED_FOCI) & set(FOCI)
        assert not set(behavior.UNOBSERVED_SEVERITIES) & set(SEVERITIES)

    @pytest.mark.parametrize("inputs", [{}, {name: None for name in INPUTS}, {"grip_success": float("nan"),
                                                                             "oob_rate": "n/a", "hover_efficiency": True}])
    def test_analyze_run_with_nothing_observed(self, inputs):
        assert not behavior.observed(inputs)
        assert behavior.analyze_run(inputs, "failed", "boom") == behavior.unobserved("failed", "boom")
        assert behavior.analyze_run(inputs, "completed")["next_focus"] == "train_longer"

    def test_analyze_run_with_one_input_is_the_contract(self):
        # One observed input: the others count as 0, as the rules file says.
        inputs = {"grip_success": 0.0}
        assert behavior.observed(inputs)
        assert behavior.analyze_run(inputs, "failed", "boom") == analyze(inputs)
        assert (analyze(inputs)["severity"], analyze(inputs)["next_focus"]) == ("critical", "diagnostic_grip")
        assert len(analyze(inputs)["missing_metrics"]) == len(INPUTS) - 1

    def test_analyze_is_unchanged_with_nothing_observed(self):
        assert analyze({})["severity"] == "critical" and analyze({})["next_focus"] == "diagnostic_grip"


CARRYING = {**NEUTRAL, "grip_success": 0.35, "delivery_success": 0.02, "grip_attempts": 0.6}


class TestEffective:
    """The stored analysis decides unless it is unusable or the rules are asked for."""

    STORED = {"severity": "ok", "next_focus": "optimize_performance", "insights": ["owner says fine"], "extra": 1}

    def test_stored_is_the_truth(self):
        rules = analyze(CARRYING)
        reading = behavior.effective(self.STORED, rules)
        assert reading.source == "stored" and reading.analysis == self.STORED
        assert reading.rules == rules and reading.stored == self.STORED
        assert len(reading.disagreement) == 1 and "next_focus" in reading.disagreement[0]
        assert reading.other == rules and reading.note is None
        out = reading.to_dict()
        assert out == {**self.STORED, "analysis_source": "stored", "rules_analysis": rules,
                       "disagreement": reading.disagreement}

    def test_recompute_uses_the_rules(self):
        rules = analyze(CARRYING)
        reading = behavior.effective(self.STORED, rules, recompute=True)
        assert reading.source == "rules" and reading.analysis == rules and reading.other == self.STORED
        out = reading.to_dict()
        assert out["next_focus"] == "improve_carrying" and out["stored_analysis"] == self.STORED
        assert "rules_analysis" not in out and out["disagreement"] == reading.disagreement

    def test_agreeing_readings_add_nothing(self):
        rules = analyze(CARRYING)
        stored = {"severity": "ok", "next_focus": "improve_carrying"}
        for recompute in (False, True):
            out = behavior.effective(stored, rules, recompute).to_dict()
            assert set(out) - set(stored) - set(rules) == {"analysis_source"}

    def test_nothing_stored(self):
        rules = analyze(CARRYING)
        reading = behavior.effective(None, rules)
        assert reading.source == "rules" and reading.analysis == rules and reading.note is None
        assert reading.to_dict() == {**rules, "analysis_source": "rules"}

    @pytest.mark.parametrize("stored, why", [
        ("ok", "a str, not an object"),
        (["ok"], "a list, not an object"),
        ({"next_focus": "improve_grip"}, "no severity"),
        ({"severity": "ok", "next_focus": 3}, "no next_focus"),
        ({"severity": " ", "next_focus": "improve_grip"}, "no severity"),
    ])
    def test_unusable_stored_falls_back_to_the_rules_and_says_why(self, stored, why):
        rules = analyze(CARRYING)
        assert behavior.stored_problem(stored) is not None
        reading = behavior.effective(stored, rules)
        assert reading.source == "rules" and reading.analysis == rules and reading.stored is None
        assert why in reading.note and "rules are used" in reading.note
        out = reading.to_dict()
        assert out["analysis_note"] == reading.note and "disagreement" not in out

    def test_usable_stored(self):
        assert behavior.stored_problem({"severity": "high", "next_focus": "anything"}) is None

    def test_insights_of(self):
        assert behavior.insights_of({"insights": "one"}) == ["one"]
        assert behavior.insights_of({"insights": [1, "two"]}) == ["1", "two"]
        assert behavior.insights_of({"insights": {"a": 1}}) == [] and behavior.insights_of(None) == []


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=1.0),
    st.text(max_size=5),
    st.lists(st.floats(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(INPUTS), ANY_VALUE))
def test_any_inputs_give_a_valid_analysis(inputs):
    result = analyze(inputs)
    assert set(result) == {"insights", "severity", "next_focus", "grip_efficiency", "metrics_summary", "missing_metrics"}
    assert result["severity"] in SEVERITIES
    assert result["next_focus"] in FOCI
    assert list(result["metrics_summary"]) == ["grip_success", "delivery_success", "end_to_end", "collision_rate"]
    for text in result["metrics_summary"].values():
        assert text.endswith("%") and 0.0 <= float(text[:-1]) <= 100.0
    assert all(isinstance(line, str) for line in result["insights"])
    assert set(result["missing_metrics"]) <= set(INPUTS)
    assert set(result["missing_metrics"]) >= set(INPUTS) - set(inputs)
    assert isinstance(result["grip_efficiency"], float) and math.isfinite(result["grip_efficiency"])
    assert result["grip_efficiency"] >= 0.0
    json.dumps(result, allow_nan=False)
