"""Replaying the unablated prefix of the model gives the same game."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.prefix import trace_prefix


def test_prefix_found_and_values_identical():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=5).eval()
    layers = [model.layer3[1].conv1, model.layer4[0].conv2]
    x = torch.randn(6, 3, 32, 32)
    y = torch.arange(6) % 5
    skipped = trace_prefix(model, layers, (x[:1],))
    names = {m: n for n, m in model.named_modules()}
    # everything up to layer3[0] runs before the first ablated conv; the stem's
    # in-place ReLU and the residual blocks must still come out right
    assert [names[m] for m in skipped] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3.0",
    ]
    fs = FilterShapley(model, layers)
    keep = torch.rand(5, 256 + 512, generator=torch.Generator().manual_seed(1)) > 0.3
    with_cache = fs.game(x, target=y, cache_activations=True, perturbations_per_eval=2)
    without = fs.game(x, target=y, cache_activations=False, perturbations_per_eval=2)
    assert len(with_cache.prefix_modules) == 7 and not without.prefix_modules
    out_a, out_b = with_cache.outputs(keep), without.outputs(keep)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    assert not torch.allclose(out_a[0], out_a[1])  # coalitions really differ
    # nothing patched is left behind
    assert all("forward" not in vars(m) for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_nothing_skipped_when_the_first_layer_is_ablated(tiny, tiny_data):
    (x, y), _ = tiny_data
    assert trace_prefix(tiny, [tiny.conv1], (x[:1],)) == []
    skipped = trace_prefix(tiny, [tiny.conv2], (x[:1],))
    assert skipped == [tiny.conv1, tiny.relu1]
    fs = FilterShapley(tiny, tiny.conv2)
    a = fs.attribute(x, target=y, max_permutations=5, seed=0)
    b = fs.attribute(x, target=y, max_permutations=5, seed=0, cache_activations=False)
    assert torch.allclose(a, b)


def test_module_called_twice_is_not_replayed():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(4, 4)
            self.mid = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            h = self.mid(self.shared(x))
            return self.head(self.shared(h))

    net = Twice().eval()
    assert trace_prefix(net, [net.mid], (torch.randn(1, 4),)) == []


def test_a_forward_set_on_the_instance_survives(tiny, tiny_data):
    (x, y), _ = tiny_data
    calls = []
    original = tiny.conv1.forward

    def wrapped(inp):
        calls.append(1)
        return original(inp)

    tiny.conv1.forward = wrapped  # as accelerate-style wrappers do
    FilterShapley(tiny, tiny.conv2).attribute(x, target=y, max_permutations=2, seed=0)
    assert tiny.conv1.forward is wrapped
    n = len(calls)
    tiny(x[:2])
    assert len(calls) == n + 1
    del tiny.conv1.forward


def test_a_layer_called_twice_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(x))).mean((2, 3))

    net = Shared()
    x = torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError, match="called more than once per forward"):
        FilterShapley(net, net.relu).attribute(x, target=torch.zeros(4).long())
    assert not net.relu._forward_hooks
