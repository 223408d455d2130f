"""Agreement with Captum's ShapleyValueSampling run on the same game."""

import torch
from captum.attr import ShapleyValueSampling

from captum_neuron_shapley import FilterShapley, NegativeCrossEntropy

from .conftest import exact_shapley, Z_TOL


def mask_forward(game):
    """Captum-facing wrapper: a (B, n_units) 0/1 tensor of present units -> V."""

    def forward(mask):
        return game.value(mask > 0.5).to(torch.float32)

    return forward


def test_agrees_with_captum_shapley_value_sampling(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    metric = NegativeCrossEntropy()
    game = fs.game(x, target=y, metric=metric, perturbations_per_eval=8)
    n_svs = 300
    svs = (
        ShapleyValueSampling(mask_forward(game))
        .attribute(
            torch.ones(1, game.n_units),
            baselines=0.0,
            n_samples=n_svs,
            perturbations_per_eval=8,
        )[0]
        .double()
    )
    ours = fs.attribute(
        x,
        target=y,
        metric=metric,
        truncation=None,
        max_permutations=600,
        seed=5,
        perturbations_per_eval=8,
        return_result=True,
    )
    se = ours.flat_stderr
    # Both average marginals over uniform random permutations, so Captum's
    # standard error is ours scaled by sqrt(n_ours / n_svs).
    se_svs = se * (ours.n_permutations / n_svs) ** 0.5
    diff = (ours.flat_values - svs).abs()
    assert (diff <= Z_TOL * (se**2 + se_svs**2).sqrt()).all(), (ours.flat_values, svs)
    # Both agree with the exact values as well.
    exact = exact_shapley(game)
    assert ((svs - exact).abs() <= Z_TOL * se_svs + 1e-9).all()
