r"""Baselines of comparisons/ against values worked out by hand on tiny models."""

import pytest
import torch
from captum.attr import LayerConductance

from captum_neuron_shapley import FilterShapley, NeuronShapley
from comparisons.cost import count_cost
from comparisons.methods import baselines as B
from torch import nn


class LinearConvNet(nn.Module):
    r"""1x1 conv (3 channels) -> 1x1 conv (2 channels) -> linear head, on 2x2
    inputs: linear end to end, so every gradient is a product of weights."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(1, 3, 1)
        self.conv2 = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(2 * 2 * 2, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.fc(self.conv2(self.conv1(x)).flatten(1))


@pytest.fixture
def lin():
    return LinearConvNet().eval()


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(1)
    return torch.randn(7, 1, 2, 2, generator=g), torch.tensor([0, 1, 2, 3, 0, 1, 2])


def _hand_influence(net: LinearConvNet, c: int) -> torch.Tensor:
    """dq/dz summed over the 4 positions: conv2 channel k: sum_p W[c, 4k + p];
    conv1 channel j: sum_k W2[k, j] * sum_p W[c, 4k + p]."""
    w = net.fc.weight.detach().double()[c].view(2, 4).sum(1)  # (2,)
    w2 = net.conv2.weight.detach().double().view(2, 3)
    return torch.cat([w2.t() @ w, w])


@pytest.mark.parametrize("distribution", ["data", "path"])
def test_influence_of_linear_net_is_its_weights(lin, xy, distribution):
    x, y = xy
    layers = [lin.conv1, lin.conv2]
    chi = B.distributional_influence(lin, layers, x, 2, distribution=distribution)
    assert chi.shape == (5,)  # conv1's 3 channels, then conv2's 2
    torch.testing.assert_close(chi, _hand_influence(lin, 2), rtol=1e-5, atol=1e-5)
    # per-example labels: the average of each example's class
    chi_y = B.distributional_influence(lin, layers, x, y, distribution=distribution)
    want = torch.stack([_hand_influence(lin, int(c)) for c in y]).mean(0)
    torch.testing.assert_close(chi_y, want, rtol=1e-5, atol=1e-5)
    # contrast a - b
    chi_ab = B.distributional_influence(
        lin, layers, x, contrast=(1, 3), distribution=distribution
    )
    want = _hand_influence(lin, 1) - _hand_influence(lin, 3)
    torch.testing.assert_close(chi_ab, want, rtol=1e-5, atol=1e-5)


def test_influence_batches_and_errors(lin, xy):
    x, y = xy
    a = B.distributional_influence(lin, lin.conv2, x, y)
    b = B.distributional_influence(lin, lin.conv2, x, y, batch_size=3)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="distribution"):
        B.distributional_influence(lin, lin.conv2, x, y, distribution="nope")
    with pytest.raises(ValueError, match="either"):
        B.distributional_influence(lin, lin.conv2, x, y, contrast=(0, 1))


def test_gradient_x_activation_by_hand(lin, xy):
    x, y = xy
    z2 = lin.conv2(lin.conv1(x)).detach().double()  # (7, 2, 2, 2)
    w = lin.fc.weight.detach().double()
    want = torch.stack(
        [(z2[i] * w[int(y[i])].view(2, 2, 2)).flatten(1).sum(1) for i in range(7)]
    ).mean(0)
    got = B.gradient_x_activation(lin, [lin.conv2], x, y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_activation_magnitude_by_hand(lin, xy):
    x, _ = xy
    w = lin.conv1.weight.detach().double().view(3)
    b = lin.conv1.bias.detach().double()
    xd = x.double().view(7, 4)
    want = (xd[:, None, :] * w[None, :, None] + b[None, :, None]).abs().mean((0, 2))
    torch.testing.assert_close(B.activation_magnitude(lin, lin.conv1, x), want)


def test_conductance_completeness(tiny, tiny_data):
    (x, y), _ = tiny_data
    x, y = x[:10], y[:10]
    cond = B.layer_conductance(tiny, [tiny.conv1, tiny.conv2], x, y, n_steps=100)
    assert cond.shape == (7,)
    with torch.no_grad():
        fx = tiny(x).gather(1, y[:, None]).squeeze(1)
        f0 = tiny(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    gap = float((fx - f0).double().mean())
    # each layer's conductances add up to F(x) - F(baseline), averaged over x
    assert float(cond[:4].sum()) == pytest.approx(gap, rel=1e-2, abs=1e-3)
    assert float(cond[4:].sum()) == pytest.approx(gap, rel=1e-2, abs=1e-3)


def test_conductance_of_linear_net_equals_grad_x_act(lin, xy):
    # linear network, zero baseline: conductance is gradient x (z(x) - z(0)) along a
    # straight line, i.e. grad x act minus grad x the layer's output at zero input
    x, y = xy
    cond = B.layer_conductance(lin, lin.conv2, x, y, n_steps=8)
    z0 = lin.conv2(lin.conv1(torch.zeros(1, 1, 2, 2))).detach().double()[0]
    w = lin.fc.weight.detach().double()
    z2 = lin.conv2(lin.conv1(x)).detach().double()
    want = torch.stack(
        [
            ((z2[i] - z0) * w[int(y[i])].view(2, 2, 2)).flatten(1).sum(1)
            for i in range(7)
        ]
    ).mean(0)
    torch.testing.assert_close(cond, want, rtol=1e-4, atol=1e-5)


def test_neuron_conductance_map_adds_up_to_layer_conductance(tiny, tiny_data):
    (x, y), _ = tiny_data
    x, y = x[:3], y[:3]
    pic = B.neuron_conductance_map(tiny, tiny.conv2, 1, x, y, n_steps=32)
    assert pic.shape == x.shape
    lc = LayerConductance(tiny, tiny.conv2).attribute(
        x, target=y, n_steps=32, method="riemann_trapezoid"
    )
    want = lc[:, 1].flatten(1).sum(1).double()
    torch.testing.assert_close(pic.flatten(1).sum(1), want, rtol=1e-3, atol=1e-4)


class Additive(nn.Module):
    r"""x (N, 1) -> hidden = [1, 2, 3] * x -> output = sum(hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, 3, bias=False)
        self.head = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
            self.head.weight.fill_(1.0)

    def forward(self, x):
        return self.head(self.hidden(x))


