"""Ablating arbitrary units, exporting repaired models, removal curves."""

import pytest
import torch

from captum_neuron_shapley import FilterShapley, NeuronShapley
from captum_neuron_shapley.ablation import ablated, removal_curves, remove_units
from captum_neuron_shapley.repair import export_repaired, repaired_state_dict
from torch import nn

from .conftest import MLP, TinyCNN


def _no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def test_ablated_matches_remove_units_and_cleans_up(tiny, tiny_data):
    (x, y), _ = tiny_data
    res = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    base1 = res.layers[0].baseline[:, 0, 0]  # per-channel means of conv1
    with remove_units(tiny, res, [1, 5]):
        ref = tiny(x)
    spec = {tiny.conv1: [1], "conv2": [1]}
    base = {"conv1": base1, tiny.conv2: res.layers[1].baseline[:, 0, 0]}
    with ablated(tiny, spec, baselines=base) as m:
        out = m(x)
    assert torch.allclose(out, ref) and _no_hooks(tiny)
    with ablated(tiny, {"conv2": [0, 1, 2]}, baselines=0.0):
        zero = tiny.relu2(tiny.conv2(tiny.relu1(tiny.conv1(x))))
    assert bool((zero == 0).all())
    with pytest.raises(RuntimeError, match="boom"):
        with ablated(tiny, {"conv1": [0]}):
            raise RuntimeError("boom")
    assert _no_hooks(tiny)


def test_ablated_bad_input(tiny, tiny_data):
    (x, _), _ = tiny_data
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        with ablated(tiny, {"nope": [0]}):
            pass
    with pytest.raises(ValueError, match="has id 9 but the layer has 4 filters"):
        with ablated(tiny, {"conv1": [9]}):
            tiny(x)
    with pytest.raises(ValueError, match="`kind`"):
        with ablated(tiny, {"conv1": [0]}, kind="channel"):
            pass
    with pytest.raises(ValueError, match="not a submodule"):
        with ablated(tiny, {nn.Linear(2, 2): [0]}):
            pass
    assert _no_hooks(tiny)


def test_ablated_neurons_keep_gradients():
    torch.manual_seed(0)
    mlp = MLP()
    x = torch.randn(4, 5, requires_grad=True)
    with ablated(mlp, {mlp.fc1: [0, 3]}, baselines=0.5, kind="neuron"):
        h = mlp.fc1(x)
        mlp(x).sum().backward()
    assert bool((h[:, [0, 3]] == 0.5).all()) and x.grad is not None
    assert _no_hooks(mlp)


def test_export_repaired_equals_hooks_and_loads(tiny, tiny_data, tmp_path):
    (x, y), (xt, yt) = tiny_data
    res = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    units = [0, 2, 5]
    fixed = export_repaired(tiny, res, units)
    with remove_units(tiny, res, units):
        hooked = tiny(xt)
    assert torch.allclose(fixed(xt), hooked, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    torch.save(repaired_state_dict(tiny, res, units), tmp_path / "r.pt")
    clean = TinyCNN()
    clean.load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    assert torch.allclose(clean.eval()(xt), hooked, atol=1e-6) and _no_hooks(clean)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_export_batchnorm_linear_and_errors(tiny_data):
    (x, y), _ = tiny_data
    torch.manual_seed(0)
    net = BNNet()
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
    net.eval()
    res = FilterShapley(net, net.bn).attribute(
        x, target=y, max_permutations=1, seed=0, return_result=True
    )
    fixed = export_repaired(net, res, [1, 3])
    with remove_units(net, res, [1, 3]):
        assert torch.allclose(fixed(x), net(x), atol=1e-6)
    # a conv without bias can only emit 0
    conv_res = FilterShapley(net, net.conv).attribute(
        x, target=y, max_permutations=1, seed=0, return_result=True
    )
    with pytest.raises(ValueError, match="bias=False"):
        export_repaired(net, conv_res, [0])
    zero = FilterShapley(net, net.conv).attribute(
        x,
        target=y,
        layer_baselines="zero",
        max_permutations=1,
        seed=0,
        return_result=True,
    )
    with remove_units(net, zero, [0]):
        assert torch.allclose(export_repaired(net, zero, [0])(x), net(x), atol=1e-6)
    # linear neurons
    mlp = MLP().eval()
    xm, ym = torch.randn(30, 5), torch.randint(0, 3, (30,))
    lin = NeuronShapley(mlp, mlp.fc1).attribute(
        xm,
        target=ym,
        layer_baselines=0.25,
        max_permutations=1,
        seed=0,
        return_result=True,
    )
    with remove_units(mlp, lin, [2, 4]):
        assert torch.allclose(export_repaired(mlp, lin, [2, 4])(xm), mlp(xm))
    # an activation layer, a spatially varying baseline, a partial channel
    act = NeuronShapley(mlp, mlp.act).attribute(
        xm, target=ym, max_permutations=1, seed=0, return_result=True
    )
    with pytest.raises(ValueError, match="only nn.Conv1d/2d/3d, nn.Linear"):
        export_repaired(mlp, act, [0])
    vary = FilterShapley(net, net.bn).attribute(
        x,
        target=y,
        layer_baselines=torch.randn(4, 6, 6),
        max_permutations=1,
        seed=0,
        return_result=True,
    )
    with pytest.raises(ValueError, match="varies over positions"):
        export_repaired(net, vary, [0])
    part = NeuronShapley(net, net.bn).attribute(
        x,
        target=y,
        layer_mask=torch.arange(4 * 36).view(4, 6, 6) // 18,
        max_permutations=1,
        seed=0,
        return_result=True,
    )
    with pytest.raises(ValueError, match="only partly removed"):
        export_repaired(net, part, [0])
    with pytest.raises(ValueError, match="flat unit indices"):
        export_repaired(net, res, [4])
    assert _no_hooks(net) and _no_hooks(mlp)


def test_removal_curves_with_seeds(tiny, tiny_data):
    (x, y), (xt, yt) = tiny_data
    res = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=3, seed=0, return_result=True
    )
    c = removal_curves(tiny, res, xt, yt, ks=[0, 2, 7], seeds=[0, 1, 2])
    assert c["random"].shape == (3, 3) and c["top"].shape == (3,)
    assert torch.allclose(c["random_mean"], c["random"].mean(0))
    assert c["top"][0] == c["bottom"][0] == c["random"][0, 0]
    assert c["top"][2] == c["bottom"][2]  # all units removed either way
    assert c["top"][1] <= c["bottom"][1]
    with pytest.raises(ValueError, match="`ks`"):
        removal_curves(tiny, res, xt, yt, ks=[8])
