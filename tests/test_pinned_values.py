"""Users' keyword calls keep their values: ``attribute(x, target=y, ...)`` with
the same seed reproduces, bit for bit, the values pinned here, which the first
keyword interface of the package computed (before ``attribute`` took Captum's
shared arguments in Captum's order).

The pinned numbers were printed by ``python -m tests.test_pinned_values`` run
on that version. Every metric here is a fraction of examples (accuracy, or a
custom metric counting examples), so a value is a mean of differences of such
fractions: the same on any machine unless a model output sits exactly on an
argmax tie.
"""

from typing import Any, Dict, List, Tuple

import pytest
import torch

from captum_neuron_shapley import (
    FilterShapley,
    FixedBound,
    NeuronShapley,
    PermutationSampler,
)
from comparisons.games import mlp_data, TinyCNN
from torch.utils.data import DataLoader, TensorDataset


def _cnn_data() -> Tuple[TinyCNN, torch.Tensor, torch.Tensor]:
    """A randomly initialised TinyCNN (fixed seed, global RNG untouched), 80
    random images and labels that are its own predictions, 20% replaced."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = TinyCNN().eval()
    g = torch.Generator().manual_seed(12)
    x = torch.randn(80, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(80, generator=g) < 0.2
    y[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=g)
    return model, x, y


def _confident_correct(outputs: torch.Tensor, target: torch.Tensor) -> float:
    """A custom metric (plain function, no ``batched``): fraction of examples
    whose label is not the class with the lowest output (top-2 accuracy)."""
    return float((outputs.argmin(-1) != target).double().mean())


def _run(case: str, **overrides: Any) -> Any:
    common: Dict[str, Any] = dict(seed=0, return_result=True)
    common.update(overrides)
    if case == "filter_accuracy_labels":
        model, x, y = _cnn_data()
        fs = FilterShapley(model, [model.conv1, model.conv2])
        return fs.attribute(x, target=y, max_permutations=12, **common)
    if case == "filter_custom_metric":
        model, x, y = _cnn_data()
        fs = FilterShapley(model, model.conv2)
        return fs.attribute(
            x,
            target=y,
            metric=_confident_correct,
            max_permutations=8,
            perturbations_per_eval=3,
            **common,
        )
    if case == "filter_zero_baseline_subset":
        model, x, y = _cnn_data()
        fs = FilterShapley(model, [model.conv1, model.conv2])
        return fs.attribute(
            x,
            target=y,
            layer_baselines="zero",
            sampler=PermutationSampler(batch_size=40),
            max_permutations=12,
            **common,
        )
    if case == "filter_dataloader_topk":
        model, x, y = _cnn_data()
        fs = FilterShapley(model, [model.conv1, model.conv2])
        loader = DataLoader(TensorDataset(x, y), batch_size=16)
        # the first keyword interface's default bound was "normal", now called
        # "fixed"; the default is now "anytime", whose wider early intervals change
        # which units the bandit samples (see docs/confidence_intervals.md)
        return fs.attribute(
            loader,
            top_k=2,
            max_evaluations=150,
            truncation=None,
            stop=FixedBound(),
            **common,
        )
    if case == "neuron_layer_mask_zero":
        model, x, y = mlp_data(120)
        ns = NeuronShapley(model, model.act)
        mask = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
        return ns.attribute(x, target=y, layer_mask=mask, max_permutations=10, **common)
    if case == "neuron_mean_baseline":
        model, x, y = mlp_data(120)
        ns = NeuronShapley(model, model.fc1)
        return ns.attribute(
            x,
            target=y,
            layer_baselines="mean",
            max_permutations=8,
            sampler=PermutationSampler(antithetic=True),
            **common,
        )
    raise KeyError(case)


# flat_values, n_evaluations, convergence_delta at commit 805a72d
PINNED: Dict[str, Tuple[List[float], int, float]] = {
    "filter_accuracy_labels": (
        [
            0.03541666666666667,
            0.012499999999999983,
            0.009374999999999994,
            0.0041666666666666605,
            0.006249999999999996,
            0.04791666666666667,
            0.02395833333333332,
        ],
        21,
        -0.027083333333333348,
    ),
    "filter_custom_metric": (
        [0.013888888888888895, 0.013888888888888878, 0.08472222222222216],
        17,
        0.0,
    ),
    "filter_zero_baseline_subset": (
        [
            0.22916666666666669,
            0.008333333333333321,
            0.05208333333333335,
            0.014583333333333346,
            0.02291666666666667,
            0.08333333333333334,
            0.22916666666666666,
        ],
        # the values are those pinned; a pass now holds the states of several
        # chains on their batches of 40 of 80 examples (two copies' worth), so
        # a chain may evaluate one state past its truncation point: 55, not 54
        55,
        -0.039583333333333526,
    ),
    "filter_dataloader_topk": (
        [
            0.061160714285714304,
            0.01999999999999997,
            0.016249999999999983,
            0.07098214285714285,
            0.004999999999999988,
            0.09583333333333333,
            -0.15625000000000003,
        ],
        150,
        -0.0004761904761904634,
    ),
    "neuron_layer_mask_zero": (
        [
            0.036805555555555564,
            0.05,
            0.2041666666666667,
            0.1513888888888889,
            0.041666666666666685,
        ],
        31,
        -0.05069444444444443,
    ),
    "neuron_mean_baseline": (
        [
            0.019791666666666652,
            0.06770833333333336,
            0.04374999999999998,
            0.02083333333333333,
            0.022916666666666682,
            0.10833333333333332,
            0.025000000000000022,
            0.031250000000000014,
            0.06770833333333336,
            0.03749999999999999,
        ],
        55,
        -0.011458333333333293,
    ),
}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_values_as_before(case: str) -> None:
    values, n_evaluations, delta = PINNED[case]
    res = _run(case)
    assert res.flat_values.tolist() == values
    assert res.n_evaluations == n_evaluations
    assert res.convergence_delta == delta


def test_returned_tensors_as_before() -> None:
    # the tensors (now in the layer's dtype) carry the pinned values
    values = PINNED["filter_accuracy_labels"][0]
    phi1, phi2 = _run("filter_accuracy_labels", return_result=False)
    assert phi1.dtype == phi2.dtype == torch.float32
    assert torch.equal(torch.cat([phi1, phi2]), torch.tensor(values).float())
    values, _, delta = PINNED["neuron_layer_mask_zero"]
    phi, gap = _run(
        "neuron_layer_mask_zero", return_result=False, return_convergence_delta=True
    )
    units = torch.tensor(values).float()
    assert torch.equal(phi, units[torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])])
    assert isinstance(gap, torch.Tensor) and float(gap) == delta


def test_deprecated_batch_size_as_before() -> None:
    values, n_evaluations, _ = PINNED["filter_custom_metric"]
    with pytest.warns(DeprecationWarning, match="internal_batch_size"):
        res = _run("filter_custom_metric", batch_size=16)
    assert res.flat_values.tolist() == values and res.n_evaluations == n_evaluations


if __name__ == "__main__":
    for name in [
        "filter_accuracy_labels",
        "filter_custom_metric",
        "filter_zero_baseline_subset",
        "filter_dataloader_topk",
        "neuron_layer_mask_zero",
        "neuron_mean_baseline",
    ]:
        r = _run(name)
        print(
            f"    {name!r}: ({r.flat_values.tolist()!r}, {r.n_evaluations}, "
            f"{r.convergence_delta!r}),"
        )
