"""Precedence of the rules in behavior-rules.md: when several rows hold, the first one wins.

The rules table is written here by hand from the document, not taken from
``drex_opt.rules.behavior``. Inputs are generated from a grid with one point in every cell
that the document's thresholds cut [0, 1] into, so "the grid finds no case" is a proof.
"""

from __future__ import annotations

import itertools
import operator
import re

import pytest

from drex_opt.rules.behavior import analyze

ABOVE, BELOW = operator.gt, operator.lt

# behavior-rules.md, "Rules": (row, condition as (input, comparison, threshold) terms, next_focus).
RULES = (
    (1, (("grip_success", ABOVE, 0.5), ("delivery_success", ABOVE, 0.3)), "optimize_performance"),
    (2, (("hover_efficiency", ABOVE, 0.5), ("grip_success", BELOW, 0.2)), "fix_grip_activation"),
    (3, (("collision_rate", ABOVE, 0.5),), "fix_stability"),
    (4, (("grip_success", ABOVE, 0.3), ("delivery_success", BELOW, 0.1)), "improve_carrying"),
    (5, (("delivery_success", ABOVE, 0.3), ("end_to_end_success", BELOW, 0.1)), "improve_coordination"),
    (6, (("grip_attempts", BELOW, 0.001),), "diagnostic_grip"),
    (7, (("grip_success", BELOW, 0.1),), "improve_grip"),
    (8, (("grip_success", BELOW, 0.3),), "tune_grip"),
    (9, None, "continue"),  # otherwise
)
ROWS = tuple(row for row, _, _ in RULES)
FOCUS = {row: focus for row, _, focus in RULES}
CONDITION = {row: terms for row, terms, _ in RULES}

# The document's severity, in its order: the first that holds.
SEVERITY = (
    ("critical", lambda p: p["grip_attempts"] < 0.001),
    ("warning", lambda p: p["grip_success"] < 0.1 or p["collision_rate"] > 0.5),
    ("ok", lambda p: True),
)

# Inputs no rule reads, held where they add no insight (oob_rate > 0.5 would).
QUIET_INPUTS = {"delivery_attempts": 0.5, "oob_rate": 0.25}


def holds(row: int, point: dict) -> bool:
    if CONDITION[row] is None:
        return not any(holds(other, point) for other in ROWS if other != row)
    return all(compare(point[name], threshold) for name, compare, threshold in CONDITION[row])


def holding_rows(point: dict) -> list[int]:
    return [row for row in ROWS if holds(row, point)]


def cell_points(thresholds: set[float]) -> list[float]:
    """Each threshold and a point inside every open interval between them on [0, 1]."""
    edges = sorted({0.0, 1.0, *thresholds})
    inside = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    return sorted({*thresholds, *inside})


def build_grid() -> list[dict]:
    thresholds: dict[str, set[float]] = {}
    for terms in CONDITION.values():
        for name, _, threshold in terms or ():
            thresholds.setdefault(name, set()).add(threshold)
    names = sorted(thresholds)
    axes = [cell_points(thresholds[name]) for name in names]
    return [{**QUIET_INPUTS, **dict(zip(names, values))} for values in itertools.product(*axes)]


GRID = build_grid()


def first_case(i: int, j: int) -> dict | None:
    """A grid point where rows i and j hold and no row before i does."""
    for point in GRID:
        if holds(i, point) and holds(j, point) and not any(holds(k, point) for k in ROWS if k < i):
            return point
    return None


# Pairs whose conditions contradict each other (row 9, "otherwise", excludes every row).
IMPOSSIBLE = {
    (1, 2),  # grip_success > 0.5 and < 0.2
    (1, 4),  # delivery_success > 0.3 and < 0.1
    (1, 7),  # grip_success > 0.5 and < 0.1
    (1, 8),  # grip_success > 0.5 and < 0.3
    (2, 4),  # grip_success < 0.2 and > 0.3
    (4, 5),  # delivery_success < 0.1 and > 0.3
    (4, 7),  # grip_success > 0.3 and < 0.1
    (4, 8),  # grip_success > 0.3 and < 0.3
    *((row, 9) for row in ROWS if row != 9),
}
PAIRS = list(itertools.combinations(ROWS, 2))
POSSIBLE = [pair for pair in PAIRS if pair not in IMPOSSIBLE]


