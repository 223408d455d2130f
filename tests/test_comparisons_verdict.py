r"""The report's verdict on hand-made removal curves: each range of k names the
method with the lowest curve there (values within the metric's resolution tie),
random removal when nothing beats it, where a gradient method wins, and what
makes the Shapley rows provisional."""

import math

import pytest

from comparisons.methods import MethodStatus
from comparisons.report.summary import (
    Agreement,
    CostSummary,
    Curve,
    QuestionSummary,
    ShapleyRunInfo,
)
from comparisons.report.verdict import question_verdict, verdict_lines


def _question(curves, resolution=0.0, converged=True, crowding=1):
    ks = list(range(len(next(iter(curves.values())))))
    methods = {
        m: Curve([c], c, "single run", c, c, [0.0] * len(c), 0.0)
        for m, c in curves.items()
    }
    run = ShapleyRunInfo(
        seed=0,
        evaluations=100,
        permutations=30 if converged else 3,
        converged=converged,
        stop_reason="converged" if converged else "max_evaluations",
        budget={"max_evaluations": 100},
        wall_s=1.0,
        boundary_crowding=crowding,
        epsilon=0.01,
    )
    status = {m: MethodStatus() for m in curves}
    if not converged:
        status["shapley"] = MethodStatus(complete=False, reason="budget")
        status["shapley-greedy"] = MethodStatus(complete=False, reason="budget")
    return QuestionSummary(
        key="overall",
        title="overall accuracy",
        metric="accuracy",
        n_val=100,
        n_test=100,
        n_test_available=100,
        k=2,
        K=len(ks) - 1,
        ks=ks,
        intact=curves["random"][0],
        excluded=0,
        resolution=resolution,
        methods=methods,
        winners=[],
        costs={m: CostSummary(wall_s=1.0) for m in curves},
        status=status,
        agreement=Agreement([], 2, [], []),
        top_units={},
        shapley_runs=[run],
        full_greedy_rule="",
        seconds_per_evaluation={},
        setup_cost={},
        time_s=None,
        wall_s=1.0,
    )


CURVES = {
    #                k = 0    1     2     3     4     5
    "shapley": [0.90, 0.89, 0.80, 0.60, 0.50, 0.40],
    "shapley-greedy": [0.90, 0.85, 0.70, 0.50, 0.45, 0.45],
    "conductance": [0.90, 0.80, 0.75, 0.65, 0.30, 0.20],
    "random": [0.90, 0.895, 0.89, 0.885, 0.88, 0.875],
}


def test_segments_name_the_lowest_curve_at_every_k():
    q = _question(CURVES)
    v = question_verdict(q)
    assert [(s.ks, s.pick) for s in v.segments] == [
        ([1], "conductance"),
        ([2, 3], "shapley-greedy"),
        ([4, 5], "conductance"),
    ]
    for s in v.segments:
        for k, val in zip(s.ks, s.values):
            lowest = min(q.at(m, k) for m in CURVES)
            assert val == lowest
    # runner-up at the segment's last k: the best of the others
    assert v.segments[1].runner_up == ("shapley", 0.60)
    assert v.gradient_ks == {"conductance": [1, 4, 5]}
    text = "\n".join(verdict_lines(v))
    assert "k = 2-3: use **shapley-greedy** (Shapley's greedy removal set)" in text
    assert "A gradient method is the pick at k = 1, 4-5 (conductance)." in text
    assert "Provisional" not in text


def test_values_within_the_resolution_tie():
    # at k = 1 shapley-greedy is one test example (0.01) above conductance: tied,
    # so one segment runs from k = 1 while shapley-greedy stays within reach
    curves = dict(CURVES, **{"shapley-greedy": [0.90, 0.81, 0.70, 0.50, 0.45, 0.45]})
    v = question_verdict(_question(curves, resolution=0.01))
    first = v.segments[0]
    assert first.ks == [1, 2, 3] and first.pick == "shapley-greedy"
    assert (
        "values within 0.0100 (one test example) of the lowest tie"
        in verdict_lines(v)[0]
    )


def test_random_removal_when_nothing_beats_it():
    curves = {m: list(c) for m, c in CURVES.items()}
    for m in ("shapley", "shapley-greedy", "conductance"):
        curves[m][1] = 0.9  # at k = 1 nothing removes more than random
    v = question_verdict(_question(curves))
    assert v.segments[0].ks == [1] and v.segments[0].methods == ["random"]
    assert "no ranking removes more than random removal" in verdict_lines(v)[2]


def test_unconverged_runs_and_a_crowded_boundary_are_provisional():
    v = question_verdict(_question(CURVES, converged=False, crowding=12))
    text = "\n".join(verdict_lines(v))
    assert "Provisional: the Shapley runs did not converge (1 of 1 seed" in text
    assert "stopped by max_evaluations after 3 chains" in text
    assert "12 units lie within epsilon = 0.010 of the top-2 boundary" in text
    # the unconverged methods carry their dagger wherever the verdict names them
    assert "use **shapley-greedy†**" in text and "next best at k = 3: shapley† " in text


def test_nan_beyond_an_ordering_does_not_compete():
    curves = dict(CURVES, conductance=[0.90, 0.80, math.nan, math.nan, 0.1, 0.1])
    v = question_verdict(_question(curves))
    picks = {k: s.pick for s in v.segments for k in s.ks}
    assert picks[2] == "shapley-greedy" and picks[3] == "shapley-greedy"
    assert picks[4] == "conductance"


@pytest.mark.parametrize(
    "n, word, many, want",
    [
        (1, "thread", None, "1 thread"),
        (2, "thread", None, "2 threads"),
        (0, "unit", None, "0 units"),
        (1, "process", "processes", "1 process"),
        (3, "process", "processes", "3 processes"),
    ],
)
def test_plural(n, word, many, want):
    from comparisons.text import plural

    assert plural(n, word, many) == want
