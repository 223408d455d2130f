r"""Budgets of the report: never zero, scaled to the units; the cost of greedy
searches; the wall-clock plan of --quick."""

import time

import pytest

from comparisons.budget import (
    affordable_pool,
    greedy_evaluations,
    shapley_budget,
    Stage,
    thin_ks,
    TimePlan,
)


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("main", [False, True])
def test_shapley_budget_positive_and_scaled(quick, main):
    sizes = [1, 2, 7, 160, 1024, 17216]
    budgets = [shapley_budget(n, quick, main) for n in sizes]
    assert all(b > 0 for b in budgets)
    assert budgets == sorted(budgets)  # grows with the layer size
    # at least a few evaluations per unit at scale
    assert shapley_budget(17216, quick, main) >= 2 * 17216
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="n_units"):
            shapley_budget(bad, quick, main)


def test_greedy_evaluations_matches_the_search(tiny, tiny_data):
    from captum_neuron_shapley import FilterShapley
    from captum_neuron_shapley.refine import greedy_removal

    (xv, yv), _ = tiny_data
    game = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).game(xv, target=yv)
    game.full_value()
    before = game.n_evaluations
    greedy_removal(game, list(range(7)), 3, pool_size=5)
    # V(intact) is cached; each step evaluates the pool's units not yet removed
    assert game.n_evaluations - before <= greedy_evaluations(3, 5) == 5 + 4 + 3
    assert greedy_evaluations(20, 160) == 3010
    assert greedy_evaluations(20, 60, start=10) == 455
    with pytest.raises(ValueError):
        greedy_evaluations(5, 3)


def test_affordable_pool():
    assert affordable_pool(10, 60, 1.0, None) == 60
    p = affordable_pool(10, 60, 0.1, 30.0)
    assert greedy_evaluations(10, p) * 0.1 <= 30.0 < greedy_evaluations(10, p + 1) * 0.1
    assert affordable_pool(10, 60, 10.0, 30.0) is None
    assert affordable_pool(10, 15, 0.0, 1.0) == 15  # never above the default


def test_thin_ks_fits_or_is_minimal():
    assert thin_ks(10, 20, 12, 0.0, 1.0) == list(range(1, 21))
    for sec in (0.5, 2.0, 5.0, 20.0):
        ks = thin_ks(10, 20, 10, 0.05, sec)
        assert 10 in ks and 20 in ks and ks == sorted(set(ks))
        assert len(ks) * 10 * 0.05 <= sec or ks == [10, 20]
    assert thin_ks(2, 4, 3, 1.0, 0.0) == [2, 4]


def test_time_plan_shares_and_leftovers():
    assert TimePlan(None).question(0.5, [Stage("a", 1)]).seconds_for("a") is None
    plan = TimePlan(100.0, reserve_s=10.0)
    q = plan.question(0.5, [Stage("a", 3.0), Stage("b", 1.0)])
    assert q.total_s == pytest.approx(45.0, abs=0.5)
    a = q.seconds_for("a")
    assert a == pytest.approx(45.0 * 3 / 4, abs=0.5)
    time.sleep(0.05)  # "a" used 0.05 s of its share: "b" gets the rest
    assert q.seconds_for("b") == pytest.approx(45.0 - 0.05, abs=0.5)
    with pytest.raises(ValueError, match="unknown stage"):
        q.seconds_for("c")