def test_leave_one_out_by_hand():
    net = Additive().eval()
    x = torch.tensor([[1.0], [2.0], [4.0]])  # mean 7/3
    game = NeuronShapley(net, net.hidden).game(
        x, target=None, metric=lambda out, t: float(out.mean()), layer_baselines="zero"
    )
    before = game.n_evaluations
    loo = B.leave_one_out(game)
    # removing unit j (zeroing it) lowers the mean output by w_j * mean(x)
    torch.testing.assert_close(
        loo, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) * 7 / 3
    )
    assert game.n_evaluations - before == 3  # one evaluation per unit


def test_leave_one_out_matches_filter_shapley_order(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    game = fs.game(x[:40], target=y[:40])
    loo = B.leave_one_out(game)
    assert loo.shape == (7,)
    keep = torch.ones(1, 7, dtype=torch.bool)
    keep[0, 5] = False  # conv2's channel 1 is flat unit 4 + 1
    assert float(loo[5]) == pytest.approx(
        game.full_value() - float(game.value(keep)[0])
    )


def test_random_scores_seeded():
    a, b = B.random_scores(50, seed=3), B.random_scores(50, seed=3)
    assert torch.equal(a, b) and a.shape == (50,)
    assert not torch.equal(a, B.random_scores(50, seed=4))


def test_count_cost_counts_passes(lin, xy):
    x, y = xy
    with count_cost(lin) as c:
        with torch.no_grad():
            lin(x)
        lin(x.requires_grad_()).sum().backward()
    assert (c.forward_calls, c.forward_examples) == (2, 14)
    assert (c.backward_calls, c.backward_examples) == (1, 7)
    with count_cost(lin) as c:
        B.distributional_influence(lin, [lin.conv1, lin.conv2], x.detach(), y)
    assert (c.forward_calls, c.backward_calls) == (1, 1)
    assert c.wall_s > 0
