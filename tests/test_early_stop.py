"""The behavioural early-stopping rule, on hand-made progress histories."""

from __future__ import annotations

from drex_opt.rules.early_stop import APPROACH_KEY, GRIP_KEY, EarlyStopRule, curve_of, value_at

TOTAL = 1_000_000
RULE = EarlyStopRule()


def history(points):
    """points: (fraction, grip, approach) -> progress events."""
    return [{"agent_steps": int(f * TOTAL), GRIP_KEY: g, APPROACH_KEY: a} for f, g, a in points]


def good_reference():
    return [(f / 10, min(0.9, f / 10 + 0.2), 0.8) for f in range(1, 11)]


def test_no_history_never_stops():
    assert RULE.check([], TOTAL, [good_reference()]) is None


def test_never_approaching_stops_once_others_did():
    h = history([(0.1, 0.0, 0.0), (0.2, 0.0, 0.0), (0.31, 0.0, 0.0)])
    reason = RULE.check(h, TOTAL, [good_reference()])
    assert reason and "never approached" in reason


def test_never_approaching_waits_for_its_fraction():
    h = history([(0.1, 0.0, 0.0), (0.29, 0.0, 0.0)])
    assert RULE.check(h, TOTAL, [good_reference()]) is None


def test_never_approaching_is_not_judged_without_evidence_the_budget_allows_it():
    """Early in short runs only crashed episodes have finished; nobody approached yet."""
    h = history([(0.5, 0.0, 0.0)])
    assert RULE.check(h, TOTAL, []) is None
    assert RULE.check(h, TOTAL, [[(0.1, 0.0, 0.0), (0.5, 0.0, 0.01)]]) is None


def test_one_approach_is_enough_to_keep_going():
    h = history([(0.1, 0.0, 0.0), (0.2, 0.0, 0.002), (0.4, 0.0, 0.0)])
    assert RULE.check(h, TOTAL, [good_reference()]) is None


def test_far_behind_the_study_stops_past_half_budget():
    refs = [good_reference()] * 3
    h = history([(0.55, 0.05, 0.5)])  # references have 0.7 at 0.5: 0.05 < 0.25 * 0.7
    reason = RULE.check(h, TOTAL, refs)
    assert reason and "median" in reason


def test_behind_but_not_far_keeps_going():
    refs = [good_reference()] * 3
    assert RULE.check(history([(0.55, 0.2, 0.5)]), TOTAL, refs) is None


def test_trailing_needs_enough_references():
    refs = [good_reference()] * 2
    assert RULE.check(history([(0.55, 0.0, 0.5)]), TOTAL, refs) is None


def test_trailing_needs_a_meaningful_reference():
    weak = [[(0.1, 0.05, 0.8), (0.5, 0.1, 0.8)]] * 3  # median 0.1 < min_reference
    assert RULE.check(history([(0.6, 0.0, 0.5)]), TOTAL, weak) is None


def test_trailing_is_not_judged_before_half_budget():
    refs = [good_reference()] * 3
    assert RULE.check(history([(0.45, 0.0, 0.5)]), TOTAL, refs) is None


def test_curve_is_downsampled_and_keeps_the_last_point():
    h = history([(i / 100, i / 100, 0.5) for i in range(1, 101)])
    curve = curve_of(h, TOTAL, points=20)
    assert len(curve) == 20
    assert curve[-1] == (1.0, 1.0, 0.5)
    assert all(a[0] < b[0] for a, b in zip(curve, curve[1:]))


def test_curve_skips_points_without_grip():
    h = [{"agent_steps": 10}, {"agent_steps": 20, GRIP_KEY: 0.5}]
    assert curve_of(h, 100) == [(0.2, 0.5, 0.0)]


def test_value_at_takes_the_last_point_at_or_before():
    curve = [(0.1, 0.1, 0.0), (0.5, 0.5, 0.3)]
    assert value_at(curve, 0.05) is None
    assert value_at(curve, 0.1) == 0.1
    assert value_at(curve, 0.49) == 0.1
    assert value_at(curve, 0.9) == 0.5
    assert value_at(curve, 0.9, column=2) == 0.3