def pair_id(pair: tuple[int, int]) -> str:
    return f"rows-{pair[0]}-{pair[1]}"


def test_the_grid_reaches_every_row_and_every_severity():
    assert {row for point in GRID for row in holding_rows(point)} == set(ROWS)
    assert {document_severity(point) for point in GRID} == {name for name, _ in SEVERITY}


@pytest.mark.parametrize("pair", POSSIBLE, ids=map(pair_id, POSSIBLE))
def test_the_earlier_row_wins(pair):
    i, j = pair
    case = first_case(i, j)
    assert case is not None, f"rows {i} and {j} never hold together without an earlier row: move to IMPOSSIBLE"
    assert analyze(case)["next_focus"] == FOCUS[i], case


@pytest.mark.parametrize("pair", sorted(IMPOSSIBLE), ids=map(pair_id, sorted(IMPOSSIBLE)))
def test_impossible_pairs_never_hold_together(pair):
    i, j = pair
    assert not any(holds(i, point) and holds(j, point) for point in GRID)


def test_the_first_holding_row_wins_everywhere_on_the_grid():
    wrong = [(point, analyze(point)["next_focus"]) for point in GRID
             if analyze(point)["next_focus"] != FOCUS[holding_rows(point)[0]]]
    assert wrong == [], f"{len(wrong)} grid points disagree, e.g. {wrong[0]}"


# ---------------------------------------------------------------- severity
def document_severity(point: dict) -> str:
    return next(name for name, condition in SEVERITY if condition(point))


def test_severity_is_the_first_level_that_holds_everywhere_on_the_grid():
    wrong = [point for point in GRID if analyze(point)["severity"] != document_severity(point)]
    assert wrong == [], f"{len(wrong)} grid points disagree, e.g. {wrong[0]}"


def test_critical_comes_before_warning():
    # Points where both the critical and a warning condition hold must exist and be critical.
    both = [point for point in GRID if SEVERITY[0][1](point) and SEVERITY[1][1](point)]
    assert both and {analyze(point)["severity"] for point in both} == {"critical"}


# ---------------------------------------------------------------- insights
def template(sentence: str) -> str:
    """A sentence with its percentages blanked, so each row has one fixed wording."""
    return re.sub(r"\d+(\.\d+)?%", "#", sentence)


def row_templates() -> dict[int, str]:
    """The wording of each row 1–8, found from behaviour alone: the one insight present
    wherever the row holds and absent wherever it does not."""
    seen = [({template(line) for line in analyze(point)["insights"]}, set(holding_rows(point))) for point in GRID]
    found = {}
    for row in ROWS[:-1]:
        always = set.intersection(*(lines for lines, rows in seen if row in rows))
        elsewhere = set().union(*(lines for lines, rows in seen if row not in rows))
        candidates = always - elsewhere
        assert len(candidates) == 1, f"row {row}: no single insight of its own ({candidates})"
        found[row] = candidates.pop()
    return found


@pytest.fixture(scope="module")
def templates() -> dict[int, str]:
    return row_templates()


def test_one_insight_per_holding_row_in_table_order(templates):
    # The severity conditions repeat rows 6, 7 and 3, so they add no sentence of their own.
    row_of = {wording: row for row, wording in templates.items()}
    for point in GRID:
        expected = [row for row in holding_rows(point) if row != 9]
        listed = [row_of.get(template(line)) for line in analyze(point)["insights"]]
        assert listed == expected, point


def test_the_documented_sentences_belong_to_their_rows(templates):
    assert "Drone not attempting to grip objects at all" in templates[6]
    assert templates[4].startswith("Can grip but cannot deliver — carrying/navigation issue")
