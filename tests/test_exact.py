"""The estimator converges to exact Shapley values computed by enumeration."""

import pytest
import torch

from captum_neuron_shapley import (
    FilterShapley,
    NegativeCrossEntropy,
    NeuronShapley,
    PermutationSampler,
)

from .conftest import exact_shapley, MLP, Z_TOL


def _check(result, exact):
    est, se = result.flat_values, result.flat_stderr
    assert torch.isfinite(se).all()
    err = (est - exact).abs()
    assert (err <= Z_TOL * se + 1e-9).all(), (est, exact, se)
    # ... and the comparison is not vacuous: the errors are small in absolute terms
    assert err.max() < 0.05


@pytest.mark.parametrize("baselines", ["mean", "zero"])
def test_one_layer_matches_enumeration(tiny, tiny_data, baselines):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, tiny.conv1)
    exact = exact_shapley(fs.game(x, target=y, layer_baselines=baselines))
    assert exact.abs().max() > 0.05  # a game with real differences between units
    res = fs.attribute(
        x,
        target=y,
        layer_baselines=baselines,
        truncation=None,
        max_permutations=600,
        perturbations_per_eval=4,
        seed=1,
        return_result=True,
    )
    _check(res, exact)
    assert res.values.shape == (4,)


def test_joint_game_over_two_layers(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    game = fs.game(x, target=y, metric=NegativeCrossEntropy())
    assert game.n_units == 7
    exact = exact_shapley(game)
    res = fs.attribute(
        x,
        target=y,
        metric=NegativeCrossEntropy(),
        truncation=None,
        max_permutations=800,
        perturbations_per_eval=7,
        seed=2,
        return_result=True,
    )
    _check(res, exact)
    v1, v2 = res.values
    assert v1.shape == (4,) and v2.shape == (3,)


def test_neuron_shapley_with_layer_mask_matches_enumeration():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(150, 5)
    y = model(x).argmax(1)
    mask = torch.tensor([[0, 0, 1, 2, 3, 3]])  # 4 units over 6 neurons
    ns = NeuronShapley(model, model.act)
    exact = exact_shapley(ns.game(x, target=y, layer_mask=mask))
    res = ns.attribute(
        x,
        target=y,
        layer_mask=mask,
        truncation=None,
        max_permutations=600,
        seed=3,
        return_result=True,
    )
    _check(res, exact)
    phi = res.values
    assert phi.shape == (6,)
    assert phi[0] == phi[1] and phi[4] == phi[5]  # elements share their unit's value


def test_antithetic_chains_match_enumeration(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    metric = NegativeCrossEntropy()
    exact = exact_shapley(fs.game(x, target=y, metric=metric))
    res = fs.attribute(
        x,
        target=y,
        metric=metric,
        truncation=None,
        sampler=PermutationSampler(antithetic=True, batch_size=None),
        epsilon=0.0,
        max_permutations=600,
        perturbations_per_eval=7,
        seed=6,
        return_result=True,
    )
    # Each chain of a pair is a uniform permutation, so the pair mean is unbiased;
    # the two chains are dependent, so each pair is one sample of the statistics.
    assert res.n_permutations == 600 and (res.counts == 300).all()
    assert ((res.flat_values - exact).abs() <= Z_TOL * res.flat_stderr + 1e-9).all()


def test_stratified_chains_match_enumeration(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    metric = NegativeCrossEntropy()
    exact = exact_shapley(fs.game(x, target=y, metric=metric))
    res = fs.attribute(
        x,
        target=y,
        metric=metric,
        truncation=None,
        sampler=PermutationSampler(strata=4, batch_size=None),
        epsilon=0.0,
        max_permutations=602,  # 150 full cycles and one cut to 2 chains
        perturbations_per_eval=7,
        seed=6,
        return_result=True,
    )
    # Every shifted order is a uniform permutation, so each cycle's mean marginal
    # is unbiased (also the last, partial one); the chains of a cycle are
    # dependent, so each cycle is one sample of the statistics.
    assert res.n_permutations == 602 and (res.counts == 151).all()
    assert ((res.flat_values - exact).abs() <= Z_TOL * res.flat_stderr + 1e-9).all()
    # without truncation every chain's marginals sum to V(all) - V(none)
    assert abs(float(res.convergence_delta)) < 1e-9


def test_exact_values_match_enumeration_and_every_truncated_chain(tiny, tiny_data):
    # captum_neuron_shapley.exact (a DP over coalitions) against the independent
    # enumeration above, and its truncated target against the mean of the
    # truncated chains over all 7! removal orders (the sampler's own walk)
    import itertools

    from captum_neuron_shapley.exact import exact_values
    from captum_neuron_shapley.sampler import PermutationSampler

    (x, y), _ = tiny_data
    game = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).game(
        x, target=y, metric=NegativeCrossEntropy()
    )
    assert torch.allclose(exact_values(game), exact_shapley(game), atol=1e-12)
    thr = game.empty_value() + 0.3 * (game.full_value() - game.empty_value())

    class Table:  # the same game, every coalition looked up (5040 chains)
        n_units, perturbations_per_eval, n_evaluations = 7, 128, 0
        keys = torch.tensor(list(itertools.product([False, True], repeat=7)))
        table = dict(zip(map(tuple, keys.tolist()), game.value(keys).tolist()))

        def value(self, keep, idx=None):
            rows = [self.table[tuple(k)] for k in keep.tolist()]
            return torch.tensor(rows, dtype=torch.float64)

        def full_value(self, idx=None):
            return self.table[(True,) * 7]

    sampler = PermutationSampler(strata=1, batch_size=None).bind(
        Table(), torch.Generator(), thr
    )
    active = torch.ones(7, dtype=torch.bool)
    total = torch.zeros(7, dtype=torch.float64)
    for perm in itertools.permutations(range(7)):
        units, marginals = sampler.chain(torch.tensor(perm), active)
        total[units] += marginals
    truncated = exact_values(game, thr)
    assert torch.allclose(truncated, total / 5040, atol=1e-12)
    assert (truncated - exact_shapley(game)).abs().max() > 1e-3  # it bites
