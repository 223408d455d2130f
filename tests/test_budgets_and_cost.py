"""A budget that completes no chain never yields an unmarked answer; what a
budget buys is projected from a pilot; the progress bar shows the binding
budget."""

import warnings

import pytest
import torch

from captum_neuron_shapley import (
    FilterShapley,
    MaxTime,
    PermutationSampler,
    UnestimatedWarning,
)


def test_no_completed_chain_is_marked_and_warned(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    with pytest.warns(UnestimatedWarning) as seen:
        res = fs.attribute(
            x,
            target=y,
            top_k=2,
            refine="greedy",
            sampler=PermutationSampler(batch_size=None),
            max_evaluations=4,
            seed=0,
            return_result=True,
        )
    messages = [str(w.message) for w in seen]
    # the run says so, and names what a chain costs as measured from the run
    assert any(
        "7 of 7 units have no sample" in m and "one chain takes up to about" in m
        for m in messages
    )
    # no removal set is made up from units without samples
    assert any("no removal set: it needs 2 units with samples" in m for m in messages)
    assert res.removal_set is None and res.n_permutations == 0
    assert bool(res.unestimated.all()) and torch.isinf(res.flat_radius).all()
    assert "7 of 7 unit(s) UNESTIMATED" in repr(res)
    assert not res.converged and res.stop_reason == "max_evaluations"


def test_removal_set_comes_from_sampled_units_only(tiny, tiny_data):
    # enough budget for some chains: the set is built from units with samples
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnestimatedWarning)
        res = fs.attribute(
            x,
            target=y,
            top_k=2,
            refine="greedy",
            max_permutations=8,
            seed=0,
            return_result=True,
        )
    assert res.removal_set is not None
    assert all(int(res.counts[i]) > 0 for i in res.removal_set)


def test_cost_estimate_is_within_two_of_the_measured_cost(tiny, tiny_data):
    # a pilot of 8 chains projects the evaluations of 40 chains with every unit
    # sampled; the measured run must be within a factor of 2 (the chains'
    # lengths vary with where each crosses the truncation threshold)
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    est = fs.estimate_cost(x, target=y, seed=0)
    assert est.measured and est.n_units == 7
    assert est.evaluations_per_chain > 0 and est.seconds_per_evaluation > 0
    res = fs.attribute(
        x, target=y, epsilon=0.0, max_permutations=40, seed=1, return_result=True
    )
    predicted = est.chains(40).evaluations
    assert 0.5 <= predicted / res.n_evaluations <= 2.0
    # standard errors shrink as the square root of the chains
    a, b = est.chains(10).stderr, est.chains(40).stderr
    assert a is not None and b is not None and a == pytest.approx(2 * b)
    # a time budget buys what its seconds allow
    sixty = est.budget(max_time=60.0)
    assert sixty.seconds == pytest.approx(60.0, rel=1e-6)
    assert est.budget(max_evaluations=100, max_time=1e6).evaluations == 100
    assert "chains  evaluations" in repr(est)
    with pytest.raises(ValueError, match="`top_k` does not apply to estimate_cost"):
        fs.estimate_cost(x, target=y, top_k=3)


def test_progress_bar_shows_the_binding_budget(tiny, tiny_data, monkeypatch):
    import captum_neuron_shapley.estimator as est

    bars = []
    real = est.progress

    def spy(*args, **kwargs):
        bar = real(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(est, "progress", spy)
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    fs.attribute(x, target=y, max_evaluations=60, show_progress=True, seed=0)
    assert bars[-1].unit == "eval" and bars[-1].total == 60
    # a time budget that binds first: seconds, with its total
    fs.attribute(
        x,
        target=y,
        max_evaluations=10**9,
        stop=MaxTime(1.0),
        show_progress=True,
        seed=0,
    )
    assert bars[-1].unit == "s" and bars[-1].total == pytest.approx(1.0)
    # no budget: the units decided so far, out of all of them
    fs.attribute(x, target=y, top_k=2, show_progress=True, seed=0)
    assert bars[-1].unit == "unit" and bars[-1].total == 7


def test_converged_whatever_the_order_of_the_rules():
    # the top-k rule met in the round a budget runs out: converged, however the
    # rules were combined
    from captum_neuron_shapley import Callback, NeuronShapley, TopKSeparated
    from comparisons.games import mlp_data

    model, x, y = mlp_data(120)
    ns = NeuronShapley(model, model.fc1)
    kw = dict(target=y, seed=0, return_result=True)
    n = ns.attribute(x, top_k=2, **kw).n_permutations
    runs = [
        ns.attribute(x, top_k=2, max_permutations=n, **kw),
        ns.attribute(x, max_permutations=n, stop=TopKSeparated(2), **kw),
        ns.attribute(
            x, top_k=2, max_permutations=n, stop=Callback(lambda run: False), **kw
        ),
    ]
    for res in runs:
        assert res.converged and res.stop_reason == "converged"
        assert torch.equal(res.flat_values, runs[0].flat_values)
