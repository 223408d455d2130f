"""Evaluation under the user's autocast context (mixed precision) works."""

import torch

from captum_neuron_shapley import FilterShapley


def test_under_cpu_autocast_bfloat16(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    game32 = fs.game(x, target=y, perturbations_per_eval=4)
    keep = torch.rand(8, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        game16 = fs.game(x, target=y, perturbations_per_eval=4)
        out16 = game16.outputs(keep)
        phi1, phi2 = fs.attribute(x, target=y, max_permutations=3, seed=0)
    assert out16.dtype == torch.bfloat16
    assert torch.allclose(out16.float(), game32.outputs(keep), atol=0.1)
    # accuracy of each coalition agrees up to a few flipped predictions
    assert (game32.value(keep) - game16.score(out16.float(), None)).abs().max() < 0.05
    assert phi1.shape == (4,) and phi2.shape == (3,)
    assert torch.isfinite(phi1).all() and torch.isfinite(phi2).all()
