"""Nothing is left behind in the model, and bad input gets a clear error."""

import pytest
import torch

from captum_neuron_shapley import (
    AnytimeBound,
    FilterShapley,
    NeuronShapley,
    PermutationSampler,
    TopKSeparated,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .conftest import MLP


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
    )


def _no_hooks(model):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()
    )


def _assert_unchanged(model, snap):
    state, grads, modes = snap
    assert _no_hooks(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert {n: m.training for n, m in model.named_modules()} == modes


def _mixed_state(model):
    model.train()
    model.conv2.eval()  # mixed training flags must come back as they were
    model.fc.weight.requires_grad_(False)
    return _snapshot(model)


def test_model_unchanged_after_success(tiny, tiny_data):
    (x, y), _ = tiny_data
    snap = _mixed_state(tiny)
    FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=3, seed=0
    )
    _assert_unchanged(tiny, snap)


def test_model_unchanged_after_exception_in_metric(tiny, tiny_data):
    (x, y), _ = tiny_data
    snap = _mixed_state(tiny)
    calls = {"n": 0}

    def metric(outputs, target):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")
        return float((outputs.argmax(1) == target).float().mean())

    with pytest.raises(RuntimeError, match="boom"):
        FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
            x, target=y, metric=metric, max_permutations=3, seed=0
        )
    _assert_unchanged(tiny, snap)


def test_dataloader_inputs_match_tensors(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, tiny.conv1)
    a = fs.attribute(x, target=y, max_permutations=5, seed=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    b = fs.attribute(loader, max_permutations=5, seed=0)
    assert torch.equal(a, b)


# -- bad input -----------------------------------------------------------------


class DictOut(nn.Module):
    def forward(self, x):
        return {"a": x, "b": x}


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.split = DictOut()

    def forward(self, x):
        return self.split(self.fc(x))["a"]


@pytest.fixture
def mlp_data():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(40, 5)
    return model, x, model(x).argmax(1)


def test_layer_not_in_model(mlp_data):
    model, _, _ = mlp_data
    with pytest.raises(ValueError, match="`layer`.*not a submodule"):
        NeuronShapley(model, nn.Linear(5, 6))
    assert NeuronShapley(model, "fc1").layer is model.fc1  # names are accepted
    with pytest.raises(ValueError, match="`layer` must be an nn.Module, a layer name"):
        NeuronShapley(model, 3)


def test_layer_output_not_a_tensor():
    # a Tensor or a tuple of Tensors can be ablated (see test_captum_contract)
    net = DictNet()
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="`layer` 'split' returned dict"):
        NeuronShapley(net, net.split).attribute(x, target=torch.zeros(10).long())
    assert _no_hooks(net)


def test_filter_shapley_needs_channels(mlp_data):
    model, x, y = mlp_data
    with pytest.raises(ValueError, match="no channel dimension.*NeuronShapley"):
        FilterShapley(model, model.fc1).attribute(x, target=y)
    assert _no_hooks(model)


def test_top_k_too_large(mlp_data):
    model, x, y = mlp_data
    with pytest.raises(
        ValueError, match="`top_k` must be smaller than the number of units \\(6\\)"
    ):
        NeuronShapley(model, model.fc1).attribute(x, target=y, top_k=6)
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        NeuronShapley(model, model.fc1).attribute(x, target=y, top_k=0)


@pytest.mark.parametrize(
    "bad", [lambda o, t: float("nan"), lambda o, t: "high", lambda o, t: torch.ones(3)]
)
def test_metric_must_return_finite_scalar(mlp_data, bad):
    model, x, y = mlp_data
    with pytest.raises(ValueError, match="`metric`"):
        NeuronShapley(model, model.fc1).attribute(
            x, target=y, metric=bad, max_permutations=2
        )
    assert _no_hooks(model)


def test_empty_inputs_and_length_mismatch(mlp_data):
    model, x, y = mlp_data
    ns = NeuronShapley(model, model.fc1)
    with pytest.raises(ValueError, match="`inputs` is empty"):
        ns.attribute(x[:0], target=y[:0])
    with pytest.raises(ValueError, match="`inputs` is empty"):
        ns.attribute(DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4))
    with pytest.raises(ValueError, match="`target` has 39 entries but `inputs` has 40"):
        ns.attribute(x, target=y[:-1])
    with pytest.raises(ValueError, match="`target` is required"):
        ns.attribute(x)


