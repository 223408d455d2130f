"""Efficiency, symmetry and null-unit axioms."""

import torch

from captum_neuron_shapley import (
    FilterShapley,
    NegativeCrossEntropy,
    PermutationSampler,
)
from torch import nn

from .conftest import exact_shapley, TinyCNN, Z_TOL


def test_efficiency_without_truncation(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    # With every unit sampled in every chain, chains on all examples and no
    # truncation, each chain's marginals telescope to V(all) - V(none): the gap
    # is zero up to rounding.
    whole = PermutationSampler(batch_size=None)
    _, delta = fs.attribute(
        x,
        target=y,
        truncation=None,
        epsilon=0.0,
        sampler=whole,
        max_permutations=25,
        seed=0,
        return_convergence_delta=True,
    )
    assert abs(delta) < 1e-9
    # With truncation each chain's marginals sum to V(all) - V(stop), V(stop)
    # being the first state at or below the threshold: the gap is the mean of
    # V(stop) - V(none) over chains, reported as it is (not forced to zero).
    res = fs.attribute(
        x,
        target=y,
        truncation=0.9,
        sampler=whole,
        max_permutations=25,
        seed=0,
        return_result=True,
    )
    gap = res.full_value - res.empty_value - float(res.flat_values.sum())
    assert 0 < gap <= 0.9 - res.empty_value


def test_efficiency_in_expectation_with_batches(tiny, tiny_data):
    # Chains on random batches of 64 of the 200 examples (the default here): a
    # cycle's marginals telescope to V_B(all) - V_B(none) on its batch B, whose
    # mean over batches is V(all) - V(none). The gap is the mean of 25 cycles'
    # deviations; its spread is that of V_B(all) - V_B(none) over random batches
    # (computed here over 400 batches) divided by sqrt(25).
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    res = fs.attribute(
        x, target=y, truncation=None, max_permutations=100, seed=0, return_result=True
    )
    assert res.cost.batch_size == 64 and res.n_permutations == 100
    game = fs.game(x, target=y)
    g = torch.Generator().manual_seed(1)
    drops = torch.tensor(
        [
            game.full_value(b) - game.empty_value(b)
            for b in (game.draw(g, 64) for _ in range(400))
        ]
    )
    assert abs(float(drops.mean()) - (game.full_value() - game.empty_value())) < 0.02
    gap = res.convergence_delta
    assert gap != 0.0  # the batches do not telescope to the whole set exactly...
    assert abs(gap) <= Z_TOL * float(drops.std()) / 5  # ...but do in expectation


def _duplicated_filter_model(tiny):
    """conv1 filters 0 and 1 made identical, with identical outgoing weights."""
    model = TinyCNN()
    model.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        model.conv1.weight[1] = model.conv1.weight[0]
        model.conv1.bias[1] = model.conv1.bias[0]
        model.conv2.weight[:, 1] = model.conv2.weight[:, 0]
    return model.eval()


def test_symmetry(tiny, tiny_data):
    (x, y), _ = tiny_data
    model = _duplicated_filter_model(tiny)
    fs = FilterShapley(model, model.conv1)
    metric = NegativeCrossEntropy()
    exact = exact_shapley(fs.game(x, target=y, metric=metric, layer_baselines="zero"))
    assert torch.isclose(exact[0], exact[1], atol=1e-6)
    assert exact[0].abs() > 1e-3
    res = fs.attribute(
        x,
        target=y,
        metric=metric,
        layer_baselines="zero",
        truncation=None,
        max_permutations=400,
        seed=4,
        return_result=True,
    )
    v, se = res.flat_values, res.flat_stderr
    assert (v[0] - v[1]).abs() <= Z_TOL * (se[0] ** 2 + se[1] ** 2).sqrt()


def test_null_unit_gets_zero(tiny, tiny_data):
    (x, y), _ = tiny_data
    model = TinyCNN()
    model.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        model.conv2.weight[:, 2] = 0.0  # conv1 filter 2 is never used downstream
    fs = FilterShapley(model.eval(), model.conv1)
    res = fs.attribute(
        x,
        target=y,
        metric=NegativeCrossEntropy(),
        layer_baselines="zero",
        truncation=None,
        max_permutations=50,
        seed=0,
        return_result=True,
    )
    assert res.flat_values[2] == 0.0 and res.flat_stderr[2] == 0.0
    assert res.flat_values.abs().max() > 1e-3  # the others are not all null


def test_null_unit_in_a_sequential_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 2)
    )
    with torch.no_grad():
        net[3].weight.view(2, 3, 6)[:, 1] = 0.0
    x = torch.randn(50, 2, 8)
    y = net(x).argmax(1)
    phi = FilterShapley(net, net[1]).attribute(
        x,
        target=y,
        metric=NegativeCrossEntropy(),
        layer_baselines="zero",
        truncation=None,
        max_permutations=20,
        seed=0,
    )
    assert phi.shape == (3,)
    assert phi[1] == 0.0 and phi.abs().sum() > 0
