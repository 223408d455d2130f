"""Replaying the unablated prefix of the model gives the same game."""

import pytest
import torch

from captum_neuron_shapley import FilterShapley, NeuronShapley
from captum_neuron_shapley.prefix import trace_prefix
from torch import nn
from torchvision.models import resnet18


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
    uncached = FilterShapley(tiny, tiny.conv2, cache_activations=False)
    b = uncached.attribute(x, target=y, max_permutations=5, seed=0)
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


def test_in_place_replacement_spares_aliased_outputs():
    # Removal writes into a layer's output only when nothing else can see it.
    # Here one ablated layer returns its input (read again by the skip
    # connection) and another returns its own buffer: both must be left intact.
    class Stored(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(1.0, 4.0).view(1, 3))

        def forward(self, x):
            return self.table.expand(x.shape[0], 3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.same = nn.Identity()
            self.stored = Stored()

        def forward(self, x):
            h = self.lin(x)
            return self.same(h) + h + self.stored(x)

    torch.manual_seed(0)
    net, x = Net(), torch.randn(5, 3)
    metric = lambda out, t: float(out.sum())  # noqa: E731
    for layer in (net.same, net.stored):
        game = NeuronShapley(net, layer).game(
            x, target=None, metric=metric, layer_baselines=0.0
        )
        keep = torch.tensor([[True, False, True], [False, False, True]])
        with torch.no_grad():
            h, table = net.lin(x), net.stored.table.clone()
            if layer is net.same:
                want = [float((h * k + h + table).sum()) for k in keep.float()]
            else:
                want = [float((h + h + table * k).sum()) for k in keep.float()]
        got = game.value(keep)
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-4)
        assert torch.equal(net.stored.table, table)


def test_fresh_outputs_are_overwritten_in_place(tiny, tiny_data, monkeypatch):
    # the in-place path is taken for ordinary conv outputs and gives the same
    # outputs as the path that allocates a new tensor
    from captum_neuron_shapley import removal

    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    game = fs.game(x, target=y, perturbations_per_eval=2)  # 2 per pass: no folding
    keep = torch.rand(6, game.n_units, generator=torch.Generator().manual_seed(0))
    keep = keep > 0.5
    seen = []
    original = removal._owns

    def spy(*args):
        seen.append(original(*args))
        return seen[-1]

    monkeypatch.setattr(removal, "_owns", spy)
    fast = game.outputs(keep)
    assert len(seen) == 6 and all(seen)  # 3 passes, 2 layers
    monkeypatch.setattr(removal, "_owns", lambda *args: False)
    assert torch.equal(fast, game.outputs(keep))


def test_a_user_hook_keeps_the_intact_output(tiny, tiny_data):
    # a forward hook registered before ours holds the conv's output tensor: it
    # must still see the intact activations after the coalition was evaluated
    (x, y), _ = tiny_data
    game = FilterShapley(tiny, tiny.conv1).game(x, target=y, layer_baselines=0.0)
    kept = []
    handle = tiny.conv1.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        keep = torch.tensor([[False, True, True, True]])
        game.outputs(keep)
    finally:
        handle.remove()
    with torch.no_grad():
        intact = tiny.conv1(x)
    assert torch.equal(kept[0], intact)  # channel 0 not zeroed in the user's copy


def _no_instance_forward(model):
    return all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("baselines", ["mean", "zero"])
def test_folded_removal_equals_the_hooks(tiny, tiny_data, monkeypatch, baselines):
    # one coalition per pass: removal folded into the conv weights gives exactly
    # the outputs of the hooks, and the modules' forward is restored
    from captum_neuron_shapley import removal

    (x, y), _ = tiny_data
    game = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).game(
        x, target=y, layer_baselines=baselines
    )
    keep = torch.rand(5, game.n_units, generator=torch.Generator().manual_seed(1))
    keep = keep > 0.5
    calls = []
    original = removal._fold

    def spy(*args):
        calls.append(original(*args))
        return calls[-1]

    monkeypatch.setattr(removal, "_fold", spy)
    folded = game.outputs(keep)
    assert len(calls) > 0 and all(c is not None for c in calls)
    game._fold = False
    assert torch.equal(folded, game.outputs(keep))
    assert _no_instance_forward(tiny)


def test_folded_linear_units_equal_the_hooks():
    from .conftest import MLP

    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(40, 5)
    ns = NeuronShapley(model, model.fc1)
    mask = torch.tensor([[0, 0, 1, 2, 3, 3]])
    game = ns.game(x, target=model(x).argmax(1), layer_mask=mask, layer_baselines=0.3)
    keep = torch.tensor([[True, False, True, False], [False, True, True, True]])
    folded = game.outputs(keep)
    game._fold = False
    assert torch.equal(folded, game.outputs(keep))
    assert _no_instance_forward(model)


def test_no_folding_when_it_would_not_be_the_same(tiny, tiny_data):
    from captum_neuron_shapley.removal import _fold

    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, tiny.conv1)
    keep = torch.tensor([[False, True, True, True]])
    units = fs.game(x, target=y).units[0]
    assert _fold(units, keep) is not None
    # a baseline that varies within a channel cannot be a bias
    varying = torch.arange(4 * 36, dtype=torch.float32).view(4, 6, 6)
    units_v = fs.game(x, target=y, layer_baselines=varying).units[0]
    assert _fold(units_v, keep) is None
    # an observer of the output sees what the hooks give it
    handle = tiny.conv1.register_forward_hook(lambda m, i, o: None)
    try:
        assert _fold(units, keep) is None
    finally:
        handle.remove()
    # and the instance's forward is restored after an exception
    game = fs.game(x, target=y)
    with pytest.raises(RuntimeError, match="boom"):
        from captum_neuron_shapley.removal import ablate

        with ablate(game.units, [keep], fold=True):
            assert "forward" in tiny.conv1.__dict__
            raise RuntimeError("boom")
    assert _no_instance_forward(tiny)