def test_bad_strata(mlp_data):
    model, x, y = mlp_data
    ns = NeuronShapley(model, model.fc1)  # 6 units
    with pytest.raises(ValueError, match="`strata` must be a positive integer"):
        ns.attribute(x, target=y, sampler=PermutationSampler(strata=0))
    with pytest.raises(ValueError, match="`strata` must be at most the number"):
        ns.attribute(x, target=y, sampler=PermutationSampler(strata=7))
    with pytest.raises(ValueError, match="`antithetic` and `strata`"):
        ns.attribute(x, target=y, sampler=PermutationSampler(strata=2, antithetic=True))
    assert _no_hooks(model)


@pytest.mark.parametrize("name", ["max_evaluations", "max_permutations", "max_time"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_budgets(mlp_data, name, value):
    model, x, y = mlp_data
    with pytest.raises(ValueError, match=f"`{name}` must be positive"):
        NeuronShapley(model, model.fc1).attribute(x, target=y, **{name: value})


def test_layer_baselines_must_broadcast(mlp_data):
    model, x, y = mlp_data
    ns = NeuronShapley(model, model.fc1)
    with pytest.raises(
        ValueError, match="`layer_baselines` of shape \\(4,\\) does not broadcast"
    ):
        ns.attribute(x, target=y, layer_baselines=torch.zeros(4))
    with pytest.raises(
        ValueError, match="`layer_baselines` has 2 entries but there are 1"
    ):
        ns.attribute(x, target=y, layer_baselines=(0.0, 1.0))
    with pytest.raises(ValueError, match="`layer_baselines` must be"):
        ns.attribute(x, target=y, layer_baselines="median")
    # a correct one works: (1, 6) with the leading batch dimension of 1
    ns.attribute(x, target=y, layer_baselines=torch.zeros(1, 6), max_permutations=2)
    assert _no_hooks(model)


def test_metric_already_below_truncation(mlp_data):
    model, x, y = mlp_data
    ns = NeuronShapley(model, model.fc1)
    with pytest.raises(ValueError, match="already at or below `truncation`"):
        ns.attribute(x, target=y, truncation=1.0)
    assert _no_hooks(model)


def test_auto_truncation_falls_back_when_removal_does_not_hurt(mlp_data):
    model, x, y = mlp_data
    y_wrong = (y + 1) % 3  # the model is always wrong: removing units cannot hurt
    res = NeuronShapley(model, model.fc1).attribute(
        x, target=y_wrong, max_permutations=3, seed=0, return_result=True
    )
    assert res.full_value == 0.0 and res.truncation is None


def test_other_bad_arguments(mlp_data):
    model, x, y = mlp_data
    ns = NeuronShapley(model, model.fc1)
    with pytest.raises(ValueError, match="`stop` must be a stopping rule"):
        ns.attribute(x, target=y, stop="loose")
    with pytest.raises(ValueError, match="`delta`"):
        ns.attribute(x, target=y, stop=AnytimeBound(delta=1.5))
    with pytest.raises(ValueError, match="`sampler` must be 'chains', 'msr' or"):
        ns.attribute(x, target=y, sampler="gibbs")
    with pytest.raises(ValueError, match="`refine` must be None, 'greedy' or"):
        ns.attribute(x, target=y, top_k=2, refine="beam")
    with pytest.raises(ValueError, match=r"`top_k` \(3\) differs from the k"):
        ns.attribute(x, target=y, top_k=3, stop=TopKSeparated(2))
    with pytest.raises(ValueError, match="`epsilon` applies to the rule built"):
        ns.attribute(x, target=y, epsilon=0.1, stop=TopKSeparated(2))
    with pytest.raises(TypeError, match="combine only with other rules"):
        TopKSeparated(2) | 5  # type: ignore[operator]
    with pytest.raises(ValueError, match="`strata` must be at most the number"):
        ns.attribute(x, target=y, sampler=PermutationSampler(strata=7))
    with pytest.raises(ValueError, match="`antithetic` and `strata`"):
        PermutationSampler(strata=2, antithetic=True)
    with pytest.raises(ValueError, match="`perturbations_per_eval`"):
        ns.attribute(x, target=y, perturbations_per_eval=0)
    with pytest.raises(ValueError, match="`truncation`"):
        ns.attribute(x, target=y, truncation="half")
    with pytest.raises(ValueError, match="`epsilon`"):
        ns.attribute(x, target=y, epsilon=-1)
    with pytest.raises(ValueError, match="`layer_mask` of shape"):
        ns.attribute(x, target=y, layer_mask=torch.zeros(4, dtype=torch.long))
    net = nn.Sequential(nn.Conv1d(1, 2, 1), nn.Flatten())
    xc = torch.randn(6, 1, 3)
    with pytest.raises(
        ValueError, match="`layer_mask` is not supported by FilterShapley"
    ):
        FilterShapley(net, net[0]).attribute(
            xc, target=torch.zeros(6).long(), layer_mask=torch.zeros(2, 1).long()
        )
