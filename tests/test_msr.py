"""sampler='msr' (maximum sample reuse, regression-adjusted): exact enumeration,
efficiency, seeds, checkpoints and bad input."""

import warnings

import pytest
import torch

from captum_neuron_shapley import (
    Checkpoint,
    FilterShapley,
    NegativeCrossEntropy,
    NeuronShapley,
)
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.msr import MSRSampler
from comparisons.games import mlp_data

from .conftest import Z_TOL


def _check(res, exact):
    # Each unit's estimate is the mean of unbiased samples (martingale differences:
    # the control is fitted on earlier rounds only), so it is asymptotically normal
    # around the exact value; Z_TOL as everywhere (conftest), plus an absolute check
    # that the comparison is not vacuous.
    err = (res.flat_values - exact).abs()
    assert torch.isfinite(res.flat_stderr).all()
    assert (err <= Z_TOL * res.flat_stderr + 1e-9).all(), (res.flat_values, exact)
    assert err.max() < 0.03
    # efficiency holds exactly at every step (the samples of a coalition add up
    # to V(all) - V(none))
    assert abs(res.convergence_delta) < 1e-9


@pytest.mark.parametrize("metric", [None, NegativeCrossEntropy()])
def test_msr_matches_enumeration_on_the_tiny_cnn(tiny, tiny_data, metric):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    exact = exact_values(fs.game(x, target=y, metric=metric))
    res = fs.attribute(
        x,
        target=y,
        metric=metric,
        sampler="msr",
        max_evaluations=2000,
        perturbations_per_eval=32,
        seed=0,
        return_result=True,
    )
    _check(res, exact)
    assert res.truncation is None and res.n_permutations == res.n_evaluations - 1


def test_msr_matches_enumeration_on_a_10_neuron_mlp():
    model, x, y = mlp_data()
    ns = NeuronShapley(model, model.act)
    exact = exact_values(ns.game(x, target=y, layer_baselines="zero"))
    res = ns.attribute(
        x,
        target=y,
        layer_baselines="zero",
        sampler="msr",
        max_evaluations=2000,
        perturbations_per_eval=32,
        seed=1,
        return_result=True,
    )
    _check(res, exact)


def test_msr_samples_are_unbiased_over_many_seeds(tiny, tiny_data):
    # the mean over 24 independent short runs agrees with the exact values within
    # Z_TOL standard errors of that mean: no bias from the fitted control
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    exact = exact_values(fs.game(x, target=y))
    runs = torch.stack(
        [
            fs.attribute(
                x,
                target=y,
                sampler="msr",
                max_permutations=96,
                perturbations_per_eval=32,
                seed=s,
                return_result=True,
            ).flat_values
            for s in range(24)
        ]
    )
    se = runs.std(0) / 24**0.5
    assert ((runs.mean(0) - exact).abs() <= Z_TOL * se + 1e-9).all()


def test_msr_top_k_stops_with_the_right_units(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    exact = exact_values(fs.game(x, target=y))
    res = fs.attribute(
        x,
        target=y,
        sampler="msr",
        top_k=2,
        perturbations_per_eval=32,
        seed=0,
        return_result=True,
    )
    assert res.converged and res.stop_reason == "converged"
    top = set(torch.topk(res.flat_values, 2).indices.tolist())
    assert top == set(torch.topk(exact, 2).indices.tolist())
    assert ((res.flat_values - exact).abs() <= res.flat_radius).all()


def test_msr_same_seed_same_result_and_global_rng_untouched(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    state = torch.get_rng_state()
    run = [
        fs.attribute(
            x,
            target=y,
            sampler="msr",
            max_evaluations=200,
            perturbations_per_eval=16,
            seed=s,
            return_result=True,
        )
        for s in (5, 5, 6)
    ]
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(run[0].flat_values, run[1].flat_values)
    assert not torch.equal(run[0].flat_values, run[2].flat_values)


def test_msr_resume_continues_exactly(tiny, tiny_data, tmp_path):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    kw = dict(
        target=y,
        sampler="msr",
        seed=3,
        perturbations_per_eval=16,
        return_result=True,
    )
    full = fs.attribute(x, max_permutations=96, **kw)
    ckpt = tmp_path / "msr.pt"
    first = fs.attribute(x, max_permutations=48, stop=Checkpoint(ckpt), **kw)
    assert first.n_permutations == 48
    resumed = fs.attribute(x, max_permutations=96, stop=Checkpoint(ckpt), **kw)
    assert torch.equal(resumed.flat_values, full.flat_values)
    assert resumed.n_evaluations == full.n_evaluations
    # a chains checkpoint is not resumed as msr
    other = tmp_path / "chains.pt"
    fs.attribute(x, target=y, max_permutations=4, stop=Checkpoint(other), seed=3)
    with pytest.raises(
        ValueError, match="other settings .*sampler: .chains. in the file, .msr. now"
    ):
        fs.attribute(x, max_permutations=96, stop=Checkpoint(other), **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(sampler="kernel"), "`sampler` must be 'chains', 'msr' or"),
        # the old flat keywords of the chains (deprecated) are refused with msr
        (dict(sampler="msr", strata=4), "`strata` applies"),
        (dict(sampler="msr", antithetic=True), "`antithetic` applies"),
        (dict(sampler="msr", subset_size=50), "`subset_size` applies"),
    ],
)
def test_msr_bad_input(tiny, tiny_data, kw, match):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs.attribute(x, target=y, max_evaluations=20, **kw)


def test_msr_sampler_checks_its_settings():
    with pytest.raises(ValueError, match="`coalitions_per_round` must be a positive"):
        MSRSampler(coalitions_per_round=0)
    with pytest.raises(ValueError, match="`uniform_mix` must lie in"):
        MSRSampler(uniform_mix=2.0)


def test_msr_needs_two_units(tiny, tiny_data):
    (x, y), _ = tiny_data
    game = FilterShapley(tiny, tiny.conv1).game(x, target=y)
    game.n_units = 1
    with pytest.raises(ValueError, match="at least 2 units"):
        MSRSampler().bind(game, torch.Generator())
