"""What chains on random batches estimate (comparisons/bench/targets.py): the
exact truncated target on a batch agrees with enumeration on a game built on
that batch's examples, untruncated targets are the whole set's Shapley values,
and the chain-based estimate of the batched truncated target agrees with the
exact one."""

import pytest
import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.sampler import truncation_threshold
from comparisons.bench.targets import (
    _truncated_phi,
    chain_batch_values,
    exact_batch_values,
    per_example_values,
)

from .conftest import Z_TOL


@pytest.fixture(scope="module")
def game_parts(trained_tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(trained_tiny, [trained_tiny.conv1, trained_tiny.conv2])
    game = fs.game(x, target=y, layer_baselines="zero")
    thr = truncation_threshold("auto", game.full_value(), game.empty_value())
    return fs, x, y, game, thr


def test_per_example_values_average_to_the_game(game_parts):
    _, _, _, game, _ = game_parts
    pe = per_example_values(game)
    masks = torch.arange(1 << game.n_units)
    keep = ((masks.unsqueeze(1) >> torch.arange(game.n_units)) & 1).bool()
    assert torch.allclose(pe.mean(1), game.value(keep), atol=1e-12)


def test_truncated_value_of_one_batch_matches_enumeration(game_parts):
    # the vectorized recursion on a batch's V equals exact_values on a game
    # built from that batch's examples alone (zero removal: no baseline that
    # depends on the examples)
    fs, x, y, game, thr = game_parts
    pe = per_example_values(game)
    for seed in range(3):
        idx = torch.randperm(200, generator=torch.Generator().manual_seed(seed))[:64]
        sub = fs.game(x[idx], target=y[idx], layer_baselines="zero")
        want = exact_values(sub, thr)
        got = _truncated_phi(pe[:, idx].mean(1, keepdim=True), thr, game.n_units)
        assert torch.allclose(got[:, 0], want, atol=1e-12)


def test_untruncated_target_is_the_shapley_value_of_the_whole_set(game_parts):
    _, _, _, game, _ = game_parts
    out = exact_batch_values(game, None, 64)
    assert torch.equal(out["values"], exact_values(game))
    assert out["batches"] == 0 and float(out["se"].max()) == 0.0


def test_chain_estimate_of_the_batched_target_agrees_with_exact(game_parts):
    _, _, _, game, thr = game_parts
    exact = exact_batch_values(game, thr, 32, n_batches=20000)
    shapley = exact_values(game)
    est = chain_batch_values(
        game, shapley, torch.zeros_like(shapley), thr, 32, 600, seed=3
    )
    se = (est["se"].pow(2) + exact["se"].pow(2)).sqrt()
    ok = se > 0
    assert bool(ok.any())
    assert bool(((est["values"] - exact["values"]).abs()[ok] <= Z_TOL * se[ok]).all())
    # units truncation never touches are exactly the Shapley values
    assert torch.allclose(est["values"][~ok], shapley[~ok])
