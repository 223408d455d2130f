"""Top-k recovery on a game with closed-form values; scale smoke tests."""

import torch

from captum_neuron_shapley import (
    AnytimeBound,
    FilterShapley,
    FixedBound,
    NeuronShapley,
    PaperBound,
    PermutationSampler,
    StrictBound,
)
from torch import nn


class SumHead(nn.Module):
    """z = W x (the players), output = sum of z: V(S) = mean over examples of
    sum_{j in S} z_j, so phi_j = mean_x z_j(x) exactly (an additive game)."""

    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(w)

    def forward(self, x):
        return self.lin(x).sum(1, keepdim=True)


def mean_output(outputs, target):
    return float(outputs.mean())


def test_top_k_recovered_with_closed_form_values():
    g = torch.Generator().manual_seed(0)
    n_units = 12
    x = 1.0 + torch.randn(400, 1, generator=g)
    w = torch.linspace(0.0, 1.1, n_units).view(n_units, 1)
    model = SumHead(w).eval()
    phi = (x @ w.T).mean(0).double()  # closed form
    true_top = set(torch.topk(phi, 3).indices.tolist())
    ns = NeuronShapley(model, model.lin)
    # Random subsets of 40 examples make each chain's marginals noisy.
    res = ns.attribute(
        x,
        metric=mean_output,
        top_k=3,
        epsilon=0.0,
        truncation=None,
        sampler=PermutationSampler(batch_size=40),
        stop=AnytimeBound(),
        seed=0,
        return_result=True,
        max_permutations=5000,
    )
    assert res.converged
    assert {i for _, i, _ in res.top_units(3)} == true_top
    # The bandit spends its samples at the boundary: the clear losers stop early.
    assert res.counts[:4].max() < res.counts[8:10].min()
    # and every interval holds the true value
    lo, hi = res.lower, res.upper
    assert ((phi >= lo) & (phi <= hi)).all()


def _all_convs(model, skip=()):
    return [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not any(n.startswith(s) for s in skip)
    ]


def test_resnet18_all_4800_filters():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    convs = _all_convs(model)
    x = torch.randn(2, 3, 64, 64)
    res = FilterShapley(model, convs).attribute(
        x,
        target=torch.tensor([0, 1]),
        max_evaluations=6,
        perturbations_per_eval=3,
        truncation=None,
        seed=0,
        return_result=True,
    )
    assert res.n_units == 4800 and len(res.values) == len(convs) == 20
    assert res.n_evaluations == 6  # the budget holds inside a chain too
    assert all(not m._forward_hooks for m in model.modules())


def test_inception_v3_all_17216_filters():
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    convs = _all_convs(model, skip=("AuxLogits",))
    x = torch.randn(2, 3, 80, 80)
    res = FilterShapley(model, convs).attribute(
        x,
        target=torch.tensor([0, 1]),
        max_evaluations=3,
        perturbations_per_eval=2,
        truncation=None,
        seed=0,
        return_result=True,
    )
    assert res.n_units == 17216  # the paper's count
    # one evaluation for V(none), two chain states; the budget cut the first chain
    # short, and a partial chain is dropped (it would only sample large coalitions)
    assert res.n_evaluations == 3 and int(res.counts.sum()) == 0
    assert res.n_permutations == 0 and not res.converged
    assert all(not m._forward_hooks for m in model.modules())


def test_every_bound_mode_finds_the_top_units():
    g = torch.Generator().manual_seed(1)
    x = 1.0 + torch.randn(300, 1, generator=g)
    w = torch.tensor([[0.1], [0.9], [0.2], [0.05], [1.0], [0.15]])
    model = SumHead(w).eval()
    ns = NeuronShapley(model, model.lin)
    for bound in (StrictBound(), PaperBound(), FixedBound(), AnytimeBound()):
        res = ns.attribute(
            x,
            metric=mean_output,
            top_k=2,
            epsilon=0.02,
            truncation=None,
            sampler=PermutationSampler(batch_size=30),
            stop=bound,
            seed=0,
            return_result=True,
            max_permutations=3000,
        )
        assert res.converged, bound
        assert {i for _, i, _ in res.top_units(2)} == {1, 4}, bound
